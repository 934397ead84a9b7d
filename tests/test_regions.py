"""Regions and multi-Region keys through a real server, with boto3 clients signing for each
region, on both backends (Local, and Vault transit on a real OpenBao).

One s3kms serves us-east-1 (its home, `--region`), eu-west-1 and ap-southeast-1 (`--regions`),
as AWS's regional endpoints are: a key, alias or ciphertext of one region means nothing in
another (keystore/regional.py); a multi-Region key's replicas share its id and material and have
their own ARN, policy, tags, description and state (service.py, protocols/awskms/regions.py).
Messages marked AWS below are AWS's recorded ones (LocalStack's AWS-validated snapshots); the
others are s3kms's own (docs/api.md#regions-and-multi-region-keys).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from s3kms.access.documents import default_key_policy
from s3kms.auth import sigv4
from s3kms.client import Client
from s3kms.config import AnyRegion, Settings, served_regions
from s3kms.keystore.vault import VaultSettings

from kmsserver import (
    MASTER_KEY,
    ROOT_PASSWORD,
    ROOT_USER,
    KmsProcess,
    KmsThread,
    signed_admin,
    thread_settings,
)
from offline import verify_signature
from openbao import VaultApi

HOME, EU, AP = "us-east-1", "eu-west-1", "ap-southeast-1"
REGIONS = f"{EU},{AP}"
ACCOUNT = "000000000000"
DAY = 86400
MRK_ID = re.compile(r"mrk-[0-9a-f]{32}")
ROOT_ARN = f"arn:aws:iam::{ACCOUNT}:root"

Clients = Callable[[str], Any]


def arn(region: str, key_id: str) -> str:
    return f"arn:aws:kms:{region}:{ACCOUNT}:key/{key_id}"


def boto(url: str, region: str, access: str = ROOT_USER, secret: str = ROOT_PASSWORD) -> Any:
    return boto3.client(
        "kms", endpoint_url=url, region_name=region, aws_access_key_id=access,
        aws_secret_access_key=secret, config=Config(retries={"total_max_attempts": 1}),
    )  # fmt: skip


def error(call: Any, **kwargs: Any) -> tuple[str, str | None]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return response["Error"]["Code"], response["Error"].get("Message")


def not_found(region: str, key_id: str) -> tuple[str, str]:
    return "NotFoundException", f"Key '{arn(region, key_id)}' does not exist"


def vault_settings(bao: VaultApi, name: str) -> VaultSettings:
    # (the session's server is shared: this server sees only its own keys)
    prefix = f"{name}-{uuid.uuid4().hex[:12]}"
    return VaultSettings(addresses=(bao.addr,), token=bao.root_token, kv_prefix=prefix)


@pytest.fixture(scope="module", params=["local", pytest.param("vault", marks=pytest.mark.vault)])
def backend(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, backend: str, request: pytest.FixtureRequest
) -> Iterator[KmsThread]:
    data = tmp_path_factory.mktemp("regions") / "data"
    if backend == "local":
        settings = thread_settings(data, regions=REGIONS)
    else:
        bao: VaultApi = request.getfixturevalue("bao")  # a real OpenBao (or the external Vault)
        settings = thread_settings(
            data, regions=REGIONS, backend="vault", vault=vault_settings(bao, "regions")
        )
    server = KmsThread(settings).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kms(srv: KmsThread) -> Clients:
    """The boto3 client of a region (one per region, made once)."""
    made: dict[str, Any] = {}

    def client(region: str) -> Any:
        if region not in made:
            made[region] = boto(srv.url, region)
        return made[region]

    return client


def later(srv: KmsThread, seconds: float) -> None:
    """Run the maintenance pass `seconds` from now, then bring the clock back (boto3's
    signatures would be more than 15 minutes off the server's clock otherwise)."""
    srv.clock.offset += seconds
    try:
        srv.run(srv.app.runtime.service.run_due_work())
    finally:
        srv.clock.offset -= seconds


def mrk(kms: Clients, **kwargs: Any) -> str:
    """A multi-Region primary key in the home region."""
    key_id: str = kms(HOME).create_key(MultiRegion=True, **kwargs)["KeyMetadata"]["KeyId"]
    return key_id


def replicated(kms: Clients, **kwargs: Any) -> str:
    """A multi-Region primary key in the home region with its replica in eu-west-1."""
    key_id = mrk(kms, **kwargs)
    kms(HOME).replicate_key(KeyId=key_id, ReplicaRegion=EU)
    return key_id


def configuration(kms: Clients, region: str, key_id: str) -> dict[str, Any]:
    meta = kms(region).describe_key(KeyId=key_id)["KeyMetadata"]
    config: dict[str, Any] = meta["MultiRegionConfiguration"]
    return config


def expected_configuration(
    region: str, key_id: str, primary: str, replicas: list[str]
) -> dict[str, Any]:
    return {
        "MultiRegionKeyType": "PRIMARY" if region == primary else "REPLICA",
        "PrimaryKey": {"Arn": arn(primary, key_id), "Region": primary},
        "ReplicaKeys": [{"Arn": arn(r, key_id), "Region": r} for r in replicas],
    }


# -- region isolation ---------------------------------------------------------------------------


def test_a_key_belongs_to_its_region(kms: Clients) -> None:
    home = kms(HOME).create_key(Description="home")["KeyMetadata"]
    eu = kms(EU).create_key(Description="eu")["KeyMetadata"]
    assert home["Arn"] == arn(HOME, home["KeyId"])
    assert eu["Arn"] == arn(EU, eu["KeyId"])
    assert home["MultiRegion"] is False and "MultiRegionConfiguration" not in home
    # In another region the key id names nothing: AWS's message, naming that region's ARN.
    assert error(kms(EU).describe_key, KeyId=home["KeyId"]) == not_found(EU, home["KeyId"])
    assert error(kms(HOME).describe_key, KeyId=eu["KeyId"]) == not_found(HOME, eu["KeyId"])
    assert error(kms(AP).describe_key, KeyId=eu["KeyId"]) == not_found(AP, eu["KeyId"])
    assert error(kms(EU).encrypt, KeyId=home["KeyId"], Plaintext=b"x") == not_found(
        EU, home["KeyId"]
    )
    assert error(kms(EU).disable_key, KeyId=home["KeyId"])[0] == "NotFoundException"
    # A key ARN of another region is no key here either (s3kms's message names the ARN).
    code, message = error(kms(EU).describe_key, KeyId=home["Arn"])
    assert code == "NotFoundException" and message is not None and home["Arn"] in message
    assert error(kms(HOME).encrypt, KeyId=eu["Arn"], Plaintext=b"x")[0] == "NotFoundException"
    # Each region lists its own keys only.
    listed = {r: {k["KeyId"] for k in kms(r).list_keys(Limit=1000)["Keys"]} for r in (HOME, EU)}
    assert home["KeyId"] in listed[HOME] and home["KeyId"] not in listed[EU]
    assert eu["KeyId"] in listed[EU] and eu["KeyId"] not in listed[HOME]
    arns = {k["KeyArn"] for k in kms(EU).list_keys(Limit=1000)["Keys"]}
    assert all(a.startswith(f"arn:aws:kms:{EU}:{ACCOUNT}:key/") for a in arns)
    assert not {k["KeyId"] for k in kms(AP).list_keys(Limit=1000)["Keys"]} & (
        listed[HOME] | listed[EU]
    )


def test_list_keys_pages_within_a_region(kms: Clients) -> None:
    made = {kms(AP).create_key()["KeyMetadata"]["KeyId"] for _ in range(5)}
    seen: list[str] = []
    page = kms(AP).list_keys(Limit=2)
    while True:
        seen += [k["KeyId"] for k in page["Keys"]]
        if not page["Truncated"]:
            break
        page = kms(AP).list_keys(Limit=2, Marker=page["NextMarker"])
    assert made <= set(seen) and len(seen) == len(set(seen))
    home = {k["KeyId"] for k in kms(HOME).list_keys(Limit=1000)["Keys"]}
    assert not set(seen) & home


def test_the_same_alias_name_in_two_regions(kms: Clients) -> None:
    name = f"alias/shared-{uuid.uuid4().hex[:8]}"
    home = kms(HOME).create_key()["KeyMetadata"]["KeyId"]
    eu = kms(EU).create_key()["KeyMetadata"]["KeyId"]
    kms(HOME).create_alias(AliasName=name, TargetKeyId=home)
    kms(EU).create_alias(AliasName=name, TargetKeyId=eu)

    def aliases(region: str) -> dict[str, tuple[str, str]]:
        listed = kms(region).list_aliases(Limit=100)["Aliases"]
        return {a["AliasName"]: (a["TargetKeyId"], a["AliasArn"]) for a in listed}

    assert aliases(HOME)[name] == (home, f"arn:aws:kms:{HOME}:{ACCOUNT}:{name}")
    assert aliases(EU)[name] == (eu, f"arn:aws:kms:{EU}:{ACCOUNT}:{name}")
    assert name not in aliases(AP)
    assert kms(EU).describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == eu
    blob = kms(EU).encrypt(KeyId=name, Plaintext=b"eu data")["CiphertextBlob"]
    assert kms(EU).decrypt(CiphertextBlob=blob)["KeyId"] == arn(EU, eu)
    # An alias may only name a key of its own region.
    assert error(kms(HOME).update_alias, AliasName=name, TargetKeyId=eu)[0] == ("NotFoundException")
    assert error(kms(AP).describe_key, KeyId=name)[0] == "NotFoundException"
    kms(EU).delete_alias(AliasName=name)
    assert name not in aliases(EU)
    assert aliases(HOME)[name][0] == home


def test_a_single_region_ciphertext_does_not_decrypt_in_another_region(kms: Clients) -> None:
    key_id = kms(HOME).create_key()["KeyMetadata"]["KeyId"]
    blob = kms(HOME).encrypt(KeyId=key_id, Plaintext=b"home only")["CiphertextBlob"]
    # The key the blob names does not exist in eu-west-1: to that region it is a ciphertext of
    # no key of its own, which AWS answers InvalidCiphertextException (with no message).
    assert error(kms(EU).decrypt, CiphertextBlob=blob) == ("InvalidCiphertextException", "")
    # Naming the key by its ARN: that ARN is not one of eu-west-1's keys.
    code, _ = error(kms(EU).decrypt, CiphertextBlob=blob, KeyId=arn(HOME, key_id))
    assert code == "NotFoundException"
    code, _ = error(
        kms(EU).re_encrypt, CiphertextBlob=blob, DestinationKeyId=kms(EU).create_key()[
            "KeyMetadata"
        ]["KeyId"],
    )  # fmt: skip
    assert code == "InvalidCiphertextException"
    assert kms(HOME).decrypt(CiphertextBlob=blob)["Plaintext"] == b"home only"


def test_a_region_not_served_is_a_signature_error(srv: KmsThread) -> None:
    code, message = error(boto(srv.url, "us-west-2").list_keys)
    assert code == "IncompleteSignatureException"
    assert message == (
        "The authorization header is malformed; the region 'us-west-2' is wrong; expecting "
        "'us-east-1' or another region served."
    )


def test_sts_answers_in_every_region_served(srv: KmsThread) -> None:
    for region in (HOME, EU):
        sts = boto3.client(
            "sts", endpoint_url=srv.url, region_name=region, aws_access_key_id=ROOT_USER,
            aws_secret_access_key=ROOT_PASSWORD,
        )  # fmt: skip
        assert sts.get_caller_identity()["Arn"] == ROOT_ARN


def test_the_admin_api_keeps_its_region_rules(srv: KmsThread, kms: Clients) -> None:
    # Signed for a region the AWS API serves: refused as before, naming the home region only.
    target = f"{srv.url}/rustfs/admin/v3/kms/key/list"
    headers = sigv4.sign_headers(
        "GET", target, {}, b"", access_key=ROOT_USER, secret_key=ROOT_PASSWORD,
        region=EU, service="s3", now=time.time(),
    )  # fmt: skip
    refused = httpx.get(target, headers=headers, timeout=20)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "AuthorizationHeaderMalformed"
    assert refused.json()["error"]["message"] == (
        "The authorization header is malformed; the region 'eu-west-1' is wrong; expecting "
        "'us-east-1'."
    )
    # The admin API's keys are the home region's; it lists the home region's keys only.
    name = f"admin-{uuid.uuid4().hex[:8]}"
    with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as admin:
        admin.create_key(name)
        listed = {k.key_id for k in admin.list_keys()}
    assert kms(HOME).describe_key(KeyId=name)["KeyMetadata"]["Arn"] == arn(HOME, name)
    assert error(kms(EU).describe_key, KeyId=name) == not_found(EU, name)
    eu = kms(EU).create_key()["KeyMetadata"]["KeyId"]
    assert name in listed
    assert eu not in {
        k["keyId"]
        for k in signed_admin(srv.url, "GET", "/minio/admin/v3/kms/key/list").json()["keys"]
    }
    status = signed_admin(srv.url, "GET", f"/minio/admin/v3/kms/key/status?keyName={eu}")
    assert status.status_code == 404 and status.json()["error"]["code"] == "KMSKeyNotFound"


def test_any_region_with_star(tmp_path: Path) -> None:
    srv = KmsThread(thread_settings(tmp_path / "data", regions="*")).start()
    try:
        for region in ("me-central-1", "us-gov-west-1", "eu-central-2", EU):
            meta = boto(srv.url, region).create_key()["KeyMetadata"]
            assert meta["Arn"] == arn(region, meta["KeyId"])
            assert error(boto(srv.url, HOME).describe_key, KeyId=meta["KeyId"])[0] == (
                "NotFoundException"
            )
        # A name that is no region (AWS's RegionType, at most 32 characters) is refused.
        for bad in ("eu-west", "uswest1", "eu-west-1a", "a" * 15 + "-" + "b" * 15 + "-1"):
            code, message = error(boto(srv.url, bad).list_keys)
            assert code == "IncompleteSignatureException"
            assert message is not None and f"the region '{bad}' is wrong" in message
    finally:
        srv.stop()


def test_the_regions_setting() -> None:
    assert served_regions(Settings()) is None
    assert served_regions(Settings(regions="us-east-1")) is None  # the home region only
    assert served_regions(Settings(regions=" eu-west-1 , ap-southeast-1")) == {
        HOME,
        EU,
        AP,
    }
    assert isinstance(served_regions(Settings(regions="*")), AnyRegion)
    for bad in ("*,eu-west-1", "eu_west_1", "eu-west", "EU-WEST-1"):
        with pytest.raises(ValueError, match="regions"):
            Settings(regions=bad)


def test_a_bad_regions_flag_stops_the_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
    result = subprocess.run(
        [sys.executable, "-m", "s3kms", "server", "--data-dir", str(tmp_path / "d"),
         "--regions", "eu-west-1,Mars"],
        capture_output=True, text=True, timeout=60, env=env | {"S3KMS_MASTER_KEY": MASTER_KEY},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "'Mars' is not a region name" in result.stderr
    assert not (tmp_path / "d").exists()


# -- multi-Region keys --------------------------------------------------------------------------


def test_create_a_multi_region_key(kms: Clients) -> None:
    meta = kms(HOME).create_key(MultiRegion=True, Description="primary")["KeyMetadata"]
    assert MRK_ID.fullmatch(meta["KeyId"])
    assert meta["Arn"] == arn(HOME, meta["KeyId"])
    assert meta["MultiRegion"] is True
    assert meta["MultiRegionConfiguration"] == expected_configuration(HOME, meta["KeyId"], HOME, [])
    described = kms(HOME).describe_key(KeyId=meta["KeyId"])["KeyMetadata"]
    assert described["MultiRegionConfiguration"] == meta["MultiRegionConfiguration"]
    # Made in another region, that region is its primary's.
    eu = kms(EU).create_key(MultiRegion=True)["KeyMetadata"]
    assert eu["MultiRegionConfiguration"] == expected_configuration(EU, eu["KeyId"], EU, [])
    assert error(kms(HOME).describe_key, KeyId=eu["KeyId"]) == not_found(HOME, eu["KeyId"])


def test_replicate_key(kms: Clients) -> None:
    key_id = mrk(kms, Description="primary", Tags=[{"TagKey": "side", "TagValue": "primary"}])
    answer = kms(HOME).replicate_key(
        KeyId=key_id,
        ReplicaRegion=EU,
        Description="the replica",
        Tags=[{"TagKey": "side", "TagValue": "replica"}],
    )
    replica = answer["ReplicaKeyMetadata"]
    assert replica["KeyId"] == key_id and replica["Arn"] == arn(EU, key_id)
    assert replica["MultiRegion"] is True and replica["Description"] == "the replica"
    # s3kms makes the replica at once: Enabled (AWS answers Creating, then Enabled).
    assert replica["KeyState"] == "Enabled" and replica["Enabled"] is True
    assert "CurrentKeyMaterialId" not in replica  # (AWS's answer has none: recorded)
    assert replica["MultiRegionConfiguration"] == expected_configuration(EU, key_id, HOME, [EU])
    assert answer["ReplicaPolicy"] == default_key_policy(ACCOUNT)
    assert answer["ReplicaTags"] == [{"TagKey": "side", "TagValue": "replica"}]
    # DescribeKey in both regions: one primary, one replica, the same configuration.
    assert configuration(kms, HOME, key_id) == expected_configuration(HOME, key_id, HOME, [EU])
    assert configuration(kms, EU, key_id) == expected_configuration(EU, key_id, HOME, [EU])
    described = kms(EU).describe_key(KeyId=key_id)["KeyMetadata"]
    primary = kms(HOME).describe_key(KeyId=key_id)["KeyMetadata"]
    assert described["CurrentKeyMaterialId"] == primary["CurrentKeyMaterialId"]
    for field in ("KeySpec", "KeyUsage", "EncryptionAlgorithms", "Origin"):
        assert described[field] == primary[field]
    assert kms(EU).get_key_policy(KeyId=key_id)["Policy"] == default_key_policy(ACCOUNT)
    assert kms(EU).list_resource_tags(KeyId=key_id)["Tags"] == answer["ReplicaTags"]
    assert kms(HOME).list_resource_tags(KeyId=key_id)["Tags"] == [
        {"TagKey": "side", "TagValue": "primary"}
    ]
    assert primary["Description"] == "primary"
    listed = {k["KeyId"] for k in kms(EU).list_keys(Limit=1000)["Keys"]}
    assert key_id in listed


def test_replicate_key_with_its_own_policy(kms: Clients) -> None:
    key_id = mrk(kms)
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "replica-policy",
            "Statement": [
                {
                    "Sid": "root",
                    "Effect": "Allow",
                    "Principal": {"AWS": ROOT_ARN},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        },
        indent=1,
    )
    answer = kms(HOME).replicate_key(KeyId=key_id, ReplicaRegion=AP, Policy=policy)
    assert answer["ReplicaPolicy"] == policy and answer["ReplicaTags"] == []
    assert kms(AP).get_key_policy(KeyId=key_id)["Policy"] == policy
    assert kms(HOME).get_key_policy(KeyId=key_id)["Policy"] == default_key_policy(ACCOUNT)
    # A policy that would lock the caller out is refused, as CreateKey refuses it.
    locked = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:Encrypt",
                 "Resource": "*"}
            ],
        }
    )  # fmt: skip
    code, _ = error(kms(HOME).replicate_key, KeyId=key_id, ReplicaRegion=EU, Policy=locked)
    assert code == "MalformedPolicyDocumentException"
    assert error(kms(EU).describe_key, KeyId=key_id) == not_found(EU, key_id)


