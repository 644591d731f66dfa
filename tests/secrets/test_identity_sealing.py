"""EGETKEY semantics of the simulated sealing keys, and the sealed-data format, in process."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from inclavare.errors import ConfigError
from inclavare.secrets import identity_sealed as sd
from inclavare.secrets.sealing_keys import (KeyRequest, SealingIdentity, SealingKeyError, SealingSecret,
                                            derive)

SIGNER = "ab" * 32
SECRET = bytes(range(32))


def source(identity: SealingIdentity, secret: bytes = SECRET) -> sd.KeySource:
    """What the enclave agent gets over its channel: the node agent's derivation for ``identity``."""
    def get(policy: str, key_id: bytes, svn: int | None) -> tuple[bytes, int, int]:
        request = KeyRequest.parse({"policy": policy, "key_id": base64.b64encode(key_id).decode(),
                                    **({} if svn is None else {"isv_svn": svn})})
        key, used = derive(secret, identity, request)
        return key, used, identity.isv_prod_id
    return get


def enclave(measurement: str = "11" * 32, args: str = f"mrsigner={SIGNER} isvprodid=7 isvsvn=2") -> SealingIdentity:
    return SealingIdentity.of(measurement, args)


def test_mrenclave_binds_the_measurement_and_mrsigner_the_signer_product_and_svn() -> None:
    v2 = enclave()
    blob = sd.seal(b"state", "mrenclave", source(v2))
    assert sd.unseal(blob, source(v2)) == b"state"
    other = enclave("22" * 32)  # same signer, product and SVN; another measurement
    with pytest.raises(sd.SealedDataError, match="sealed to another MRENCLAVE, or modified"):
        sd.unseal(blob, source(other))
    by_signer = sd.seal(b"shared", "mrsigner", source(v2))
    assert sd.unseal(by_signer, source(other)) == b"shared"
    v3 = enclave("33" * 32, f"mrsigner={SIGNER} isvprodid=7 isvsvn=3")
    assert sd.unseal(by_signer, source(v3)) == b"shared"  # an upgrade opens older data
    with pytest.raises(sd.SealedDataError, match="sealed by product 7; this enclave is product 8"):
        sd.unseal(by_signer, source(enclave("22" * 32, f"mrsigner={SIGNER} isvprodid=8 isvsvn=2")))
    with pytest.raises(sd.SealedDataError, match="another MRSIGNER and product"):
        sd.unseal(by_signer, source(enclave("22" * 32, f"mrsigner={'cd' * 32} isvprodid=7 isvsvn=2")))
    with pytest.raises(sd.SealedDataError, match="another MRSIGNER"):  # another installation's secret
        sd.unseal(by_signer, source(v2, os.urandom(32)))


def test_svn_rules_an_older_version_never_opens_newer_data() -> None:
    v1 = enclave("44" * 32, f"mrsigner={SIGNER} isvprodid=7 isvsvn=1")
    newer = sd.seal(b"v2 data", "mrsigner", source(enclave()))
    with pytest.raises(SealingKeyError, match="ISV SVN 2 is refused to an enclave with ISV SVN 1"):
        sd.unseal(newer, source(v1))
    for_v1 = sd.seal(b"for old readers", "mrsigner", source(enclave()), isv_svn=1)
    assert sd.parse_header(for_v1).isv_svn == 1
    assert sd.unseal(for_v1, source(v1)) == b"for old readers"
    with pytest.raises(SealingKeyError, match="ISV SVN 3"):
        sd.seal(b"x", "mrsigner", source(enclave()), isv_svn=3)


def test_every_byte_of_a_blob_is_covered() -> None:
    ident = enclave()
    blob = sd.seal(b"tamper-evident payload", "mrenclave", source(ident))
    assert len(blob) == sd.HEADER_BYTES + 22 + sd.TAG_BYTES
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises((sd.SealedDataError, SealingKeyError)):
            sd.unseal(bytes(bad), source(ident))
    with pytest.raises(sd.SealedDataError, match="not data sealed by attest seal"):
        sd.unseal(blob[:40], source(ident))
    with pytest.raises(sd.SealedDataError):
        sd.unseal(blob[:-1], source(ident))


def test_each_blob_has_its_own_key_id_and_nonce() -> None:
    ident = enclave()
    a, b = (sd.parse_header(sd.seal(b"same", "mrenclave", source(ident))) for _ in range(2))
    assert a.key_id != b.key_id and a.nonce != b.nonce


@pytest.mark.parametrize("args, message", [
    ("mrsigner=abc", "mrsigner= must be 64 hex digits"),
    (f"mrsigner={'zz' * 32}", "mrsigner= must be 64 hex digits"),
    ("isvsvn=65536", "isvsvn= must be an integer from 0 to 65535"),
    ("isvprodid=-1", "isvprodid= must be an integer"),
    ("isvsvn=\u00b2", "isvsvn= must be an integer"),
    ("isvsvn=1 isvsvn=2", "isvsvn= is given twice"),
])
def test_bad_identity_args_are_refused_with_one_line(args: str, message: str) -> None:
    with pytest.raises(SealingKeyError, match=message):
        SealingIdentity.of("11" * 32, args)


@pytest.mark.parametrize("body, message", [
    (None, "a key request is"),
    ({"policy": "mrenclave", "key_id": "AA==", "extra": 1}, "a key request is"),
    ({"policy": "MRENCLAVE", "key_id": base64.b64encode(bytes(32)).decode()}, "policy must be"),
    ({"policy": ["mrenclave"], "key_id": base64.b64encode(bytes(32)).decode()}, "policy must be"),
    ({"policy": "mrenclave", "key_id": 7}, "key_id must be the base64 of 32 bytes"),
    ({"policy": "mrenclave", "key_id": "AA=="}, "key_id must be the base64 of 32 bytes"),
    ({"policy": "mrenclave", "key_id": base64.b64encode(bytes(32)).decode(), "isv_svn": True}, "isv_svn must be"),
    ({"policy": "mrenclave", "key_id": base64.b64encode(bytes(32)).decode(), "isv_svn": 1.0}, "isv_svn must be"),
])
def test_bad_key_requests_are_refused(body: object, message: str) -> None:
    with pytest.raises(SealingKeyError, match=message):
        KeyRequest.parse(body)


def test_mrsigner_needs_a_declared_signer() -> None:
    request = KeyRequest.parse({"policy": "mrsigner", "key_id": base64.b64encode(bytes(32)).decode()})
    with pytest.raises(SealingKeyError, match="declares no signer"):
        derive(SECRET, SealingIdentity.of("11" * 32, "trusted=/bin"), request)


def test_the_sealing_secret_is_made_once_private_and_never_replaced(tmp_path: Path) -> None:
    first = SealingSecret(str(tmp_path / "state")).get()
    path = tmp_path / "state" / "sealing.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) == 32
    assert SealingSecret(str(tmp_path / "state")).get() == first
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="is not 32 bytes; replacing it makes all sealed data unreadable"):
        SealingSecret(str(tmp_path / "state")).get()
    assert path.read_bytes() == b"short"
