"""Sealed secrets (CoCo format): round trips, strict parsing, and every bit flip refused."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from inclavare.crypto.b64 import b64url_encode
from inclavare.crypto.jwk import jwk_from_public_key
from inclavare.secrets import sealed
from inclavare.secrets.sealed import SealedSecretError

KID = "kbs:///tenant/key/seal"
KEK = bytes(range(32))


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    return jwk_from_public_key(key.public_key())


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_vault_round_trip_is_cocos_layout(key: ec.EllipticCurvePrivateKey) -> None:
    text = sealed.seal(sealed.Vault("kbs:///tenant/key/db"), key, KID)
    prefix, header, payload, sig = text.split(".")
    assert prefix == "sealed"
    assert json.loads(_unb64(header)) == {"alg": "ES256", "kid": KID}
    assert json.loads(_unb64(payload)) == {"version": "0.1.0", "type": "vault", "provider": "kbs",
                                           "name": "kbs:///tenant/key/db", "provider_settings": {},
                                           "annotations": {}}
    assert len(_unb64(sig)) == 64
    secret = sealed.parse(text)
    secret.verify(_jwk(key))
    assert secret.kid == KID and secret.payload == sealed.Vault("kbs:///tenant/key/db")


def test_envelope_round_trip_opens_only_with_its_kek(key: ec.EllipticCurvePrivateKey) -> None:
    text = sealed.seal(sealed.envelope(b"s3cret\x00\xff", KEK, "kbs:///tenant/key/kek"), key, KID)
    doc = json.loads(_unb64(text.split(".")[2]))
    assert set(doc) == {"version", "type", "provider", "key_id", "encrypted_key", "encrypted_data",
                        "wrap_type", "iv", "provider_settings", "annotations"}
    assert (doc["type"], doc["provider"], doc["wrap_type"]) == ("envelope", "kbs", "A256GCM")
    secret = sealed.parse(text)
    secret.verify(_jwk(key))
    assert isinstance(secret.payload, sealed.Envelope)
    assert secret.payload.open(KEK) == b"s3cret\x00\xff"
    with pytest.raises(SealedSecretError, match="does not open with the key kbs:///tenant/key/kek"):
        secret.payload.open(bytes(32))
    with pytest.raises(SealedSecretError, match="must be 32 bytes"):
        secret.payload.open(b"short")


def test_every_bit_flip_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    """Flip each bit of every character: the result never parses and verifies (and opens) as
    a secret; the error is always our one-line type."""
    text = sealed.seal(sealed.envelope(b"x", KEK, "kbs:///tenant/key/kek"), key, KID)
    jwk = _jwk(key)
    flips = 0
    for i in range(len(text)):
        for bit in range(7):
            mutated = text[:i] + chr(ord(text[i]) ^ (1 << bit)) + text[i + 1:]
            with pytest.raises(SealedSecretError) as info:
                secret = sealed.parse(mutated)
                secret.verify(jwk)
                assert isinstance(secret.payload, sealed.Envelope)
                secret.payload.open(KEK)
            assert "\n" not in str(info.value)
            flips += 1
    assert flips == 7 * len(text)


def test_forged_signature_and_wrong_key_are_refused(key: ec.EllipticCurvePrivateKey) -> None:
    text = sealed.seal(sealed.Vault("kbs:///tenant/key/db"), key, KID)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SealedSecretError, match="signature does not verify with kbs:///tenant/key/seal"):
        sealed.parse(text).verify(_jwk(other))
    forged = sealed.seal(sealed.Vault("kbs:///tenant/key/other"), other, KID)
    spliced = ".".join(forged.split(".")[:3] + text.split(".")[3:])
    with pytest.raises(SealedSecretError, match="does not verify"):
        sealed.parse(spliced).verify(_jwk(key))
    p384 = jwk_from_public_key(ec.generate_private_key(ec.SECP384R1()).public_key())
    with pytest.raises(SealedSecretError, match="not an EC P-256 key"):
        sealed.parse(text).verify(p384)
    with pytest.raises(SealedSecretError, match="not usable"):
        sealed.parse(text).verify({"kty": "EC"})


def _forge(header: object, payload: object, sig: bytes = bytes(64)) -> str:
    def enc(v: object) -> str:
        return b64url_encode(v if isinstance(v, bytes) else json.dumps(v).encode())
    return f"sealed.{enc(header)}.{enc(payload)}.{b64url_encode(sig)}"


GOOD_HEADER = {"alg": "ES256", "kid": KID}
VAULT = {"version": "0.1.0", "type": "vault", "provider": "kbs", "name": "kbs:///a/b/c",
         "provider_settings": {}, "annotations": {}}


@pytest.mark.parametrize("text, message", [
    (42, "must be a string"),
    ("sealed." + "a" * 70000, "longer than"),
    ("unsealed.a.b.c", "must start with 'sealed.'"),
    ("sealed.a.b", "four dot-separated parts"),
    ("sealed.a.b.c.d", "four dot-separated parts"),
    ("sealed.a*.b.c", "not valid base64url"),
    (_forge(GOOD_HEADER, VAULT).replace(".", "=.", 2).replace("sealed=.", "sealed."), "not canonical"),
    (_forge(b"[]", VAULT), "header is not a JSON object"),
    (_forge(b'{"alg":"ES256","alg":"ES256","kid":"kbs:///a/b/c"}', VAULT), "sealed secret header"),
    (_forge({"alg": "none", "kid": KID}, VAULT), "alg must be 'ES256'"),
    (_forge({"alg": "ES256"}, VAULT), "no string 'kid'"),
    (_forge({"alg": "ES256", "kid": "/etc/passwd"}, VAULT), "kid must be a KBS resource URI"),
    (_forge({**GOOD_HEADER, "crit": ["x"]}, VAULT), "unknown member(s): crit"),
    (_forge(GOOD_HEADER, VAULT, bytes(63)), "64 bytes"),
    (_forge(GOOD_HEADER, {**VAULT, "version": "0.2.0"}), "version must be '0.1.0'"),
    (_forge(GOOD_HEADER, {**VAULT, "type": "plain"}), "type must be 'vault' or 'envelope'"),
    (_forge(GOOD_HEADER, {**VAULT, "provider": "aliyun"}), "vault provider 'aliyun' is not supported"),
    (_forge(GOOD_HEADER, {**VAULT, "name": "kbs:///a/../c"}), "name must be a KBS resource URI"),
    (_forge(GOOD_HEADER, {**VAULT, "iv": "AAAA"}), "member(s) of another type: iv"),
    (_forge(GOOD_HEADER, {k: v for k, v in VAULT.items() if k != "annotations"}), "lacks: annotations"),
    (_forge(GOOD_HEADER, {**VAULT, "annotations": []}), "'annotations' must be an object"),
    (_forge(GOOD_HEADER, b'{"version":"0.1.0","version":"0.1.0"}'), "payload"),
    (_forge(GOOD_HEADER, b'\xff'), "payload"),
    (_forge(GOOD_HEADER, {"version": "0.1.0", "type": "envelope", "provider": "kbs", "key_id": "k",
                          "encrypted_key": "AA==", "encrypted_data": "AA==", "wrap_type": "A256CTR",
                          "iv": "AAAAAAAAAAAAAAAA", "provider_settings": {}, "annotations": {}}),
     "wrap_type must be 'A256GCM'"),
    (_forge(GOOD_HEADER, {"version": "0.1.0", "type": "envelope", "provider": "kbs", "key_id": "k",
                          "encrypted_key": "AA==", "encrypted_data": "AA==", "wrap_type": "A256GCM",
                          "iv": "AAAA", "provider_settings": {}, "annotations": {}}), "iv must be 12 bytes"),
    (_forge(GOOD_HEADER, {"version": "0.1.0", "type": "envelope", "provider": "kbs", "key_id": "k",
                          "encrypted_key": "AB==", "encrypted_data": "AA==", "wrap_type": "A256GCM",
                          "iv": "AAAAAAAAAAAAAAAA", "provider_settings": {}, "annotations": {}}), "not canonical base64"),
])
def test_malformed_secrets_get_one_line_errors(text: object, message: str) -> None:
    with pytest.raises(SealedSecretError) as info:
        sealed.parse(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_envelope_with_a_cloud_kms_parses_but_is_not_opened_here(key: ec.EllipticCurvePrivateKey) -> None:
    env = sealed.envelope(b"x", KEK, "kbs:///a/b/c")
    text = sealed.seal(sealed.Envelope("aliyun", "key-1", env.encrypted_key, env.encrypted_data, env.iv), key, KID)
    payload = sealed.parse(text).payload
    assert isinstance(payload, sealed.Envelope)
    with pytest.raises(SealedSecretError, match="provider 'aliyun' is not supported here"):
        payload.open(KEK)


def test_sealing_refuses_other_curves_and_bad_kids(key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(SealedSecretError, match="EC P-256"):
        sealed.seal(sealed.Vault("kbs:///a/b/c"), ec.generate_private_key(ec.SECP384R1()), KID)
    with pytest.raises(SealedSecretError, match="kid must be"):
        sealed.seal(sealed.Vault("kbs:///a/b/c"), key, "file.jwk")
    with pytest.raises(SealedSecretError, match="32 bytes"):
        sealed.envelope(b"x", b"short", "kbs:///a/b/c")
