"""What the CLI prints, run as a user runs it against a real server: values are never cut, whatever
the terminal's width; `--json` is one document with the API's field names, errors too, with the
exit codes of the text output; every option has a help text (with its variable and default); and
the error messages say what is wrong in the words of the command line.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from cryptography.hazmat.primitives import serialization

from s3kms.cli import main

from kmsserver import KmsThread, free_port, signed_admin, thread_settings
from kmsserver import run_cli as s3kms

ADMIN = "/rustfs/admin/v3/kms"
ARN = "arn:aws:kms:us-east-1:000000000000:key/"
LONG = "out-" + "long-key-name-" * 5 + "end"  # 77 characters: wider than a narrow terminal
SIGNER = "out-signer-" + "s" * 50
HMAC = "out-hmac"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": "*"}],
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("cli-out") / "data")).start()
    for args in (
        ("key", "create", LONG),
        ("key", "create", SIGNER, "--spec", "ECC_NIST_P256", "--usage", "SIGN_VERIFY"),
        ("key", "create", HMAC, "--spec", "HMAC_256", "--usage", "GENERATE_VERIFY_MAC"),
    ):
        assert s3kms(server, *args).returncode == 0
    yield server
    server.stop()


def cli(
    srv: KmsThread,
    *args: str,
    columns: int = 200,
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return s3kms(srv, *args, stdin=stdin, env={"COLUMNS": str(columns), **(env or {})})


def document(result: subprocess.CompletedProcess[bytes], code: int = 0) -> Any:
    """The one JSON document on stdout (json.loads refuses anything after it); nothing on stderr."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stderr == b"", result.stderr
    return json.loads(result.stdout)


