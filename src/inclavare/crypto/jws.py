"""Compact JWS / JWT (RFC 7515/7519) for attestation tokens (ES256) and admin tokens (EdDSA, ES256).

The verifier is handed the key; the algorithm must match that key's type, so ``alg: none``,
HS256-with-a-public-key and other confusion attacks fail closed. Time claims are checked with
an explicit clock and leeway.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from inclavare.crypto.b64 import b64url_decode, b64url_encode
from inclavare.errors import FormatError, InclavareError
from inclavare.formats.strict_json import loads_strict

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
VerifyKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
MAX_TOKEN_BYTES = 64 * 1024


class JwtError(InclavareError):
    """A token is malformed, badly signed, expired, or uses a disallowed algorithm."""


def alg_for_key(key: SigningKey | VerifyKey) -> str:
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "EdDSA"
    if isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(key.curve, ec.SECP384R1):
        return "ES384"
    raise JwtError(f"unsupported signing curve {key.curve.name}")


_HASH = {"ES256": (hashes.SHA256, 32), "ES384": (hashes.SHA384, 48)}


def sign(claims: Mapping[str, Any], key: SigningKey, extra_header: Mapping[str, Any] | None = None) -> str:
    alg = alg_for_key(key)
    header = {"typ": "JWT", "alg": alg, **(extra_header or {})}
    signing_input = (
        b64url_encode(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    )
    if isinstance(key, ed25519.Ed25519PrivateKey):
        sig = key.sign(signing_input.encode("ascii"))
    else:
        hash_cls, size = _HASH[alg]
        r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), ec.ECDSA(hash_cls())))
        sig = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return signing_input + "." + b64url_encode(sig)


@dataclass(frozen=True)
class VerifiedJwt:
    header: dict[str, Any]
    claims: dict[str, Any]


def _json_part(part: str, what: str) -> dict[str, Any]:
    """Strict JSON: a repeated key (two ``alg``s, two ``exp``s) would mean different things to
    different parsers, so it is refused rather than resolved."""
    value = loads_strict(b64url_decode(part, what), what)
    if not isinstance(value, dict):
        raise JwtError(f"{what} is not a JSON object")
    return value


def verify(
    token: object,
    key: VerifyKey,
    *,
    now: float | None = None,
    leeway: float = 30.0,
    require_exp: bool = True,
    max_lifetime: float | None = None,
) -> VerifiedJwt:
    """Verify signature and time claims; raise ``JwtError`` on any defect."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise JwtError("token must be a compact JWS string of reasonable size")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("token is not a compact JWS (three dot-separated parts)")
    try:
        header = _json_part(parts[0], "JWT header")
        claims = _json_part(parts[1], "JWT claims")
        sig = b64url_decode(parts[2], "JWT signature")
    except FormatError as exc:
        raise JwtError(str(exc)) from exc
    expected = alg_for_key(key)
    if header.get("alg") != expected:
        raise JwtError(f"token alg {header.get('alg')!r} not accepted (key requires {expected})")
    if "crit" in header:
        raise JwtError("token carries unsupported critical header parameters")
    signing_input = (parts[0] + "." + parts[1]).encode("ascii")
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, signing_input)
        else:
            hash_cls, size = _HASH[expected]
            if len(sig) != 2 * size:
                raise JwtError("token signature has the wrong length")
            der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
            key.verify(der, signing_input, ec.ECDSA(hash_cls()))
    except InvalidSignature as exc:
        raise JwtError("token signature does not verify") from exc
    _check_times(claims, time.time() if now is None else now, leeway, require_exp, max_lifetime)
    return VerifiedJwt(header, claims)


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JwtError(f"token claim {name!r} must be a number")
    return float(value)


def _check_times(claims: Mapping[str, Any], now: float, leeway: float, require_exp: bool,
                 max_lifetime: float | None) -> None:
    exp, nbf, iat = _number(claims, "exp"), _number(claims, "nbf"), _number(claims, "iat")
    if exp is None and require_exp:
        raise JwtError("token has no 'exp' claim")
    if exp is not None and now > exp + leeway:
        raise JwtError("token has expired")
    if nbf is not None and now + leeway < nbf:
        raise JwtError("token is not valid yet (nbf)")
    if iat is not None and now + leeway < iat:
        raise JwtError("token was issued in the future (iat)")
    if max_lifetime is not None:
        if iat is None or exp is None:
            raise JwtError("token must carry 'iat' and 'exp'")
        if exp - iat > max_lifetime:
            raise JwtError(f"token lifetime exceeds {int(max_lifetime)} s")
