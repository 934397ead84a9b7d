"""Every key spec through a real server with boto3, on both backends (Local, and Vault transit on
a real OpenBao), checked offline with `cryptography` and the public key the server hands out, as
a client would: a signature made by transit verifies exactly as AWS's would, and an RSA ciphertext
made offline decrypts through transit. A spec or algorithm the Vault backend cannot hold is
skipped there, and a test checks that Vault refuses it (docs/vault.md has the matrix). The Vault
server runs with a token of docs/vault.md's least-privilege policy only, so every operation here
also proves the policy complete.

Error types and messages are AWS's as recorded by LocalStack's AWS-validated snapshots
(tests/aws/services/kms/test_kms.snapshot.json) where a recording exists.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, padding, rsa

from s3kms.keystore.vault import VaultSettings

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, thread_settings
from offline import verify_signature
from openbao import VaultApi

SIGNING = {
    "RSA_2048": ["RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
                 "RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384",
                 "RSASSA_PKCS1_V1_5_SHA_512"],
    "RSA_3072": ["RSASSA_PSS_SHA_256", "RSASSA_PKCS1_V1_5_SHA_512"],
    "ECC_NIST_P256": ["ECDSA_SHA_256"],
    "ECC_NIST_P384": ["ECDSA_SHA_384"],
    "ECC_NIST_P521": ["ECDSA_SHA_512"],
    "ECC_SECG_P256K1": ["ECDSA_SHA_256"],
    "ECC_NIST_EDWARDS25519": ["ED25519_SHA_512"],
    "ML_DSA_44": ["ML_DSA_SHAKE_256"],
    "ML_DSA_65": ["ML_DSA_SHAKE_256"],
    "ML_DSA_87": ["ML_DSA_SHAKE_256"],
}  # fmt: skip
# What the Vault backend cannot hold (key specs, a key usage) or compute (an algorithm): transit
# has no secp256k1, ML-DSA, ML-KEM or ECDH, and decrypts RSA OAEP with SHA-256 only.
VAULT_CANNOT = {
    "ECC_SECG_P256K1": "KeySpec ECC_SECG_P256K1 is not supported by the vault backend",
    "ML_DSA_44": "KeySpec ML_DSA_44 is not supported by the vault backend",
    "ML_DSA_65": "KeySpec ML_DSA_65 is not supported by the vault backend",
    "ML_DSA_87": "KeySpec ML_DSA_87 is not supported by the vault backend",
    "ML_KEM_768": "KeySpec ML_KEM_768 is not supported by the vault backend",
    "ML_KEM_1024": "KeySpec ML_KEM_1024 is not supported by the vault backend",
    "KEY_AGREEMENT": "transit has no key agreement",
    "RSAES_OAEP_SHA_1": "transit decrypts RSA OAEP with SHA-256 only",
}


def needs(backend: str, *names: str) -> None:
    """Skip on a backend that cannot hold these specs / usages / algorithms."""
    missing = [n for n in names if backend == "vault" and n in VAULT_CANNOT]
    if missing:
        pytest.skip(f"the Vault backend cannot hold {', '.join(missing)} (docs/vault.md)")


def documented_policy_token(bao: VaultApi, prefix: str) -> str:
    """A token of docs/vault.md's least-privilege policy (read from the document) for KV prefix
    `prefix`, without Vault's default policy; Vault set up as the document says (upsert off)."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "vault.md").read_text()
    hcl = text.split("```hcl\n", 1)[1].split("```", 1)[0]
    assert 'path "transit/sign/*"' in hcl and 'path "transit/hmac/*"' in hcl
    hcl = hcl.replace("secret/data/s3kms/", f"secret/data/{prefix}/")
    hcl = hcl.replace("secret/metadata/s3kms/", f"secret/metadata/{prefix}/")
    bao.call("POST", "transit/config/keys", {"disable_upsert": True})
    name = f"{prefix}-policy"
    bao.write_policy(name, hcl)
    body = {"policies": [name], "ttl": "2h", "no_default_policy": True}
    return str(bao.call("POST", "auth/token/create", body)["auth"]["client_token"])


