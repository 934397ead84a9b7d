"""`s3kms server`'s log as an operator reads it: `--log-format text|json` for s3kms's lines and
uvicorn's alike (one process or several), the start summary, what the generated master key
protects, and the exit code of a stop by SIGTERM or SIGINT."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3kms import __version__, compiled
from s3kms.auth import sigv4
from s3kms.client import Client
from s3kms.logs import JsonFormatter, failure_line
from s3kms.request import current_request_id
from s3kms.runtime import generated_master_key_warning
from s3kms.startup import ExitCode

from kmsserver import (
    MASTER_KEY,
    ROOT_PASSWORD,
    ROOT_USER,
    KmsProcess,
    free_port,
    signed_admin,
    wait_ready,
)
from openbao import ENV_VAULT_CACERT, VaultApi

ADMIN = "/rustfs/admin/v3/kms"
JSON_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) [\w.]+: ")


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line of `output`, each a JSON object with the four fields every line has."""
    lines = []
    for line in output.splitlines():
        entry = json.loads(line)  # fails the test on any line that is not JSON
        assert isinstance(entry, dict), line
        assert JSON_TIME.fullmatch(entry["time"]), line
        assert entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR"), line
        assert isinstance(entry["logger"], str) and isinstance(entry["message"], str), line
        lines.append(entry)
    assert lines
    return lines


def wait_for(server: KmsProcess, text: str, timeout: float = 30.0) -> None:
    """Until the server's log holds `text` (with workers, readiness comes after /health/live)."""
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{server.log()}"
        time.sleep(0.05)


def stop(server: KmsProcess, sig: signal.Signals = signal.SIGTERM) -> int:
    assert server.proc is not None
    server.proc.send_signal(sig)
    return server.wait_exit(30)


def summaries(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in lines if entry.get("event") == "start"]


# -- json -----------------------------------------------------------------------------------------


def test_json_lines_name_the_request_they_were_logged_in(tmp_path: Path) -> None:
    """Every line is a JSON object, uvicorn's too; a line logged while a request is served
    carries its request id, lines outside requests carry none."""
    data = tmp_path / "data"
    server = KmsProcess(data, args=["--log-format", "json"])
    server.start()
    try:
        # A write that fails inside a request: the admin API logs it (and answers 503).
        (data / "kms-config.json").mkdir()
        answer = signed_admin(
            server.url, "POST", f"{ADMIN}/configure", body=b'{"kms_type": "local"}'
        )
        assert answer.status_code == 503, answer.text
        request_id = answer.headers["x-amz-request-id"]
        wait_for(server, "cannot write to disk")
    finally:
        assert stop(server) == 0
    output = server.log()
    lines = json_lines(output)
    failed = [e for e in lines if "cannot write to disk" in e["message"]]
    assert len(failed) == 1
    assert failed[0]["request_id"] == request_id
    assert (failed[0]["level"], failed[0]["logger"]) == ("ERROR", "s3kms.http")
    uvicorn = [e for e in lines if e["logger"].startswith("uvicorn")]
    assert {"Application startup complete.", "Shutting down"} <= {e["message"] for e in uvicorn}
    assert all("request_id" not in e for e in lines if e is not failed[0])
    assert len(summaries(lines)) == 1
    assert ROOT_PASSWORD not in output and MASTER_KEY not in output


def test_json_lines_from_every_worker(tmp_path: Path) -> None:
    """`--workers 2`: each worker process sets the format up again; the summary comes once,
    when both serve."""
    server = KmsProcess(tmp_path / "data", args=["--log-format", "json", "--workers", "2"])
    server.start()
    try:
        wait_for(server, '"event": "start"')
    finally:
        assert stop(server) == 0
    lines = json_lines(server.log())
    started = {e["message"] for e in lines if e["message"].startswith("Started server process")}
    assert len(started) == 2  # one per worker, each with its pid
    assert any(e["message"].startswith("Started parent process") for e in lines)
    (summary,) = summaries(lines)
    assert summary["workers"] == 2
    assert summary["listen"] == [server.url]


