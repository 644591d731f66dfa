"""JSON Web Keys (RFC 7517/7518) to and from ``cryptography`` key objects.

Only the key types the KBS protocol uses: EC P-256/P-384/P-521, RSA (>= 2048 bits), Ed25519
(OKP). Every malformed or off-curve key raises ``FormatError``; nothing half-parsed escapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from inclavare.crypto.b64 import b64url_decode, b64url_encode
from inclavare.errors import FormatError

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "P-256": (ec.SECP256R1, 32),
    "P-384": (ec.SECP384R1, 48),
    "P-521": (ec.SECP521R1, 66),
}
MIN_RSA_BITS = 2048


def _field(jwk: Mapping[str, Any], name: str) -> bytes:
    if name not in jwk:
        raise FormatError(f"JWK: missing member {name!r}")
    return b64url_decode(jwk[name], f"JWK member {name!r}")


def public_key_from_jwk(jwk: object) -> PublicKey:
    """Parse a public JWK; the point must lie on the named curve."""
    if not isinstance(jwk, Mapping):
        raise FormatError("JWK: expected a JSON object")
    kty = jwk.get("kty")
    if kty == "EC":
        crv = jwk.get("crv")
        if crv not in CURVES:
            raise FormatError(f"JWK: unsupported EC curve {crv!r}")
        curve_cls, size = CURVES[str(crv)]
        x, y = _field(jwk, "x"), _field(jwk, "y")
        if len(x) != size or len(y) != size:
            raise FormatError(f"JWK: {crv} coordinates must be {size} bytes")
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(curve_cls(), b"\x04" + x + y)
        except ValueError as exc:
            raise FormatError(f"JWK: point is not on {crv}") from exc
    if kty == "RSA":
        n = int.from_bytes(_field(jwk, "n"), "big")
        e = int.from_bytes(_field(jwk, "e"), "big")
        if n.bit_length() < MIN_RSA_BITS:
            raise FormatError(f"JWK: RSA modulus below {MIN_RSA_BITS} bits")
        if e < 3 or e % 2 == 0:
            raise FormatError("JWK: invalid RSA public exponent")
        try:
            return rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise FormatError("JWK: invalid RSA key") from exc
    if kty == "OKP":
        if jwk.get("crv") != "Ed25519":
            raise FormatError(f"JWK: unsupported OKP curve {jwk.get('crv')!r}")
        x = _field(jwk, "x")
        if len(x) != 32:
            raise FormatError("JWK: Ed25519 key must be 32 bytes")
        return ed25519.Ed25519PublicKey.from_public_bytes(x)
    raise FormatError(f"JWK: unsupported key type {kty!r}")


def jwk_from_public_key(key: PublicKey, alg: str | None = None) -> dict[str, str]:
    """The public JWK of ``key`` (members in RFC 7638 order), with ``alg`` when given."""
    out: dict[str, str]
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv = next((name for name, (cls, _) in CURVES.items() if isinstance(key.curve, cls)), None)
        if crv is None:
            raise FormatError(f"unsupported EC curve {key.curve.name}")
        size = CURVES[crv][1]
        nums = key.public_numbers()
        out = {
            "crv": crv,
            "kty": "EC",
            "x": b64url_encode(nums.x.to_bytes(size, "big")),
            "y": b64url_encode(nums.y.to_bytes(size, "big")),
        }
    elif isinstance(key, rsa.RSAPublicKey):
        rn = key.public_numbers()
        out = {
            "e": b64url_encode(rn.e.to_bytes((rn.e.bit_length() + 7) // 8, "big")),
            "kty": "RSA",
            "n": b64url_encode(rn.n.to_bytes((rn.n.bit_length() + 7) // 8, "big")),
        }
    elif isinstance(key, ed25519.Ed25519PublicKey):
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        out = {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw)}
    else:
        raise FormatError(f"unsupported key type {type(key).__name__}")
    if alg is not None:
        out["alg"] = alg
    return out