def test_replicate_key_errors(kms: Clients) -> None:
    key_id = replicated(kms)
    # A replica is not a primary (AWS's recorded message, naming the replica's ARN).
    assert error(kms(EU).replicate_key, KeyId=key_id, ReplicaRegion=AP) == (
        "UnsupportedOperationException",
        f"{arn(EU, key_id)} is not a multi-region primary key.",
    )
    code, _ = error(kms(HOME).replicate_key, KeyId=key_id, ReplicaRegion=EU)
    assert code == "AlreadyExistsException"
    code, _ = error(kms(HOME).replicate_key, KeyId=key_id, ReplicaRegion=HOME)
    assert code == "AlreadyExistsException"
    single = kms(HOME).create_key()["KeyMetadata"]["KeyId"]
    code, _ = error(kms(HOME).replicate_key, KeyId=single, ReplicaRegion=EU)
    assert code == "UnsupportedOperationException"
    assert error(kms(EU).describe_key, KeyId=single) == not_found(EU, single)
    code, message = error(kms(HOME).replicate_key, KeyId=key_id, ReplicaRegion="us-west-2")
    assert (code, message) == (
        "UnsupportedOperationException",
        "Region us-west-2 is not served by this KMS",
    )
    code, message = error(kms(HOME).replicate_key, KeyId=key_id, ReplicaRegion="Mars")
    assert (code, message) == (
        "ValidationException",
        "1 validation error detected: Value 'Mars' at 'replicaRegion' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: ^([a-z]+-){2,3}\\d+$",
    )
    assert error(kms(HOME).replicate_key, KeyId=str(uuid.uuid4()), ReplicaRegion=AP)[0] == (
        "NotFoundException"
    )
    # Nothing of a refused request was made.
    assert configuration(kms, HOME, key_id)["ReplicaKeys"] == [
        {"Arn": arn(EU, key_id), "Region": EU}
    ]
    assert error(kms(AP).describe_key, KeyId=key_id) == not_found(AP, key_id)