@pytest.fixture(scope="module", params=["local", pytest.param("vault", marks=pytest.mark.vault)])
def backend(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, backend: str, request: pytest.FixtureRequest
) -> Iterator[KmsThread]:
    data = tmp_path_factory.mktemp("key-types") / "data"
    if backend == "local":
        settings = thread_settings(data)
    else:
        bao: VaultApi = request.getfixturevalue("bao")  # a real OpenBao (or the external Vault)
        prefix = f"key-types-{uuid.uuid4().hex[:12]}"  # this server sees only its own keys
        vault = VaultSettings(
            addresses=(bao.addr,), token=documented_policy_token(bao, prefix), kv_prefix=prefix
        )
        settings = thread_settings(data, backend="vault", vault=vault)
    server = KmsThread(settings).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kms(srv: KmsThread) -> Any:
    return boto3.client(
        "kms", endpoint_url=srv.url, region_name="us-east-1", aws_access_key_id=ROOT_USER,
        aws_secret_access_key=ROOT_PASSWORD, config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip


def create(kms: Any, spec: str, usage: str) -> str:
    key_id: str = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
    return key_id


def error(call: Any, **kwargs: Any) -> tuple[str, str | None]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return response["Error"]["Code"], response["Error"].get("Message")


def arn(key_id: str) -> str:
    return f"arn:aws:kms:us-east-1:000000000000:key/{key_id}"


@pytest.mark.parametrize("spec", sorted(SIGNING))
def test_signatures_verify_offline_and_online(kms: Any, backend: str, spec: str) -> None:
    needs(backend, spec)
    key_id = create(kms, spec, "SIGN_VERIFY")
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (meta["KeySpec"], meta["KeyUsage"]) == (spec, "SIGN_VERIFY")
    assert set(SIGNING[spec]) <= set(meta["SigningAlgorithms"])
    assert "EncryptionAlgorithms" not in meta
    public = kms.get_public_key(KeyId=key_id)
    assert (public["KeySpec"], public["KeyUsage"], public["KeyId"]) == (
        spec,
        "SIGN_VERIFY",
        arn(key_id),
    )
    assert public["SigningAlgorithms"] == meta["SigningAlgorithms"]
    message = b"sign me, " * 50
    for algorithm in SIGNING[spec]:
        signed = kms.sign(KeyId=key_id, Message=message, SigningAlgorithm=algorithm)
        assert (signed["KeyId"], signed["SigningAlgorithm"]) == (arn(key_id), algorithm)
        verify_signature(public["PublicKey"], algorithm, message, signed["Signature"])
        valid = kms.verify(
            KeyId=key_id, Message=message, Signature=signed["Signature"], SigningAlgorithm=algorithm
        )
        assert valid["SignatureValid"] is True
        code, text = error(
            kms.verify, KeyId=key_id, Message=message + b"!", Signature=signed["Signature"],
            SigningAlgorithm=algorithm,
        )  # fmt: skip
        assert code == "KMSInvalidSignatureException" and not text
        if algorithm.startswith(("RSASSA", "ECDSA")):
            hasher = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
            digest = hasher[algorithm.rsplit("_", 1)[1]](message).digest()
            signed = kms.sign(
                KeyId=key_id, Message=digest, MessageType="DIGEST", SigningAlgorithm=algorithm
            )
            verify_signature(public["PublicKey"], algorithm, message, signed["Signature"])
            code, text = error(
                kms.sign, KeyId=key_id, Message=digest[:-1], MessageType="DIGEST",
                SigningAlgorithm=algorithm,
            )  # fmt: skip
            assert (code, text) == (
                "ValidationException",
                f"Digest is invalid length for algorithm {algorithm}.",
            )


def test_ml_dsa_external_mu(kms: Any, backend: str) -> None:
    needs(backend, "ML_DSA_65")
    key_id = create(kms, "ML_DSA_65", "SIGN_VERIFY")
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    assert isinstance(public, mldsa.MLDSA65PublicKey)
    hasher = mldsa.MLDSAMuHasher(public)
    hasher.update(b"the message")
    signed = kms.sign(
        KeyId=key_id, Message=hasher.finalize(), MessageType="EXTERNAL_MU",
        SigningAlgorithm="ML_DSA_SHAKE_256",
    )  # fmt: skip
    public.verify(signed["Signature"], b"the message")


@pytest.mark.parametrize("spec", ["RSA_2048", "RSA_4096"])
@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])
def test_rsa_offline_encryption_decrypts_online(
    kms: Any, backend: str, spec: str, algorithm: str
) -> None:
    needs(backend, algorithm)
    key_id = create(kms, spec, "ENCRYPT_DECRYPT")
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["EncryptionAlgorithms"] == ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    key = serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    assert isinstance(key, rsa.RSAPublicKey)
    sha1 = hashes.SHA1()  # noqa: S303 - AWS's RSAES_OAEP_SHA_1, as a client uses it
    digest: hashes.HashAlgorithm = sha1 if algorithm.endswith("SHA_1") else hashes.SHA256()
    oaep = padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)
    ciphertext = key.encrypt(b"made offline", oaep)
    plain = kms.decrypt(KeyId=key_id, CiphertextBlob=ciphertext, EncryptionAlgorithm=algorithm)
    assert (plain["Plaintext"], plain["EncryptionAlgorithm"]) == (b"made offline", algorithm)
    online = kms.encrypt(KeyId=key_id, Plaintext=b"made online", EncryptionAlgorithm=algorithm)
    assert online["EncryptionAlgorithm"] == algorithm
    again = kms.decrypt(
        KeyId=key_id, CiphertextBlob=online["CiphertextBlob"], EncryptionAlgorithm=algorithm
    )
    assert again["Plaintext"] == b"made online"
    limit = {"RSA_2048": 256, "RSA_4096": 512}[spec] - 2 * digest.digest_size - 2
    code, text = error(
        kms.encrypt, KeyId=key_id, Plaintext=b"x" * (limit + 1), EncryptionAlgorithm=algorithm
    )
    assert (code, text) == (
        "ValidationException",
        f"Algorithm {algorithm} and key spec {spec} cannot encrypt data larger than {limit} bytes.",
    )