def test_start_summary_fields(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = KmsProcess(data, args=["--log-format", "json", "--audit-log", "off"])
    server.start()
    with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
        kms.create_key("one")
        kms.create_key("two")
    server.restart()
    assert stop(server) == 0
    first, second = summaries(json_lines(server.log()))
    # The test process imports the same installation the server runs.
    hot_path = compiled.hot_path()
    assert hot_path in ("compiled", "interpreted")
    assert second == {
        "time": second["time"],
        "level": "INFO",
        "logger": "s3kms",
        "message": f"s3kms {__version__} ready: backend local, data dir {data.absolute()}, "
        f"listening on {server.url}, 1 worker, 2 keys, audit log off, hot path {hot_path}",
        "event": "start",
        "version": __version__,
        "backend": "local",
        "data_dir": str(data.absolute()),
        "listen": [server.url],
        "workers": 1,
        "keys": 2,
        "audit_log": "off",
        "hot_path": hot_path,
    }
    assert first["keys"] == 0


def test_json_formatter_exception_and_fields() -> None:
    """`exc`: the traceback as one string; a request id from the context; fields of a line's own
    never overwrite the fixed ones."""
    logger = logging.getLogger("s3kms.test")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            "s3kms.test", logging.ERROR, __file__, 1, "failed: %s", ("x",), sys.exc_info(),
            extra={"s3kms_fields": {"level": "forged", "extra": 1}},
        )  # fmt: skip
    token = current_request_id.set("REQ1")
    try:
        line = JsonFormatter().format(record)
    finally:
        current_request_id.reset(token)
    assert "\n" not in line
    entry = json.loads(line)
    assert (entry["level"], entry["message"], entry["request_id"]) == ("ERROR", "failed: x", "REQ1")
    assert entry["exc"].startswith("Traceback") and entry["exc"].endswith("ValueError: boom")
    assert entry["extra"] == 1
    assert "request_id" not in json.loads(JsonFormatter().format(record))
    failure = json.loads(failure_line("cannot start; do this", 4))
    assert (failure["level"], failure["message"], failure["exit_code"]) == (
        "ERROR", "cannot start; do this", 4
    )  # fmt: skip


def bare_start(data: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
    return subprocess.Popen(
        [sys.executable, "-m", "s3kms", "server", "--data-dir", str(data), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean | (env or {}),
    )  # fmt: skip


def test_json_first_start_keeps_the_generated_secret_off_the_log(tmp_path: Path) -> None:
    """In JSON (a log collector) the generated root secret stays in its 0600 file."""
    data, port = tmp_path / "data", free_port()
    proc = bare_start(data, "--address", f"127.0.0.1:{port}", "--log-format", "json")
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        creds = json.loads((data / "credentials").read_text())
        with Client(f"http://127.0.0.1:{port}", creds["access_key"], creds["secret_key"]) as kms:
            assert kms.status().kms_type == "local"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and out == ""
    lines = json_lines(err)
    assert creds["secret_key"] not in err
    generated = [e for e in lines if "generated root credentials" in e["message"]]
    assert len(generated) == 1 and creds["access_key"] in generated[0]["message"]
    assert str(data / "credentials") in generated[0]["message"]


def test_json_failed_start_is_one_json_line(tmp_path: Path) -> None:
    wrong = base64.b64encode(os.urandom(32)).decode()
    server = KmsProcess(tmp_path / "data")
    server.start()
    with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
        kms.create_key("guarded")
    server.stop()
    env = {"S3KMS_ROOT_USER": ROOT_USER, "S3KMS_ROOT_PASSWORD": ROOT_PASSWORD,
           "S3KMS_MASTER_KEY": wrong}  # fmt: skip
    proc = bare_start(
        tmp_path / "data", "--address", "127.0.0.1:0", "--log-format", "json", env=env
    )
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == ExitCode.MASTER_KEY and out == ""
    (line,) = json_lines(err)
    assert line["exit_code"] == ExitCode.MASTER_KEY and line["level"] == "ERROR"
    assert "not the key this keystore" in line["message"] and wrong not in err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--log-format", "xml"], "--log-format"), ([], "log_format must be text or json")],
)
def test_bad_log_format_is_a_usage_error(tmp_path: Path, args: list[str], fragment: str) -> None:
    proc = bare_start(
        tmp_path / "data", "--address", "127.0.0.1:0", *args, env={"S3KMS_LOG_FORMAT": "yaml"}
    )
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == ExitCode.USAGE, err
    assert out == ""
    assert err.startswith("s3kms: ") and fragment in err and len(err.splitlines()) == 1
    assert not (tmp_path / "data").exists()


# -- text -----------------------------------------------------------------------------------------


def test_text_lines_and_summary(tmp_path: Path) -> None:
    """The default format, for uvicorn's lines too (none in uvicorn's own `INFO:     ...`)."""
    data = tmp_path / "data"
    server = KmsProcess(data)
    server.start()
    with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
        kms.create_key("only")
    server.restart()
    assert stop(server) == 0
    lines = server.log().splitlines()
    assert all(TEXT_LINE.match(line) for line in lines), server.log()
    assert any(" INFO uvicorn.error: Application startup complete." in line for line in lines)
    ready = [line for line in lines if " INFO s3kms: s3kms " in line]
    assert len(ready) == 2
    assert ready[1].endswith(
        f" INFO s3kms: s3kms {__version__} ready: backend local, data dir {data.absolute()}, "
        f"listening on {server.url}, 1 worker, 1 key, audit log {data.absolute()}/audit/audit.log"
        f", hot path {compiled.hot_path()}"
    )


# -- SIGTERM, SIGINT ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "sig"),
    [(1, signal.SIGTERM), (2, signal.SIGTERM), (1, signal.SIGINT), (2, signal.SIGINT)],
)
def test_stop_by_signal_exits_0(tmp_path: Path, workers: int, sig: signal.Signals) -> None:
    """A clean shutdown on SIGTERM or SIGINT exits 0, with one worker (uvicorn raises the signal
    again after its shutdown, which killed the process: 143) as with several."""
    server = KmsProcess(tmp_path / "data", args=["--workers", str(workers)])
    server.start()
    wait_for(server, " ready: ")
    assert stop(server, sig) == 0
    log = server.log()
    assert log.count("Application shutdown complete.") == workers
    assert "Traceback" not in log