def test_each_region_has_its_own_state(kms: Clients) -> None:
    key_id = replicated(kms)
    kms(EU).disable_key(KeyId=key_id)
    assert error(kms(EU).encrypt, KeyId=key_id, Plaintext=b"x") == (
        "DisabledException",
        f"{arn(EU, key_id)} is disabled.",
    )
    blob = kms(HOME).encrypt(KeyId=key_id, Plaintext=b"still works")["CiphertextBlob"]
    assert kms(HOME).decrypt(CiphertextBlob=blob)["Plaintext"] == b"still works"
    assert kms(HOME).describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert error(kms(EU).decrypt, CiphertextBlob=blob)[0] == "DisabledException"
    kms(EU).enable_key(KeyId=key_id)
    assert kms(EU).decrypt(CiphertextBlob=blob)["Plaintext"] == b"still works"
    kms(HOME).update_key_description(KeyId=key_id, Description="changed at home")
    assert kms(EU).describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == ""
    kms(EU).tag_resource(KeyId=key_id, Tags=[{"TagKey": "eu", "TagValue": "only"}])
    assert kms(HOME).list_resource_tags(KeyId=key_id)["Tags"] == []
    # Aliases and grants are the region's too.
    name = f"alias/mrk-{uuid.uuid4().hex[:8]}"
    kms(EU).create_alias(AliasName=name, TargetKeyId=key_id)
    assert error(kms(HOME).describe_key, KeyId=name)[0] == "NotFoundException"
    grant = kms(EU).create_grant(KeyId=key_id, GranteePrincipal=ROOT_ARN, Operations=["Decrypt"])
    assert [g["GrantId"] for g in kms(EU).list_grants(KeyId=key_id)["Grants"]] == [grant["GrantId"]]
    assert kms(HOME).list_grants(KeyId=key_id)["Grants"] == []