@pytest.mark.parametrize("bits", [224, 256, 384, 512])
def test_hmac_keys(kms: Any, bits: int) -> None:
    key_id = create(kms, f"HMAC_{bits}", "GENERATE_VERIFY_MAC")
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["MacAlgorithms"] == [f"HMAC_SHA_{bits}"]
    algorithm = f"HMAC_SHA_{bits}"
    made = kms.generate_mac(KeyId=key_id, Message=b"message", MacAlgorithm=algorithm)
    assert len(made["Mac"]) == bits // 8 and made["KeyId"] == arn(key_id)
    ok = kms.verify_mac(KeyId=key_id, Message=b"message", MacAlgorithm=algorithm, Mac=made["Mac"])
    assert ok == {**ok, "MacValid": True, "MacAlgorithm": algorithm, "KeyId": arn(key_id)}
    code, text = error(
        kms.verify_mac, KeyId=key_id, Message=b"other", MacAlgorithm=algorithm, Mac=made["Mac"]
    )
    assert code == "KMSInvalidMacException" and not text
    other = "HMAC_SHA_256" if bits != 256 else "HMAC_SHA_512"
    code, text = error(kms.generate_mac, KeyId=key_id, Message=b"m", MacAlgorithm=other)
    assert (code, text) == (
        "InvalidKeyUsageException",
        f"Algorithm {other} is incompatible with key spec HMAC_{bits}.",
    )
    # An HMAC key is never an AES key: Encrypt with it is refused.
    code, text = error(kms.encrypt, KeyId=key_id, Plaintext=b"p")
    assert code == "InvalidKeyUsageException"
    assert text == f"{arn(key_id)} key usage is GENERATE_VERIFY_MAC which is not valid for Encrypt."


