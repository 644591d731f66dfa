"""JWE (RFC 7516) flattened JSON as the KBS protocol uses it to deliver resources.

Key management ``ECDH-ES+A256KW`` (EC keys; Concat KDF per RFC 7518 §4.6, no apu/apv) or
``RSA-OAEP-256`` (RSA keys); content ``A256GCM`` with AAD = ASCII of the protected header string.
Built on ``cryptography`` directly so the wire format is exactly Trustee's; tests check that
``jwcrypto`` decrypts it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from inclavare.crypto.b64 import b64url_decode, b64url_encode
from inclavare.crypto.jwk import PublicKey, jwk_from_public_key, public_key_from_jwk
from inclavare.errors import FormatError, InclavareError

ECDH_ALG = "ECDH-ES+A256KW"
RSA_ALG = "RSA-OAEP-256"
ENC = "A256GCM"
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class JweError(InclavareError):
    """A JWE could not be built or opened (bad key, tampered ciphertext, unsupported header)."""


def _kek(shared: bytes, alg: str) -> bytes:
    alg_b = alg.encode("ascii")
    other = (
        len(alg_b).to_bytes(4, "big") + alg_b
        + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")  # empty PartyUInfo / PartyVInfo
        + (256).to_bytes(4, "big")
    )
    return ConcatKDFHash(algorithm=hashes.SHA256(), length=32, otherinfo=other).derive(shared)


def key_alg(key: PublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ECDH_ALG
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALG
    raise JweError(f"a {type(key).__name__} cannot receive a JWE")


def check_recipient_jwk(jwk: object) -> PublicKey:
    """Parse a TEE public key and check it can receive a JWE (its ``alg``, if any, must match)."""
    key = public_key_from_jwk(jwk)
    expected = key_alg(key)
    declared = jwk.get("alg") if isinstance(jwk, Mapping) else None
    if declared is not None and declared != expected:
        raise FormatError(f"TEE key alg {declared!r} is not supported for this key (use {expected})")
    return key


def encrypt(recipient: PublicKey, plaintext: bytes) -> dict[str, str]:
    """Encrypt ``plaintext`` to ``recipient``; returns the flattened JSON serialisation."""
    cek = AESGCM.generate_key(bit_length=256)
    alg = key_alg(recipient)
    header: dict[str, Any] = {"alg": alg, "enc": ENC}
    if isinstance(recipient, ec.EllipticCurvePublicKey):
        epk = ec.generate_private_key(recipient.curve)
        shared = epk.exchange(ec.ECDH(), recipient)
        header["epk"] = jwk_from_public_key(epk.public_key())
        encrypted_key = aes_key_wrap(_kek(shared, alg), cek)
    else:
        assert isinstance(recipient, rsa.RSAPublicKey)
        encrypted_key = recipient.encrypt(cek, _OAEP)
    protected = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return {
        "protected": protected,
        "encrypted_key": b64url_encode(encrypted_key),
        "iv": b64url_encode(iv),
        "ciphertext": b64url_encode(sealed[:-16]),
        "tag": b64url_encode(sealed[-16:]),
    }


def decrypt(private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, jwe: object) -> bytes:
    """Open a flattened-JSON JWE addressed to ``private_key``; any defect raises ``JweError``."""
    if not isinstance(jwe, Mapping):
        raise JweError("JWE: expected a JSON object")
    try:
        protected = jwe["protected"]
        if not isinstance(protected, str):
            raise JweError("JWE: 'protected' must be a string")
        header = json.loads(b64url_decode(protected, "JWE protected header"))
        if not isinstance(header, dict):
            raise JweError("JWE: protected header is not an object")
        for extra_name in ("unprotected", "header"):  # RFC 7516 §7.2.1: disjoint header sets
            extra = jwe.get(extra_name, {})
            if not isinstance(extra, Mapping) or set(extra) & set(header):
                raise JweError(f"JWE: '{extra_name}' must be an object disjoint from the other headers")
            header = {**header, **extra}
        if header.get("enc") != ENC:
            raise JweError(f"JWE: unsupported enc {header.get('enc')!r}")
        encrypted_key = b64url_decode(jwe["encrypted_key"], "JWE encrypted_key")
        iv = b64url_decode(jwe["iv"], "JWE iv")
        ciphertext = b64url_decode(jwe["ciphertext"], "JWE ciphertext")
        tag = b64url_decode(jwe["tag"], "JWE tag")
        if "aad" in jwe:
            raise JweError("JWE: external aad is not used by the KBS protocol")
        if len(iv) != 12 or len(tag) != 16:
            raise JweError("JWE: iv must be 12 bytes and tag 16 bytes")
        alg = header.get("alg")
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            if alg != ECDH_ALG:
                raise JweError(f"JWE: alg {alg!r} does not match an EC key")
            epk = public_key_from_jwk(header.get("epk"))
            if not isinstance(epk, ec.EllipticCurvePublicKey) or epk.curve.name != private_key.curve.name:
                raise JweError("JWE: epk is not on the recipient's curve")
            shared = private_key.exchange(ec.ECDH(), epk)
            cek = aes_key_unwrap(_kek(shared, ECDH_ALG), encrypted_key)
        else:
            if alg != RSA_ALG:
                raise JweError(f"JWE: alg {alg!r} does not match an RSA key")
            cek = private_key.decrypt(encrypted_key, _OAEP)
        if len(cek) != 32:
            raise JweError("JWE: content key must be 32 bytes")
        return AESGCM(cek).decrypt(iv, ciphertext + tag, protected.encode("ascii"))
    except KeyError as exc:
        raise JweError(f"JWE: missing member {exc.args[0]!r}") from exc
    except (InvalidTag, InvalidUnwrap) as exc:
        raise JweError("JWE: decryption failed (wrong key or tampered ciphertext)") from exc
    except FormatError as exc:
        raise JweError(str(exc)) from exc
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # json/RSA decoding errors
        raise JweError(f"JWE: malformed ({exc.__class__.__name__})") from exc