def test_ciphertexts_decrypt_in_every_region_of_the_key(kms: Clients) -> None:
    key_id = replicated(kms)
    context = {"purpose": "regions"}
    for made, opened in ((HOME, EU), (EU, HOME)):
        blob = kms(made).encrypt(KeyId=key_id, Plaintext=b"hello", EncryptionContext=context)[
            "CiphertextBlob"
        ]
        answer = kms(opened).decrypt(CiphertextBlob=blob, EncryptionContext=context)
        assert answer["Plaintext"] == b"hello" and answer["KeyId"] == arn(opened, key_id)
        assert kms(opened).decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionContext=context)
        assert error(kms(opened).decrypt, CiphertextBlob=blob)[0] == "InvalidCiphertextException"
        data_key = kms(made).generate_data_key(
            KeyId=key_id, KeySpec="AES_256", EncryptionContext=context
        )
        opened_key = kms(opened).decrypt(
            CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=context
        )
        assert opened_key["Plaintext"] == data_key["Plaintext"]
        # Not in a region the key was not replicated to.
        assert error(kms(AP).decrypt, CiphertextBlob=blob, EncryptionContext=context)[0] == (
            "InvalidCiphertextException"
        )
    # ReEncrypt in the replica's region, from the key to itself.
    blob = kms(HOME).encrypt(KeyId=key_id, Plaintext=b"again")["CiphertextBlob"]
    again = kms(EU).re_encrypt(CiphertextBlob=blob, DestinationKeyId=key_id)
    assert again["SourceKeyId"] == arn(EU, key_id) and again["KeyId"] == arn(EU, key_id)
    assert kms(HOME).decrypt(CiphertextBlob=again["CiphertextBlob"])["Plaintext"] == b"again"


