"""The one table of key specs: for each AWS `KeySpec`, its key usages, their algorithms, and limits.

Everything that depends on a key's type asks this table: `CreateKey` validation, the algorithm
lists `DescribeKey` reports, which operation a key may serve, message and plaintext limits, and
which backend can hold it. Adding a key spec means adding its row here and the keystores'
primitive for it; nothing else branches on spec names.

Facts are AWS KMS's (Developer Guide, "Key spec reference"); the names are botocore's model enums:

    spec                      usages (algorithms)
    SYMMETRIC_DEFAULT         ENCRYPT_DECRYPT (SYMMETRIC_DEFAULT)
    RSA_2048/3072/4096        ENCRYPT_DECRYPT (RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256)
                              SIGN_VERIFY (RSASSA_PSS_SHA_256/384/512, RSASSA_PKCS1_V1_5_SHA_256/384/512)
    ECC_NIST_P256/P384/P521   SIGN_VERIFY (ECDSA_SHA_256/384/512, one per curve), KEY_AGREEMENT (ECDH)
    ECC_SECG_P256K1           SIGN_VERIFY (ECDSA_SHA_256)
    ECC_NIST_EDWARDS25519     SIGN_VERIFY (ED25519_SHA_512, ED25519_PH_SHA_512)
    ML_DSA_44/65/87           SIGN_VERIFY (ML_DSA_SHAKE_256)
    ML_KEM_512/768/1024       ENCAPSULATE_DECAPSULATE (ML_KEM)
    HMAC_224/256/384/512      GENERATE_VERIFY_MAC (HMAC_SHA_224/256/384/512, one per size)
    SM2                       SIGN_VERIFY (SM2DSA), ENCRYPT_DECRYPT (SM2PKE), KEY_AGREEMENT (ECDH)

`available` is False where the `cryptography` library has no implementation (SM2, ML_KEM_512):
such a spec is refused with the reason in `unavailable_reason`, on every backend.

Seven rows are s3kms's own, for the KMIP objects AWS has no spec for (`kmip_only`: neither the
AWS API nor the admin API makes them, and no AWS operation uses them): AES_128 and AES_192
(KMIP symmetric keys of those lengths); SECRET_DATA, OPAQUE_DATA, CERTIFICATE and SPLIT_KEY
(KMIP Secret Data, Opaque Object, Certificate and Split Key: bytes stored and handed back);
PUBLIC_KEY (a KMIP Public Key: its SubjectPublicKeyInfo).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
SIGN_VERIFY = "SIGN_VERIFY"
GENERATE_VERIFY_MAC = "GENERATE_VERIFY_MAC"
KEY_AGREEMENT = "KEY_AGREEMENT"
ENCAPSULATE_DECAPSULATE = "ENCAPSULATE_DECAPSULATE"

# Where DescribeKey lists a usage's algorithms.
ALGORITHM_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        ENCRYPT_DECRYPT: "EncryptionAlgorithms",
        SIGN_VERIFY: "SigningAlgorithms",
        GENERATE_VERIFY_MAC: "MacAlgorithms",
        KEY_AGREEMENT: "KeyAgreementAlgorithms",
        ENCAPSULATE_DECAPSULATE: "EncapsulationAlgorithms",
    }
)

MAX_MESSAGE = 4096  # bytes: Sign/Verify RAW messages and GenerateMac/VerifyMac messages

# The hash each algorithm uses, and so the length of a DIGEST message for it (bytes).
DIGEST_SIZES: Mapping[str, int] = MappingProxyType(
    {
        "RSASSA_PSS_SHA_256": 32, "RSASSA_PSS_SHA_384": 48, "RSASSA_PSS_SHA_512": 64,
        "RSASSA_PKCS1_V1_5_SHA_256": 32, "RSASSA_PKCS1_V1_5_SHA_384": 48,
        "RSASSA_PKCS1_V1_5_SHA_512": 64,
        "ECDSA_SHA_256": 32, "ECDSA_SHA_384": 48, "ECDSA_SHA_512": 64,
        "ED25519_PH_SHA_512": 64, "SM2DSA": 32,
        "ML_DSA_SHAKE_256": 64,  # EXTERNAL_MU: the 64-byte mu
    }
)  # fmt: skip

# OAEP's hash length per algorithm: the plaintext limit is modulus bytes - 2 x this - 2.
_OAEP_HASH_BYTES: Mapping[str, int] = MappingProxyType(
    {"RSAES_OAEP_SHA_1": 20, "RSAES_OAEP_SHA_256": 32}
)


@dataclass(frozen=True)
class KeySpecInfo:
    name: str
    family: str  # symmetric | rsa | ecc | ed25519 | ml_dsa | ml_kem | hmac | sm2
    usages: Mapping[str, tuple[str, ...]]  # usage -> its algorithms, in AWS's order
    size: int = 0  # RSA modulus bits; HMAC key bits; ML parameter set
    curve: str | None = None  # ECC: the curve's name in `cryptography`
    available: bool = True
    unavailable_reason: str = ""
    # The pre-2022 `CustomerMasterKeySpec` that DescribeKey still reports (None: not reported).
    legacy_name: str | None = field(default=None)
    kmip_only: bool = False  # no AWS KeySpec: made through the KMIP API only

    @property
    def symmetric(self) -> bool:
        return self.family == "symmetric"

    @property
    def asymmetric(self) -> bool:
        return self.family in ("rsa", "ecc", "ed25519", "ml_dsa", "ml_kem", "sm2")

    def algorithms(self, usage: str) -> tuple[str, ...]:
        return self.usages.get(usage, ())

    def max_plaintext(self, algorithm: str) -> int:
        """The largest plaintext an RSA key encrypts with `algorithm` (bytes)."""
        return self.size // 8 - 2 * _OAEP_HASH_BYTES[algorithm] - 2


def _rsa(bits: int) -> KeySpecInfo:
    name = f"RSA_{bits}"
    return KeySpecInfo(
        name, "rsa",
        {
            ENCRYPT_DECRYPT: ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"),
            SIGN_VERIFY: (
                "RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
                "RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384",
                "RSASSA_PKCS1_V1_5_SHA_512",
            ),
        },
        size=bits, legacy_name=name,
    )  # fmt: skip


def _ecc(name: str, curve: str, signing: str, agreement: bool) -> KeySpecInfo:
    usages: dict[str, tuple[str, ...]] = {SIGN_VERIFY: (signing,)}
    if agreement:
        usages[KEY_AGREEMENT] = ("ECDH",)
    return KeySpecInfo(name, "ecc", usages, curve=curve, legacy_name=name)


def _hmac(bits: int) -> KeySpecInfo:
    name = f"HMAC_{bits}"
    return KeySpecInfo(
        name, "hmac", {GENERATE_VERIFY_MAC: (f"HMAC_SHA_{bits}",)}, size=bits, legacy_name=name
    )


_NO_ML_KEM_512 = (
    "ML_KEM_512 is not available: the cryptography library implements ML-KEM-768 and -1024 only"
)
_NO_SM2 = "SM2 is not available: the cryptography library has no SM2 (AWS offers it in China Regions only)"

_SPECS = (
    KeySpecInfo(
        "SYMMETRIC_DEFAULT", "symmetric", {ENCRYPT_DECRYPT: ("SYMMETRIC_DEFAULT",)},
        size=256, legacy_name="SYMMETRIC_DEFAULT",
    ),
    _rsa(2048), _rsa(3072), _rsa(4096),
    _ecc("ECC_NIST_P256", "secp256r1", "ECDSA_SHA_256", agreement=True),
    _ecc("ECC_NIST_P384", "secp384r1", "ECDSA_SHA_384", agreement=True),
    _ecc("ECC_NIST_P521", "secp521r1", "ECDSA_SHA_512", agreement=True),
    _ecc("ECC_SECG_P256K1", "secp256k1", "ECDSA_SHA_256", agreement=False),
    KeySpecInfo(
        "ECC_NIST_EDWARDS25519", "ed25519", {SIGN_VERIFY: ("ED25519_SHA_512", "ED25519_PH_SHA_512")}
    ),
    *(KeySpecInfo(f"ML_DSA_{n}", "ml_dsa", {SIGN_VERIFY: ("ML_DSA_SHAKE_256",)}, size=n)
      for n in (44, 65, 87)),
    KeySpecInfo(
        "ML_KEM_512", "ml_kem", {ENCAPSULATE_DECAPSULATE: ("ML_KEM",)}, size=512,
        available=False, unavailable_reason=_NO_ML_KEM_512,
    ),
    *(KeySpecInfo(f"ML_KEM_{n}", "ml_kem", {ENCAPSULATE_DECAPSULATE: ("ML_KEM",)}, size=n)
      for n in (768, 1024)),
    _hmac(224), _hmac(256), _hmac(384), _hmac(512),
    # KMIP-only (kmip_only): usage ENCRYPT_DECRYPT with no AWS algorithm, so AWS operations
    # refuse them as incompatible; DescribeKey lists no algorithm.
    *(KeySpecInfo(f"AES_{n}", "aes", {ENCRYPT_DECRYPT: ()}, size=n, kmip_only=True)
      for n in (128, 192)),
    *(KeySpecInfo(name, "data", {ENCRYPT_DECRYPT: ()}, kmip_only=True)
      for name in ("SECRET_DATA", "OPAQUE_DATA", "CERTIFICATE", "SPLIT_KEY")),
    # A KMIP Public Key object (the public half of a key pair, or one registered alone): its
    # SubjectPublicKeyInfo DER.
    KeySpecInfo("PUBLIC_KEY", "public", {ENCRYPT_DECRYPT: ()}, kmip_only=True),
    KeySpecInfo(
        "SM2", "sm2",
        {SIGN_VERIFY: ("SM2DSA",), ENCRYPT_DECRYPT: ("SM2PKE",), KEY_AGREEMENT: ("ECDH",)},
        available=False, unavailable_reason=_NO_SM2, legacy_name="SM2",
    ),
)  # fmt: skip

KEY_SPECS: Mapping[str, KeySpecInfo] = MappingProxyType({s.name: s for s in _SPECS})

# Algorithms of an available spec that the library cannot compute: DescribeKey lists them as AWS
# does, and an operation asking for one is refused with the reason.
UNAVAILABLE_ALGORITHMS: Mapping[str, str] = MappingProxyType(
    {
        "ED25519_PH_SHA_512": (
            "ED25519_PH_SHA_512 is not available: the cryptography library has no Ed25519ph "
            "(RFC 8032 pre-hashed signatures); use ED25519_SHA_512"
        ),
    }
)
SYMMETRIC_DEFAULT = KEY_SPECS["SYMMETRIC_DEFAULT"]


def spec(name: str) -> KeySpecInfo:
    """The row for a spec name; KeyError for a name that is no AWS key spec."""
    return KEY_SPECS[name]