@pytest.mark.parametrize("spec", ["ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521"])
def test_derive_shared_secret_equals_offline_ecdh(kms: Any, backend: str, spec: str) -> None:
    needs(backend, "KEY_AGREEMENT")
    key_id = create(kms, spec, "KEY_AGREEMENT")
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyAgreementAlgorithms"] == ["ECDH"]
    ours = serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    assert isinstance(ours, ec.EllipticCurvePublicKey)
    peer = ec.generate_private_key(ours.curve)
    peer_der = peer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    derived = kms.derive_shared_secret(
        KeyId=key_id, KeyAgreementAlgorithm="ECDH", PublicKey=peer_der
    )
    assert derived["SharedSecret"] == peer.exchange(ec.ECDH(), ours)
    assert (derived["KeyAgreementAlgorithm"], derived["KeyOrigin"]) == ("ECDH", "AWS_KMS")
    code, _ = error(
        kms.derive_shared_secret, KeyId=key_id, KeyAgreementAlgorithm="ECDH", PublicKey=b"junk"
    )
    assert code == "ValidationException"


@pytest.mark.parametrize("spec", ["ML_KEM_768", "ML_KEM_1024"])
def test_ml_kem_shared_secrets_are_equal(kms: Any, backend: str, spec: str) -> None:
    needs(backend, spec)
    key_id = create(kms, spec, "ENCAPSULATE_DECAPSULATE")
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["EncapsulationAlgorithms"] == ["ML_KEM"]
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    assert isinstance(public, mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey)
    secret, ciphertext = public.encapsulate()
    opened = kms.decapsulate(
        KeyId=key_id, SharedSecretCiphertextBlob=ciphertext, EncapsulationAlgorithm="ML_KEM"
    )
    assert opened["SharedSecret"] == secret
    made = kms.encapsulate(KeyId=key_id, EncapsulationAlgorithm="ML_KEM")
    again = kms.decapsulate(
        KeyId=key_id, SharedSecretCiphertextBlob=made["SharedSecretCiphertextBlob"],
        EncapsulationAlgorithm="ML_KEM",
    )  # fmt: skip
    assert again["SharedSecret"] == made["SharedSecret"]