def test_an_asymmetric_multi_region_key(kms: Clients) -> None:
    key_id = mrk(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    replica = kms(HOME).replicate_key(KeyId=key_id, ReplicaRegion=EU)["ReplicaKeyMetadata"]
    assert (replica["KeySpec"], replica["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    public = kms(HOME).get_public_key(KeyId=key_id)["PublicKey"]
    assert kms(EU).get_public_key(KeyId=key_id)["PublicKey"] == public
    message = b"signed in one region, verified in the other"
    for made, checked in ((HOME, EU), (EU, HOME)):
        signed = kms(made).sign(KeyId=key_id, Message=message, SigningAlgorithm="ECDSA_SHA_256")
        assert signed["KeyId"] == arn(made, key_id)
        verify_signature(public, "ECDSA_SHA_256", message, signed["Signature"])
        valid = kms(checked).verify(
            KeyId=key_id, Message=message, Signature=signed["Signature"],
            SigningAlgorithm="ECDSA_SHA_256",
        )  # fmt: skip
        assert valid["SignatureValid"] is True and valid["KeyId"] == arn(checked, key_id)


def test_an_hmac_multi_region_key(kms: Clients) -> None:
    key_id = mrk(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    kms(HOME).replicate_key(KeyId=key_id, ReplicaRegion=EU)
    message = b"a message to MAC"
    mac = kms(EU).generate_mac(KeyId=key_id, Message=message, MacAlgorithm="HMAC_SHA_256")["Mac"]
    home = kms(HOME).generate_mac(KeyId=key_id, Message=message, MacAlgorithm="HMAC_SHA_256")
    assert home["Mac"] == mac  # the same key material
    valid = kms(HOME).verify_mac(
        KeyId=key_id, Message=message, Mac=mac, MacAlgorithm="HMAC_SHA_256"
    )
    assert valid["MacValid"] is True
    code, _ = error(
        kms(EU).verify_mac, KeyId=key_id, Message=message + b"!", Mac=mac,
        MacAlgorithm="HMAC_SHA_256",
    )  # fmt: skip
    assert code == "KMSInvalidMacException"


def test_rotation_is_the_primarys(kms: Clients) -> None:
    key_id = replicated(kms)
    before = kms(EU).encrypt(KeyId=key_id, Plaintext=b"before")["CiphertextBlob"]
    kms(HOME).rotate_key_on_demand(KeyId=key_id)
    after = kms(EU).encrypt(KeyId=key_id, Plaintext=b"after")["CiphertextBlob"]
    assert kms(HOME).decrypt(CiphertextBlob=after)["Plaintext"] == b"after"
    assert kms(HOME).decrypt(CiphertextBlob=before)["Plaintext"] == b"before"
    assert kms(EU).decrypt(CiphertextBlob=before)["Plaintext"] == b"before"
    # Both regions name the same current material, and list the rotation.
    ids = {
        r: kms(r).describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"]
        for r in (HOME, EU)
    }
    assert ids[HOME] == ids[EU]
    for region in (HOME, EU):
        rotations = kms(region).list_key_rotations(KeyId=key_id)["Rotations"]
        assert [r["RotationType"] for r in rotations] == ["ON_DEMAND"]
    # A replica does not rotate: only its primary does (AWS's message for a replica).
    assert error(kms(EU).rotate_key_on_demand, KeyId=key_id) == (
        "UnsupportedOperationException",
        f"{arn(EU, key_id)} is not a multi-region primary key.",
    )
    code, _ = error(kms(EU).enable_key_rotation, KeyId=key_id)
    assert code == "UnsupportedOperationException"


def test_automatic_rotation_settings_reach_the_replicas(kms: Clients) -> None:
    key_id = replicated(kms)
    kms(HOME).enable_key_rotation(KeyId=key_id, RotationPeriodInDays=180)
    for region in (HOME, EU):
        status = kms(region).get_key_rotation_status(KeyId=key_id)
        assert status["KeyRotationEnabled"] is True, region
        assert status["RotationPeriodInDays"] == 180, region
    # A replica made afterwards takes the primary's settings.
    kms(HOME).replicate_key(KeyId=key_id, ReplicaRegion=AP)
    status = kms(AP).get_key_rotation_status(KeyId=key_id)
    assert (status["KeyRotationEnabled"], status["RotationPeriodInDays"]) == (True, 180)
    kms(HOME).disable_key_rotation(KeyId=key_id)
    for region in (HOME, EU, AP):
        assert kms(region).get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False


def test_automatic_rotation_of_a_primary_rotates_its_replicas(srv: KmsThread, kms: Clients) -> None:
    key_id = replicated(kms)
    kms(HOME).enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    before = kms(EU).encrypt(KeyId=key_id, Plaintext=b"before")["CiphertextBlob"]
    material = kms(EU).describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"]
    later(srv, 91 * DAY)
    for region in (HOME, EU):
        rotations = kms(region).list_key_rotations(KeyId=key_id)["Rotations"]
        assert [r["RotationType"] for r in rotations] == ["AUTOMATIC"], region
    rotated = kms(EU).describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"]
    assert rotated != material
    assert rotated == kms(HOME).describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"]
    after = kms(EU).encrypt(KeyId=key_id, Plaintext=b"after")["CiphertextBlob"]
    assert kms(HOME).decrypt(CiphertextBlob=after)["Plaintext"] == b"after"
    assert kms(HOME).decrypt(CiphertextBlob=before)["Plaintext"] == b"before"


def test_update_primary_region(kms: Clients) -> None:
    key_id = replicated(kms)
    kms(HOME).update_primary_region(KeyId=key_id, PrimaryRegion=EU)
    assert configuration(kms, EU, key_id) == expected_configuration(EU, key_id, EU, [HOME])
    assert configuration(kms, HOME, key_id) == expected_configuration(HOME, key_id, EU, [HOME])
    # The old primary is a replica now: it can no longer replicate, nor rotate.
    assert error(kms(HOME).replicate_key, KeyId=key_id, ReplicaRegion=AP) == (
        "UnsupportedOperationException",
        f"{arn(HOME, key_id)} is not a multi-region primary key.",
    )
    assert error(kms(HOME).update_primary_region, KeyId=key_id, PrimaryRegion=EU)[0] == (
        "UnsupportedOperationException"
    )
    code, _ = error(kms(HOME).rotate_key_on_demand, KeyId=key_id)
    assert code == "UnsupportedOperationException"
    # The new primary can.
    kms(EU).replicate_key(KeyId=key_id, ReplicaRegion=AP)
    for region in (HOME, EU, AP):
        assert configuration(kms, region, key_id) == expected_configuration(
            region, key_id, EU, [HOME, AP]
        )
    kms(EU).rotate_key_on_demand(KeyId=key_id)
    blob = kms(AP).encrypt(KeyId=key_id, Plaintext=b"three regions")["CiphertextBlob"]
    for region in (HOME, EU):
        assert kms(region).decrypt(CiphertextBlob=blob)["Plaintext"] == b"three regions"
    # ... and back.
    kms(EU).update_primary_region(KeyId=key_id, PrimaryRegion=HOME)
    assert configuration(kms, HOME, key_id)["MultiRegionKeyType"] == "PRIMARY"
    assert configuration(kms, EU, key_id)["MultiRegionKeyType"] == "REPLICA"


def test_update_primary_region_errors(kms: Clients) -> None:
    key_id = replicated(kms)
    single = kms(HOME).create_key()["KeyMetadata"]["KeyId"]
    code, _ = error(kms(HOME).update_primary_region, KeyId=single, PrimaryRegion=EU)
    assert code == "UnsupportedOperationException"
    code, _ = error(kms(HOME).update_primary_region, KeyId=key_id, PrimaryRegion=AP)
    assert code == "NotFoundException"  # no replica there
    code, _ = error(kms(HOME).update_primary_region, KeyId=key_id, PrimaryRegion="Mars")
    assert code == "ValidationException"
    # The primary region itself: nothing changes.
    kms(HOME).update_primary_region(KeyId=key_id, PrimaryRegion=HOME)
    assert configuration(kms, HOME, key_id) == expected_configuration(HOME, key_id, HOME, [EU])


def test_a_primary_waits_for_its_replicas_deletion(srv: KmsThread, kms: Clients) -> None:
    key_id = replicated(kms)
    kms(HOME).replicate_key(KeyId=key_id, ReplicaRegion=AP)
    blob = kms(HOME).encrypt(KeyId=key_id, Plaintext=b"doomed")["CiphertextBlob"]
    answer = kms(HOME).schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert answer["KeyState"] == "PendingReplicaDeletion"
    assert answer["PendingWindowInDays"] == 7
    assert "DeletionDate" not in answer  # (not known until the last replica is deleted)
    primary = kms(HOME).describe_key(KeyId=key_id)["KeyMetadata"]
    assert primary["KeyState"] == "PendingReplicaDeletion" and primary["Enabled"] is False
    assert "DeletionDate" not in primary
    assert primary["PendingDeletionWindowInDays"] == 7
    code, message = error(kms(HOME).encrypt, KeyId=key_id, Plaintext=b"x")
    assert code == "KMSInvalidStateException"
    assert message == f"{arn(HOME, key_id)} is pending replica deletion."
    assert error(kms(HOME).decrypt, CiphertextBlob=blob)[0] == "KMSInvalidStateException"
    assert error(kms(HOME).enable_key, KeyId=key_id)[0] == "KMSInvalidStateException"
    assert error(kms(HOME).schedule_key_deletion, KeyId=key_id)[0] == ("KMSInvalidStateException")
    # The replicas still work, each on its own state.
    assert kms(EU).decrypt(CiphertextBlob=blob)["Plaintext"] == b"doomed"
    # A maintenance pass long after: the primary still waits (its replicas exist).
    later(srv, 40 * DAY)
    assert kms(HOME).describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == (
        "PendingReplicaDeletion"
    )
    # The replicas' deletion: once it is done, the primary's waiting period begins.
    kms(EU).schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    kms(AP).schedule_key_deletion(KeyId=key_id, PendingWindowInDays=30)
    later(srv, 8 * DAY)
    assert error(kms(EU).describe_key, KeyId=key_id) == not_found(EU, key_id)
    assert configuration(kms, HOME, key_id)["ReplicaKeys"] == [
        {"Arn": arn(AP, key_id), "Region": AP}
    ]
    assert configuration(kms, AP, key_id)["ReplicaKeys"] == [{"Arn": arn(AP, key_id), "Region": AP}]
    assert kms(HOME).describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == (
        "PendingReplicaDeletion"
    )
    later(srv, 31 * DAY)  # the last replica goes, and the primary's window starts (then)
    assert error(kms(AP).describe_key, KeyId=key_id) == not_found(AP, key_id)
    srv.run(srv.app.runtime.service.run_due_work())
    primary = kms(HOME).describe_key(KeyId=key_id)["KeyMetadata"]
    assert primary["MultiRegionConfiguration"]["ReplicaKeys"] == []
    assert primary["KeyState"] == "PendingDeletion"
    assert primary["PendingDeletionWindowInDays"] == 7
    # Its deletion date is 7 days after the pass that saw its last replica gone.
    assert 7 * DAY - 60 < primary["DeletionDate"].timestamp() - time.time() <= 31 * DAY + 7 * DAY
    later(srv, 39 * DAY)
    assert error(kms(HOME).describe_key, KeyId=key_id) == not_found(HOME, key_id)


def test_cancel_the_deletion_of_a_primary_waiting_for_its_replicas(kms: Clients) -> None:
    key_id = replicated(kms)
    kms(HOME).schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    answer = kms(HOME).cancel_key_deletion(KeyId=key_id)
    assert answer["KeyId"] == arn(HOME, key_id)
    meta = kms(HOME).describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "Disabled"
    assert "PendingDeletionWindowInDays" not in meta and "DeletionDate" not in meta
    kms(HOME).enable_key(KeyId=key_id)
    assert kms(HOME).encrypt(KeyId=key_id, Plaintext=b"back")["KeyId"] == arn(HOME, key_id)


def test_a_replica_deleted_alone_leaves_the_primary_and_its_material(
    srv: KmsThread, kms: Clients
) -> None:
    key_id = replicated(kms)
    blob = kms(EU).encrypt(KeyId=key_id, Plaintext=b"made in eu")["CiphertextBlob"]
    answer = kms(EU).schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert answer["KeyState"] == "PendingDeletion" and "DeletionDate" in answer
    later(srv, 8 * DAY)
    assert error(kms(EU).describe_key, KeyId=key_id) == not_found(EU, key_id)
    assert configuration(kms, HOME, key_id)["ReplicaKeys"] == []
    assert kms(HOME).decrypt(CiphertextBlob=blob)["Plaintext"] == b"made in eu"
    # It can be replicated there again, and the old ciphertexts open there again.
    kms(HOME).replicate_key(KeyId=key_id, ReplicaRegion=EU)
    assert kms(EU).decrypt(CiphertextBlob=blob)["Plaintext"] == b"made in eu"


def test_a_key_policy_can_deny_replicate_key(kms: Clients) -> None:
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "root", "Effect": "Allow", "Principal": {"AWS": ROOT_ARN},
                 "Action": "kms:*", "Resource": "*"},
                {"Sid": "not-to-ap", "Effect": "Deny", "Principal": {"AWS": "*"},
                 "Action": "kms:ReplicateKey", "Resource": "*",
                 "Condition": {"StringEquals": {"kms:ReplicaRegion": AP}}},
            ],
        }
    )  # fmt: skip
    key_id = mrk(kms, Policy=policy)
    code, message = error(kms(HOME).replicate_key, KeyId=key_id, ReplicaRegion=AP)
    assert code == "AccessDeniedException"
    assert message is not None and "kms:ReplicateKey" in message
    assert error(kms(AP).describe_key, KeyId=key_id) == not_found(AP, key_id)
    kms(HOME).replicate_key(KeyId=key_id, ReplicaRegion=EU)  # the condition does not apply
    deny_all = json.loads(policy)
    del deny_all["Statement"][1]["Condition"]
    key_id = mrk(kms, Policy=json.dumps(deny_all))
    assert error(kms(HOME).replicate_key, KeyId=key_id, ReplicaRegion=EU)[0] == (
        "AccessDeniedException"
    )