def error_document(result: subprocess.CompletedProcess[bytes], code: int) -> Any:
    """A failure's one JSON document, on stderr; nothing on stdout."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == b"", result.stdout
    failure = json.loads(result.stderr)
    assert set(failure) == {"error"} and set(failure["error"]) == {"code", "message"}
    return failure


def api(srv: KmsThread, method: str, route: str) -> Any:
    response = signed_admin(srv.url, method, f"{ADMIN}/{route}")
    assert response.status_code == 200, response.text
    return response.json()


def b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


# -- --json: one document, the API's field names (a failure's on stderr) ---------------------------


def test_key_commands_print_the_admin_apis_documents(srv: KmsThread) -> None:
    name = "out-json-key"
    created = document(cli(srv, "key", "create", name, "--json"))
    assert set(created) == {"keyId", "status", "createdAt"} and created["keyId"] == name
    assert document(cli(srv, "key", "list", "--pattern", "out-json-*", "--json")) == api(
        srv, "GET", "key/list?pattern=out-json-%2A"
    )
    status = document(cli(srv, "key", "status", name, "--json"))
    assert status == api(srv, "GET", f"key/status?keyName={name}")
    assert set(status) == {"keyId", "status", "createdAt", "algorithm", "currentVersion"}

    for command, state in (("disable", "disabled"), ("enable", "enabled")):
        changed = document(cli(srv, "key", command, name, "--json"))
        assert changed == {"keyId": name, "status": state, "message": changed["message"]}
    rotated = document(cli(srv, "key", "rotate", name, "--json"))
    assert set(rotated) == {"keyId", "status", "currentVersion", "message"}
    assert rotated["currentVersion"] == 2

    deleted = document(cli(srv, "key", "delete", name, "--days", "7", "--json"))
    assert set(deleted) == {"keyId", "status", "deletionDate", "message"}
    assert deleted["status"] == "pending_deletion"
    pending = document(cli(srv, "key", "status", name, "--json"))
    assert pending["deletionDate"] == deleted["deletionDate"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", deleted["deletionDate"])
    cancelled = document(cli(srv, "key", "cancel-deletion", name, "--json"))
    assert set(cancelled) == {"keyId", "status", "message"} and cancelled["status"] == "disabled"


def test_status_configure_users_and_policies_print_the_admin_apis_documents(
    srv: KmsThread, tmp_path: Path
) -> None:
    status = document(cli(srv, "status", "--json"))
    assert set(status) == {"status", "kmsType", "endpoint", "keyCount", "defaultKeyId"}
    assert status["kmsType"] == "local" and status["defaultKeyId"] is None
    configured = document(cli(srv, "configure", "--kms-type", "local", "--json"))
    assert configured == {"status": "success", "message": "KMS configured successfully"}

    (tmp_path / "p.json").write_text(json.dumps(POLICY))
    added = document(cli(srv, "policy", "add", "out-policy", str(tmp_path / "p.json"), "--json"))
    assert set(added) == {"name", "message"}
    policies = document(cli(srv, "policy", "list", "--json"))
    assert policies == api(srv, "GET", "policy/list") and set(policies) == {"policies"}

    user = document(cli(srv, "user", "add", "out-user", "--policy", "out-policy", "--json"))
    assert set(user) == {"accessKey", "policies", "secretKey"}
    assert user["policies"] == ["out-policy"]
    users = document(cli(srv, "user", "list", "--json"))
    assert users == api(srv, "GET", "user/list")
    assert {"accessKey": "out-user", "policies": ["out-policy"], "managed": True} in users["users"]
    removed = document(cli(srv, "user", "remove", "out-user", "--json"))
    assert set(removed) == {"accessKey", "message"}
    assert set(document(cli(srv, "policy", "remove", "out-policy", "--json"))) == {
        "name",
        "message",
    }


def test_crypto_commands_print_the_aws_answers_fields_bytes_as_base64(srv: KmsThread) -> None:
    dk = document(cli(srv, "datakey", LONG, "--bytes", "16", "--json"))
    assert set(dk) == {"KeyId", "Plaintext", "CiphertextBlob"}
    assert dk["KeyId"] == ARN + LONG and len(b64(dk["Plaintext"])) == 16

    secret = b"\x00\xff not text \x80"
    blob = document(cli(srv, "encrypt", LONG, "--context", "a=b", "--json", stdin=secret))
    assert set(blob) == {"KeyId", "CiphertextBlob"}
    opened = document(
        cli(srv, "decrypt", "--context", "a=b", "--json", stdin=blob["CiphertextBlob"].encode())
    )
    assert opened == {"Plaintext": base64.b64encode(secret).decode()}
    data_key = document(
        cli(srv, "decrypt", "--json", "--key", LONG, stdin=dk["CiphertextBlob"].encode())
    )
    assert data_key == {"Plaintext": dk["Plaintext"]}

    signed = document(
        cli(srv, "sign", SIGNER, "--algorithm", "ECDSA_SHA_256", "--json", stdin=b"m")
    )
    assert set(signed) == {"KeyId", "SigningAlgorithm", "MessageType", "Signature"}
    checked = document(
        cli(srv, "verify", SIGNER, "--algorithm", "ECDSA_SHA_256", "--signature",
            signed["Signature"], "--json", stdin=b"m")
    )  # fmt: skip
    assert checked == {"KeyId": SIGNER, "SigningAlgorithm": "ECDSA_SHA_256", "SignatureValid": True}
    public = document(cli(srv, "public-key", SIGNER, "--json"))
    assert set(public) == {"KeyId", "PublicKey"}
    serialization.load_der_public_key(b64(public["PublicKey"]))  # DER, as AWS's GetPublicKey

    mac = document(cli(srv, "mac", HMAC, "--algorithm", "HMAC_SHA_256", "--json", stdin=b"m"))
    assert set(mac) == {"KeyId", "MacAlgorithm", "Mac"} and len(b64(mac["Mac"])) == 32
    valid = document(
        cli(srv, "mac", HMAC, "--algorithm", "HMAC_SHA_256", "--verify", mac["Mac"], "--json",
            stdin=b"m")
    )  # fmt: skip
    assert valid == {"KeyId": HMAC, "MacAlgorithm": "HMAC_SHA_256", "MacValid": True}


def test_a_check_that_fails_is_the_answer_with_exit_1(srv: KmsThread) -> None:
    signature = base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()
    args = ("verify", SIGNER, "--algorithm", "ECDSA_SHA_256", "--signature", signature)
    invalid = document(cli(srv, *args, "--json", stdin=b"m"), code=1)
    assert invalid == {
        "KeyId": SIGNER,
        "SigningAlgorithm": "ECDSA_SHA_256",
        "SignatureValid": False,
    }
    assert cli(srv, *args, stdin=b"m").returncode == 1


@pytest.mark.parametrize(
    ("args", "stdin", "exit_code", "code", "message"),
    [
        (("key", "status", "out-missing"), b"", 1, "KMSKeyNotFound",
         "Key 'out-missing' does not exist"),
        (("key", "delete", LONG, "--days", "3"), b"", 2, "UsageError",
         "Invalid value for '--days': 3 is not in the range 7<=x<=30."),
        (("encrypt", LONG, "--context", "no-equals"), b"m", 2, "UsageError",
         "Invalid value for --context: 'no-equals' is not KEY=VALUE"),
        (("key", "status"), b"", 2, "UsageError", "Missing argument 'NAME'."),
        (("user", "remove", "out-nobody"), b"", 1, "KMSUserNotFound",
         "User 'out-nobody' does not exist"),
        (("datakey", LONG, "--bytes", "5000"), b"", 2, "UsageError",
         "Invalid value for '--bytes': 5000 is not in the range 1<=x<=1024."),
    ],
    ids=["missing-key", "days", "context", "no-argument", "missing-user", "bytes"],
)  # fmt: skip
def test_errors_are_one_json_document_with_the_same_exit_code(
    srv: KmsThread, args: tuple[str, ...], stdin: bytes, exit_code: int, code: str, message: str
) -> None:
    failed = error_document(cli(srv, *args, "--json", stdin=stdin), exit_code)
    assert failed == {"error": {"code": code, "message": message}}
    assert cli(srv, *args, stdin=stdin).returncode == exit_code


def test_no_answer_and_no_credentials_are_json_errors_too(srv: KmsThread, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    refused = error_document(cli(srv, "status", "--endpoint", url, "--json"), 2)
    assert refused == {
        "error": {
            "code": "EndpointUnreachable",
            "message": f"cannot reach {url}: Connection refused",
        }
    }
    nobody = {"S3KMS_ACCESS_KEY": "", "S3KMS_SECRET_KEY": ""}
    args = ("key", "list", "--data-dir", str(tmp_path / "none"), "--json")
    missing = error_document(cli(srv, *args, env=nobody), 2)
    assert missing["error"]["code"] == "UsageError"
    assert missing["error"]["message"].startswith("no credentials: pass --access-key/--secret-key")


def test_a_wrong_context_is_a_json_error_in_words(srv: KmsThread) -> None:
    blob = document(cli(srv, "encrypt", LONG, "--context", "a=b", "--json", stdin=b"s"))
    wrong = cli(srv, "decrypt", "--context", "a=c", "--json", stdin=blob["CiphertextBlob"].encode())
    error = error_document(wrong, 1)["error"]
    assert error["code"] == "KMSInvalidCiphertext"
    assert error["message"].startswith(
        "the ciphertext does not open with its key and this encryption context"
    )


# -- tables: nothing cut, whatever the width -------------------------------------------------------


def lines_of(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines()


def whole(value: str, lines: list[str]) -> None:
    """`value` on one line of the output, uncut (no ellipsis, no fold)."""
    assert any(value in line for line in lines), (value, lines)


@pytest.mark.parametrize("columns", [40, 60])
def test_no_value_is_cut_on_a_narrow_terminal(srv: KmsThread, columns: int) -> None:
    status = document(cli(srv, "key", "status", LONG, "--json"))
    for args in (("key", "list"), ("key", "status", LONG)):
        lines = lines_of(cli(srv, *args, columns=columns))
        whole(LONG, lines)
        whole(status["createdAt"], lines)
        assert not any("…" in line for line in lines), lines

    dk = document(cli(srv, "datakey", LONG, "--json"))
    out = cli(srv, "datakey", LONG, columns=columns)
    lines = lines_of(out)
    whole(ARN + LONG, lines)
    ciphertext = next(line.split()[-1] for line in lines if "ciphertext" in line)
    assert len(ciphertext) == len(dk["CiphertextBlob"]) > columns  # the whole blob, one line
    b64(ciphertext)

    blob = lines_of(cli(srv, "encrypt", LONG, columns=columns, stdin=b"x" * 200))
    assert len(blob) == 1 and len(blob[0]) > columns

    kms = document(cli(srv, "status", "--json"))
    whole(kms["endpoint"], lines_of(cli(srv, "status", columns=columns)))


@pytest.mark.parametrize("columns", [40, 60])
def test_deletion_date_and_state_are_whole(srv: KmsThread, columns: int) -> None:
    name = f"out-doomed-{columns}-" + "d" * 40
    assert cli(srv, "key", "create", name).returncode == 0
    lines = lines_of(cli(srv, "key", "delete", name, "--days", "7", columns=columns))
    date = document(cli(srv, "key", "status", name, "--json"))["deletionDate"]
    for value in (name, "pending_deletion", date):
        whole(value, lines)
    lines = lines_of(cli(srv, "key", "status", name, columns=columns))
    for value in (name, "pending_deletion", date):
        whole(value, lines)


@pytest.mark.parametrize("columns", [40, 60])
def test_a_new_users_secret_is_whole(srv: KmsThread, tmp_path: Path, columns: int) -> None:
    (tmp_path / "p.json").write_text(json.dumps(POLICY))
    for policy in ("out-p1", "out-p2"):
        assert cli(srv, "policy", "add", policy, str(tmp_path / "p.json")).returncode == 0
    access = f"out-user-{columns}"
    secret = "a-chosen-secret-key-that-is-quite-long-" + "z" * 30
    added = cli(srv, "user", "add", access, "--policy", "out-p1", "--policy", "out-p2",
                "--new-secret-key", secret, columns=columns)  # fmt: skip
    lines = lines_of(added)
    whole(access, lines)
    whole("out-p1, out-p2", lines)  # the policies as a list people read
    assert "[" not in added.stdout.decode()
    generated = cli(srv, "user", "add", access + "-g", columns=columns)
    key = next(line.split()[-1] for line in lines_of(generated) if line.startswith("secret key"))
    assert len(key) >= 32
    assert "shown only this once" in generated.stderr.decode()


def test_a_wide_terminal_still_gets_a_table(srv: KmsThread) -> None:
    lines = lines_of(cli(srv, "key", "list", "--pattern", "out-long-*", columns=200))
    assert any("key id" in line and "created at" in line for line in lines)
    whole(LONG, lines)


# -- help texts ------------------------------------------------------------------------------------


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def test_every_option_of_every_command_has_a_help_text() -> None:
    missing = [
        f"{name} {param.opts[0]}"
        for name, command in commands(main)
        for param in command.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert missing == []


def help_texts(srv: KmsThread, *command: str) -> dict[str, str]:
    """Each option of `s3kms COMMAND --help` with its help text, the lines click wrapped joined."""
    result = cli(srv, *command, "--help")
    assert result.returncode == 0, result.stderr.decode()
    texts: dict[str, list[str]] = {}
    current: str | None = None
    for line in result.stdout.decode().splitlines():
        if re.match(r"  -", line):
            spec, _, text = line.strip().partition("  ")
            current = spec.split()[0].rstrip(",")
            texts[current] = [text]
        elif current is not None and line.startswith("   "):
            texts[current].append(line)
        else:
            current = None
    return {option: " ".join(" ".join(parts).split()) for option, parts in texts.items()}


def test_the_help_texts_the_issue_lists(srv: KmsThread) -> None:
    server = help_texts(srv, "server")
    for option in (
        "--log-level",
        "--vault-namespace",
        "--vault-app-role-id",
        "--vault-timeout-seconds",
        "--vault-ca-cert",
    ):
        variable = "S3KMS_" + option[2:].upper().replace("-", "_")
        assert server[option].split("[env var:")[0].strip(), option
        assert f"[env var: {variable}]" in server[option], server[option]
    assert "(info)" in server["--log-level"]
    assert "none (no backend: key requests answer KMSNotConfigured" in server["--backend"]
    assert all("env var: S3KMS_" in text for option, text in server.items() if option != "--help")

    client = help_texts(srv, "key", "list")
    for option, variable in (
        ("--access-key", "S3KMS_ACCESS_KEY"),
        ("--secret-key", "S3KMS_SECRET_KEY"),
        ("--region", "S3KMS_REGION"),
        ("--endpoint", "S3KMS_ENDPOINT"),
    ):
        assert not client[option].startswith("["), (option, client[option])
        assert f"env var: {variable}" in client[option], client[option]
    assert "default: us-east-1" in client["--region"]
    assert "default: http://127.0.0.1:9000" in client["--endpoint"]

    datakey = help_texts(srv, "datakey")
    assert (
        datakey["--bytes"].startswith("Length of the data key")
        and "default: 32" in datakey["--bytes"]
    )
    assert "1<=x<=1024" in datakey["--bytes"]
    days = help_texts(srv, "key", "delete")["--days"]
    assert "default: 30" in days and "7<=x<=30" in days


# -- messages --------------------------------------------------------------------------------------


def one_line(result: subprocess.CompletedProcess[bytes], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_missing_key_is_named(srv: KmsThread) -> None:
    line = one_line(cli(srv, "key", "status", "no-such-key"), 1)
    assert line == "error KMSKeyNotFound: Key 'no-such-key' does not exist"
    for command in ("enable", "disable", "rotate", "delete", "cancel-deletion"):
        line = one_line(cli(srv, "key", command, "no-such-key"), 1)
        assert line == "error KMSKeyNotFound: Key 'no-such-key' does not exist"


def test_days_out_of_range_names_the_flag(srv: KmsThread) -> None:
    result = cli(srv, "key", "delete", LONG, "--days", "3")
    assert result.returncode == 2
    assert "Invalid value for '--days': 3 is not in the range 7<=x<=30." in result.stderr.decode()
    assert "PendingWindowInDays" not in result.stderr.decode()
    assert document(cli(srv, "key", "status", LONG, "--json"))["status"] == "enabled"


def test_data_key_bytes_out_of_range_names_the_flag(srv: KmsThread) -> None:
    for size in ("5000", "0"):
        result = cli(srv, "datakey", LONG, "--bytes", size)
        assert result.returncode == 2 and result.stdout == b""
        said = result.stderr.decode()
        assert f"Invalid value for '--bytes': {size} is not in the range 1<=x<=1024." in said
        assert "numberOfBytes" not in said and "NumberOfBytes" not in said
    largest = document(cli(srv, "datakey", LONG, "--bytes", "1024", "--json"))
    assert len(b64(largest["Plaintext"])) == 1024


def test_a_missing_user_is_named(srv: KmsThread) -> None:
    line = one_line(cli(srv, "user", "remove", "no-such-user"), 1)
    assert line == "error KMSUserNotFound: User 'no-such-user' does not exist"


def test_a_wrong_context_says_what_is_wrong_and_nothing_secret(srv: KmsThread) -> None:
    secret_value = "context-value-4711"
    blob = cli(srv, "encrypt", LONG, "--context", f"tenant={secret_value}", stdin=b"plain-0815")
    wrong = cli(srv, "decrypt", "--context", "tenant=other", stdin=blob.stdout, columns=40)
    line = one_line(wrong, 1)
    assert line.startswith(
        "error KMSInvalidCiphertext: the ciphertext does not open with its key and this "
        "encryption context: give every --context KEY=VALUE it was encrypted with, and no other"
    ), line
    none = one_line(cli(srv, "decrypt", stdin=blob.stdout), 1)
    assert "no encryption context: if it was encrypted with one, give it with --context" in none
    for said in (line, none):
        assert secret_value not in said and "plain-0815" not in said and "tenant" not in said


def test_errors_are_never_wrapped_mid_sentence(srv: KmsThread) -> None:
    """A long message on a 40-column terminal is still one line (the terminal folds it)."""
    line = one_line(cli(srv, "encrypt", SIGNER, columns=40, stdin=b"m"), 1)
    assert line == (
        f"error KMSInvalidKeyUsage: {ARN}{SIGNER} key usage is SIGN_VERIFY which is not valid "
        "for Encrypt."
    )
    signature = base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()
    invalid = cli(srv, "verify", SIGNER, "--algorithm", "ECDSA_SHA_256", "--signature",
                  signature, columns=40, stdin=b"m")  # fmt: skip
    assert one_line(invalid, 1) == (
        f"invalid the signature does not match the message and key {SIGNER}"
    )


def test_the_listen_address_comes_from_s3kms_address_unless_a_flag_says_otherwise() -> None:
    """README and docs/configuration.md name S3KMS_ADDRESS beside --address."""
    from s3kms.cli import resolve_settings

    settings = resolve_settings({}, {"S3KMS_ADDRESS": "0.0.0.0:9443"})
    assert (settings.host, settings.port) == ("0.0.0.0", 9443)
    settings = resolve_settings({"address": "127.0.0.1:9001"}, {"S3KMS_ADDRESS": "0.0.0.0:9443"})
    assert (settings.host, settings.port) == ("127.0.0.1", 9001)