def test_sigterm_during_the_checks_exits_0_and_writes_nothing(tmp_path: Path) -> None:
    """Before it serves (here: waiting for a Vault that never answers) the start stops at once."""
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        data = tmp_path / "data"
        proc = bare_start(
            data, "--address", f"127.0.0.1:{free_port()}", "--backend", "vault",
            "--vault-address", address, "--vault-timeout-seconds", "30",
            env={"S3KMS_VAULT_TOKEN": "never-sent-anywhere-useful"},
        )  # fmt: skip
        time.sleep(1.5)
        assert proc.poll() is None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out == ""
    assert time.monotonic() - started < 5
    assert "Traceback" not in err
    assert not data.exists()


# -- the master key a first start generates -------------------------------------------------------


def test_generated_master_key_warning_says_what_it_protects() -> None:
    local = generated_master_key_warning("/d/master.key", "local")
    assert "the Local keystore (keystore.db) and the secrets of the users in users.json" in local
    assert "same directory" in local
    vault = generated_master_key_warning("/d/master.key", "vault")
    assert "on the Vault backend it protects only the secrets of the users in users.json" in vault
    assert "the keystore is in Vault" in vault
    none = generated_master_key_warning("/d/master.key", "none")
    assert "users.json" in none and "once one is configured" in none


def aws_encrypt(url: str, key_id: str) -> httpx.Response:
    body = json.dumps({"KeyId": key_id, "Plaintext": base64.b64encode(b"x").decode()}).encode()
    headers = sigv4.sign_headers(
        "POST", url + "/",
        {"content-type": "application/x-amz-json-1.1", "x-amz-target": "TrentService.Encrypt"},
        body, access_key=ROOT_USER, secret_key=ROOT_PASSWORD, region="us-east-1", service="kms",
        now=time.time(),
    )  # fmt: skip
    return httpx.post(url + "/", headers=headers, content=body, timeout=20)


@pytest.mark.vault
def test_vault_node_json_debug_log(bao: VaultApi, tmp_path: Path) -> None:
    """A Vault-backend node's first start: the master key warning says it protects only
    users.json; the summary names Vault (no key count); at debug, each Vault call a request makes
    is logged with that request's id, and no line holds the token."""
    prefix = f"s3kms-logs-{uuid.uuid4().hex[:10]}"
    extra = (
        ["--vault-ca-cert", os.environ[ENV_VAULT_CACERT]]
        if os.environ.get(ENV_VAULT_CACERT)
        else []
    )
    data = tmp_path / "data"
    server = KmsProcess(
        data,
        args=["--backend", "vault", "--vault-address", bao.addr, "--vault-kv-prefix", prefix,
              "--log-level", "debug", "--log-format", "json", *extra],
        env={"S3KMS_VAULT_TOKEN": bao.root_token, "S3KMS_MASTER_KEY": ""},
    )  # fmt: skip
    server.start()
    try:
        key = f"logs-{uuid.uuid4().hex[:8]}"
        created = signed_admin(server.url, "POST", f"{ADMIN}/key/create?keyName={key}")
        assert created.status_code == 200, created.text
        encrypted = aws_encrypt(server.url, key)
        assert encrypted.status_code == 200, encrypted.text
    finally:
        assert stop(server) == 0
    output = server.log()
    lines = json_lines(output)
    assert bao.root_token not in output and ROOT_PASSWORD not in output
    (warning,) = [e for e in lines if "generated a new master key" in e["message"]]
    assert warning["level"] == "WARNING"
    assert (
        "on the Vault backend it protects only the secrets of the users in users.json"
        in (warning["message"])
    )
    assert (data / "master.key").exists()
    (summary,) = summaries(lines)
    assert (summary["backend"], summary["vault_addresses"], summary["keys"]) == (
        "vault", [bao.addr], None
    )  # fmt: skip
    assert f"backend vault ({bao.addr})" in summary["message"]
    vault_calls = [
        e for e in lines if e["logger"] == "s3kms.keystore.vault" and e["level"] == "DEBUG"
    ]
    for answer in (created, encrypted):
        rid = answer.headers["x-amz-request-id"]
        assert [e for e in vault_calls if e.get("request_id") == rid], (rid, vault_calls)
    assert any("transit/encrypt" in e["message"] for e in vault_calls if "request_id" in e)
    # The start's own calls (the checks, opening the backend) belong to no request.
    assert [e for e in vault_calls if "request_id" not in e]