ALLOW_ROOT = {"Sid": "root", "Effect": "Allow", "Principal": {"AWS": ROOT_ARN},
              "Action": "kms:*", "Resource": "*"}  # fmt: skip


def deny_policy(action: str, condition: dict[str, Any]) -> str:
    deny = {"Sid": "deny", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": action,
            "Resource": "*", "Condition": condition}  # fmt: skip
    return json.dumps({"Version": "2012-10-17", "Statement": [ALLOW_ROOT, deny]})


def test_the_multi_region_condition_key(kms: Clients) -> None:
    """kms:MultiRegion tells a key policy whether the key is a multi-Region key (AWS's
    condition key, of the key on every operation on it, not only of CreateKey)."""
    policy = deny_policy("kms:Encrypt", {"Bool": {"kms:MultiRegion": "true"}})
    single = kms(HOME).create_key(Policy=policy)["KeyMetadata"]["KeyId"]
    kms(HOME).encrypt(KeyId=single, Plaintext=b"x")  # a single-Region key: false
    key_id = mrk(kms, Policy=policy)
    assert error(kms(HOME).encrypt, KeyId=key_id, Plaintext=b"x")[0] == "AccessDeniedException"


def test_the_multi_region_key_type_condition_key(kms: Clients) -> None:
    """kms:MultiRegionKeyType: PRIMARY or REPLICA, as the key is in the request's region."""
    condition = {"StringEquals": {"kms:MultiRegionKeyType": "REPLICA"}}
    policy = deny_policy("kms:GenerateDataKey", condition)
    key_id = mrk(kms, Policy=policy)
    kms(HOME).replicate_key(KeyId=key_id, ReplicaRegion=EU, Policy=policy)
    kms(HOME).generate_data_key(KeyId=key_id, KeySpec="AES_256")  # the primary may
    assert error(kms(EU).generate_data_key, KeyId=key_id, KeySpec="AES_256")[0] == (
        "AccessDeniedException"
    )