def test_wrong_usage_answers_awss_messages(kms: Any) -> None:
    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    signer = create(kms, "RSA_2048", "SIGN_VERIFY")
    code, text = error(kms.sign, KeyId=symmetric, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    assert (code, text) == (
        "InvalidKeyUsageException",
        f"{arn(symmetric)} key usage is ENCRYPT_DECRYPT which is not valid for Sign.",
    )
    code, text = error(kms.encrypt, KeyId=signer, Plaintext=b"p")
    assert (code, text) == (
        "InvalidKeyUsageException",
        f"{arn(signer)} key usage is SIGN_VERIFY which is not valid for Encrypt.",
    )
    code, text = error(kms.generate_mac, KeyId=symmetric, Message=b"m", MacAlgorithm="HMAC_SHA_256")
    assert (code, text) == (
        "InvalidKeyUsageException",
        f"{arn(symmetric)} key usage is ENCRYPT_DECRYPT which is not valid for GenerateMac.",
    )
    code, text = error(kms.sign, KeyId=signer, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    assert (code, text) == (
        "InvalidKeyUsageException",
        "Algorithm ECDSA_SHA_256 is incompatible with key spec RSA_2048.",
    )
    code, _ = error(kms.get_public_key, KeyId=symmetric)
    assert code == "UnsupportedOperationException"
    code, _ = error(kms.rotate_key_on_demand, KeyId=signer)
    assert code == "UnsupportedOperationException"
    code, _ = error(kms.enable_key_rotation, KeyId=signer)
    assert code == "UnsupportedOperationException"


def test_create_key_refuses_what_does_not_fit(kms: Any) -> None:
    code, text = error(kms.create_key, KeySpec="HMAC_256")
    assert (code, text) == (
        "ValidationException",
        "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys.",
    )
    code, text = error(kms.create_key, KeySpec="RSA_2048", KeyUsage="KEY_AGREEMENT")
    assert (code, text) == (
        "ValidationException",
        "KeyUsage KEY_AGREEMENT is not compatible with KeySpec RSA_2048",
    )
    for spec, usage in (("SM2", "SIGN_VERIFY"), ("ML_KEM_512", "ENCAPSULATE_DECAPSULATE")):
        code, text = error(kms.create_key, KeySpec=spec, KeyUsage=usage)
        assert code == "UnsupportedOperationException" and "not available" in (text or "")
    code, text = error(
        kms.sign, KeyId=create(kms, "ECC_NIST_EDWARDS25519", "SIGN_VERIFY"),
        Message=hashlib.sha512(b"m").digest(), MessageType="DIGEST",
        SigningAlgorithm="ED25519_PH_SHA_512",
    )  # fmt: skip
    assert code == "UnsupportedOperationException" and "Ed25519ph" in (text or "")


@pytest.mark.parametrize(
    "spec", ["RSA_2048", "ECC_NIST_P256", "ECC_SECG_P256K1", "ECC_NIST_EDWARDS25519", "ML_KEM_768"]
)
def test_data_key_pairs_decrypt_and_match(kms: Any, spec: str) -> None:
    wrapping = kms.create_key()["KeyMetadata"]["KeyId"]
    context = {"purpose": "pair"}
    pair = kms.generate_data_key_pair(KeyId=wrapping, KeyPairSpec=spec, EncryptionContext=context)
    assert (pair["KeyPairSpec"], pair["KeyId"]) == (spec, arn(wrapping))
    private = serialization.load_der_private_key(pair["PrivateKeyPlaintext"], password=None)
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public == pair["PublicKey"]  # the halves belong together
    opened = kms.decrypt(CiphertextBlob=pair["PrivateKeyCiphertextBlob"], EncryptionContext=context)
    assert opened["Plaintext"] == pair["PrivateKeyPlaintext"]
    bare = kms.generate_data_key_pair_without_plaintext(KeyId=wrapping, KeyPairSpec=spec)
    assert "PrivateKeyPlaintext" not in bare
    private = serialization.load_der_private_key(
        kms.decrypt(CiphertextBlob=bare["PrivateKeyCiphertextBlob"])["Plaintext"], password=None
    )
    assert (
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == bare["PublicKey"]
    )


def test_data_key_pairs_need_a_symmetric_key(kms: Any) -> None:
    signer = create(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    code, text = error(kms.generate_data_key_pair, KeyId=signer, KeyPairSpec="ECC_NIST_P256")
    assert (code, text) == (
        "InvalidKeyUsageException",
        f"{arn(signer)} key usage is SIGN_VERIFY which is not valid for GenerateDataKeyPair.",
    )
    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    code, _ = error(kms.generate_data_key_pair, KeyId=symmetric, KeyPairSpec="SM2")
    assert code == "UnsupportedOperationException"


def test_an_rsa_ciphertext_that_does_not_open_is_invalid_ciphertext(kms: Any) -> None:
    key_id = create(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    other = create(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    made = kms.encrypt(KeyId=other, Plaintext=b"p", EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    damaged = bytearray(made["CiphertextBlob"])
    damaged[100] ^= 1
    # On Vault, transit answers these with a 500 ("failed to RSA decrypt"): an answer, not an
    # outage, so no retry: the error comes at once.
    for blob in (made["CiphertextBlob"], bytes(damaged), b"\x01" * 256, b"short"):
        began = time.monotonic()
        code, _ = error(
            kms.decrypt, KeyId=key_id, CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_256"
        )
        assert code == "InvalidCiphertextException"
        assert time.monotonic() - began < 2.0
    back = kms.decrypt(
        KeyId=other, CiphertextBlob=made["CiphertextBlob"], EncryptionAlgorithm="RSAES_OAEP_SHA_256"
    )
    assert back["Plaintext"] == b"p"


def test_a_disabled_key_signs_macs_and_decrypts_nothing(kms: Any) -> None:
    signer = create(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    mac = create(kms, "HMAC_256", "GENERATE_VERIFY_MAC")
    rsa_key = create(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    made = kms.encrypt(KeyId=rsa_key, Plaintext=b"p", EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    for key_id in (signer, mac, rsa_key):
        kms.disable_key(KeyId=key_id)
    calls: list[tuple[Any, dict[str, Any]]] = [
        (kms.sign, {"KeyId": signer, "Message": b"m", "SigningAlgorithm": "ECDSA_SHA_256"}),
        (kms.get_public_key, {"KeyId": signer}),
        (kms.generate_mac, {"KeyId": mac, "Message": b"m", "MacAlgorithm": "HMAC_SHA_256"}),
        (kms.decrypt, {"KeyId": rsa_key, "CiphertextBlob": made["CiphertextBlob"],
                       "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
    ]  # fmt: skip
    for call, params in calls:
        code, _ = error(call, **params)
        assert code == "DisabledException", call
    kms.enable_key(KeyId=mac)
    assert kms.generate_mac(KeyId=mac, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]


def test_the_vault_backend_refuses_what_transit_cannot_hold(kms: Any, backend: str) -> None:
    """On Vault: the specs transit has no key type for, ECDH keys, and RSAES_OAEP_SHA_1 are
    refused with UnsupportedOperationException naming the backend (on Local they work)."""
    specs = [
        ("ECC_SECG_P256K1", "SIGN_VERIFY"), ("ML_DSA_44", "SIGN_VERIFY"),
        ("ML_DSA_65", "SIGN_VERIFY"), ("ML_DSA_87", "SIGN_VERIFY"),
        ("ML_KEM_768", "ENCAPSULATE_DECAPSULATE"), ("ML_KEM_1024", "ENCAPSULATE_DECAPSULATE"),
        ("ECC_NIST_P256", "KEY_AGREEMENT"), ("ECC_NIST_P384", "KEY_AGREEMENT"),
        ("ECC_NIST_P521", "KEY_AGREEMENT"),
    ]  # fmt: skip
    rsa_key = create(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    meta = kms.describe_key(KeyId=rsa_key)["KeyMetadata"]
    assert meta["EncryptionAlgorithms"] == ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]  # as AWS
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=rsa_key)["PublicKey"])
    assert isinstance(public, rsa.RSAPublicKey)
    sha1 = hashes.SHA1()  # noqa: S303 - AWS's RSAES_OAEP_SHA_1, as a client uses it
    offline = public.encrypt(b"p", padding.OAEP(mgf=padding.MGF1(sha1), algorithm=sha1, label=None))
    if backend == "local":
        for spec, usage in specs:
            create(kms, spec, usage)
        made = kms.encrypt(KeyId=rsa_key, Plaintext=b"p", EncryptionAlgorithm="RSAES_OAEP_SHA_1")
        assert made["CiphertextBlob"]
        return
    for spec, usage in specs:
        code, text = error(kms.create_key, KeySpec=spec, KeyUsage=usage)
        assert code == "UnsupportedOperationException", spec
        assert VAULT_CANNOT[usage if usage == "KEY_AGREEMENT" else spec] in (text or ""), text
        assert "vault backend" in (text or ""), text
    # RSAES_OAEP_SHA_1: refused both ways (an Encrypt made offline-style by the server would
    # never decrypt), after the state and usage checks.
    code, text = error(
        kms.encrypt, KeyId=rsa_key, Plaintext=b"p", EncryptionAlgorithm="RSAES_OAEP_SHA_1"
    )
    assert code == "UnsupportedOperationException"
    assert VAULT_CANNOT["RSAES_OAEP_SHA_1"] in (text or "")
    code, text = error(
        kms.decrypt, KeyId=rsa_key, CiphertextBlob=offline, EncryptionAlgorithm="RSAES_OAEP_SHA_1"
    )
    assert code == "UnsupportedOperationException"
    assert VAULT_CANNOT["RSAES_OAEP_SHA_1"] in (text or "")
    kms.disable_key(KeyId=rsa_key)
    code, _ = error(
        kms.decrypt, KeyId=rsa_key, CiphertextBlob=offline, EncryptionAlgorithm="RSAES_OAEP_SHA_1"
    )
    assert code == "DisabledException"


def test_re_encrypt_between_symmetric_and_rsa_keys(kms: Any, backend: str) -> None:
    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    rsa_key = create(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    made = kms.encrypt(KeyId=symmetric, Plaintext=b"moved", EncryptionContext={"a": "b"})
    to_rsa = kms.re_encrypt(
        CiphertextBlob=made["CiphertextBlob"], SourceEncryptionContext={"a": "b"},
        DestinationKeyId=rsa_key, DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_256",
    )  # fmt: skip
    assert (to_rsa["SourceKeyId"], to_rsa["KeyId"]) == (arn(symmetric), arn(rsa_key))
    assert to_rsa["DestinationEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    back = kms.re_encrypt(
        CiphertextBlob=to_rsa["CiphertextBlob"], SourceKeyId=rsa_key,
        SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256", DestinationKeyId=symmetric,
    )  # fmt: skip
    assert back["SourceEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert kms.decrypt(CiphertextBlob=back["CiphertextBlob"])["Plaintext"] == b"moved"
    code, text = error(
        kms.re_encrypt, CiphertextBlob=to_rsa["CiphertextBlob"],
        SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256", DestinationKeyId=symmetric,
    )  # fmt: skip
    assert (code, text) == (
        "ValidationException",
        "SourceKeyId is required to decrypt with RSAES_OAEP_SHA_256",
    )


def test_get_key_last_usage(srv: KmsThread, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    fresh = kms.get_key_last_usage(KeyId=key)
    assert (fresh["KeyId"], fresh["KeyLastUsage"]) == (key, {})
    # Created after tracking began: an empty KeyLastUsage means "never used since creation".
    assert fresh["TrackingStartDate"] == fresh["KeyCreationDate"]
    made = kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"a": "b"})
    request_id = made["ResponseMetadata"]["RequestId"]
    code, _ = error(
        kms.decrypt, CiphertextBlob=made["CiphertextBlob"], EncryptionContext={"a": "c"}
    )
    assert code == "InvalidCiphertextException"  # a failed operation is no use
    last = kms.get_key_last_usage(KeyId=key)["KeyLastUsage"]
    assert (last["Operation"], last["KmsRequestId"]) == ("Encrypt", request_id)
    signer = create(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    kms.sign(KeyId=signer, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    assert kms.get_key_last_usage(KeyId=signer)["KeyLastUsage"]["Operation"] == "Sign"

    # Another node on the same keystore sees a use once the node that made it has stored it
    # (every maintenance pass, and at shutdown).
    other = KmsThread(replace(srv.settings, audit_log="off")).start()
    try:
        other_kms = boto3.client(
            "kms", endpoint_url=other.url, region_name="us-east-1", aws_access_key_id=ROOT_USER,
            aws_secret_access_key=ROOT_PASSWORD, config=Config(retries={"max_attempts": 1}),
        )  # fmt: skip
        assert other_kms.get_key_last_usage(KeyId=key)["KeyLastUsage"] == {}
        srv.run(srv.app.runtime.service.flush_last_uses())
        seen = other_kms.get_key_last_usage(KeyId=key)["KeyLastUsage"]
        assert (seen["Operation"], seen["KmsRequestId"]) == ("Encrypt", request_id)
        assert seen["Timestamp"] == last["Timestamp"]
    finally:
        other.stop()