def test_the_primary_region_condition_key(kms: Clients) -> None:
    """kms:PrimaryRegion: the region UpdatePrimaryRegion names (AWS's condition key)."""
    policy = deny_policy("kms:UpdatePrimaryRegion", {"StringEquals": {"kms:PrimaryRegion": EU}})
    key_id = mrk(kms, Policy=policy)
    kms(HOME).replicate_key(KeyId=key_id, ReplicaRegion=EU)
    kms(HOME).replicate_key(KeyId=key_id, ReplicaRegion=AP)
    assert error(kms(HOME).update_primary_region, KeyId=key_id, PrimaryRegion=EU)[0] == (
        "AccessDeniedException"
    )
    assert configuration(kms, HOME, key_id)["MultiRegionKeyType"] == "PRIMARY"
    kms(HOME).update_primary_region(KeyId=key_id, PrimaryRegion=AP)  # the condition does not apply


def test_replicate_key_needs_create_key_in_the_replica_region(srv: KmsThread, kms: Clients) -> None:
    """AWS: ReplicateKey needs kms:ReplicateKey on the primary and kms:CreateKey (identity
    policy) in the replica's region; kms:TagResource too when Tags are given."""
    user = f"replicator-{uuid.uuid4().hex[:6]}"
    secret = "replicator-secret-0123456789"
    document = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["kms:ReplicateKey", "kms:DescribeKey"],
                       "Resource": "*"}],
    }  # fmt: skip
    with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as admin:
        admin.put_policy(user, document)
        admin.add_user(user, [user], secret_key=secret)
    key_id = mrk(kms)
    code, message = error(
        boto(srv.url, HOME, user, secret).replicate_key, KeyId=key_id, ReplicaRegion=EU
    )
    assert code == "AccessDeniedException"
    assert message is not None and "kms:CreateKey" in message
    assert error(kms(EU).describe_key, KeyId=key_id) == not_found(EU, key_id)


# -- restarts and backups -----------------------------------------------------------------------


def test_the_local_keystore_keeps_regions_apart_across_a_restart(tmp_path: Path) -> None:
    server = KmsProcess(tmp_path / "data", args=["--regions", REGIONS])
    server.start()
    try:
        home = boto(server.url, HOME).create_key()["KeyMetadata"]["KeyId"]
        eu = boto(server.url, EU).create_key()["KeyMetadata"]["KeyId"]
        boto(server.url, EU).create_alias(AliasName="alias/kept", TargetKeyId=eu)
        key_id = boto(server.url, HOME).create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
        boto(server.url, HOME).replicate_key(KeyId=key_id, ReplicaRegion=AP)
        blob = boto(server.url, EU).encrypt(KeyId=eu, Plaintext=b"eu")["CiphertextBlob"]
        mrk_blob = boto(server.url, AP).encrypt(KeyId=key_id, Plaintext=b"m")["CiphertextBlob"]
        server.restart()
        us_client, eu_client, ap_client = (boto(server.url, r) for r in (HOME, EU, AP))
        assert error(us_client.describe_key, KeyId=eu) == not_found(HOME, eu)
        assert error(eu_client.describe_key, KeyId=home) == not_found(EU, home)
        assert eu_client.decrypt(CiphertextBlob=blob)["Plaintext"] == b"eu"
        assert eu_client.describe_key(KeyId="alias/kept")["KeyMetadata"]["KeyId"] == eu
        assert us_client.list_aliases()["Aliases"] == [] or all(
            a["AliasName"] != "alias/kept" for a in us_client.list_aliases()["Aliases"]
        )
        assert us_client.decrypt(CiphertextBlob=mrk_blob)["Plaintext"] == b"m"
        assert configuration(lambda r: boto(server.url, r), AP, key_id) == (
            expected_configuration(AP, key_id, HOME, [AP])
        )
        assert {k["KeyId"] for k in ap_client.list_keys()["Keys"]} == {key_id}
    finally:
        server.stop()
    # Started without --regions, the same data directory serves its home region's keys only.
    server = KmsProcess(tmp_path / "data", port=server.port)
    server.start()
    try:
        us_client = boto(server.url, HOME)
        assert {home, key_id} <= {k["KeyId"] for k in us_client.list_keys()["Keys"]}
        assert eu not in {k["KeyId"] for k in us_client.list_keys()["Keys"]}
        assert error(boto(server.url, EU).list_keys)[0] == "IncompleteSignatureException"
    finally:
        server.stop()


def test_backup_and_restore_keep_every_regions_keys(tmp_path: Path) -> None:
    other_master = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
    passphrase = "a long passphrase for regions"
    source = KmsThread(thread_settings(tmp_path / "source", regions=REGIONS)).start()
    try:
        eu = boto(source.url, EU).create_key()["KeyMetadata"]["KeyId"]
        boto(source.url, EU).create_alias(AliasName="alias/eu-only", TargetKeyId=eu)
        blob = boto(source.url, EU).encrypt(KeyId=eu, Plaintext=b"eu")["CiphertextBlob"]
        key_id = boto(source.url, HOME).create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
        boto(source.url, HOME).replicate_key(KeyId=key_id, ReplicaRegion=EU, Description="r")
        boto(source.url, HOME).rotate_key_on_demand(KeyId=key_id)
        mrk_blob = boto(source.url, EU).encrypt(KeyId=key_id, Plaintext=b"m")["CiphertextBlob"]
    finally:
        source.stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
    env |= {"S3KMS_BACKUP_PASSPHRASE": passphrase}
    out = tmp_path / "kms.s3kb"

    def cli(*args: str, master: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "s3kms", *args], capture_output=True, text=True, timeout=60,
            env=env | {"S3KMS_MASTER_KEY": master}, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    made = cli("backup", str(out), "--data-dir", str(tmp_path / "source"), master=MASTER_KEY)
    assert made.returncode == 0, made.stderr
    assert "3 key(s) written" in made.stderr
    back = cli("restore", str(out), "--data-dir", str(tmp_path / "target"), master=other_master)
    assert back.returncode == 0, back.stderr
    assert "3 key(s) restored" in back.stderr
    target = KmsThread(
        thread_settings(tmp_path / "target", regions=REGIONS, master_key=other_master)
    ).start()
    try:
        us_client, eu_client = boto(target.url, HOME), boto(target.url, EU)
        assert eu_client.decrypt(CiphertextBlob=blob)["Plaintext"] == b"eu"
        assert eu_client.describe_key(KeyId="alias/eu-only")["KeyMetadata"]["KeyId"] == eu
        assert error(us_client.describe_key, KeyId=eu) == not_found(HOME, eu)
        assert error(us_client.describe_key, KeyId="alias/eu-only")[0] == "NotFoundException"
        for client in (us_client, eu_client):
            assert client.decrypt(CiphertextBlob=mrk_blob)["Plaintext"] == b"m"
        replica = eu_client.describe_key(KeyId=key_id)["KeyMetadata"]
        assert replica["Description"] == "r"
        assert replica["MultiRegionConfiguration"] == expected_configuration(EU, key_id, HOME, [EU])
        assert [
            r["RotationType"] for r in eu_client.list_key_rotations(KeyId=key_id)["Rotations"]
        ] == ["ON_DEMAND"]
    finally:
        target.stop()
