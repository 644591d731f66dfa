"""Admin authentication: ``Authorization: Bearer <JWT>`` signed by the configured admin key.

Deny by default: without ``admin_public_key`` every admin route is refused. Ed25519 (EdDSA) and
P-256 (ES256) keys; the token's ``alg`` must match the key (no ``none``, no HMAC confusion), and
it must carry ``exp`` and ``iat`` with a lifetime of at most one hour. A token is bound to one
broker: its ``aud`` must name this broker's ``admin_audience`` (a token minted for another KBS
that trusts the same admin key is refused), and its ``iss`` must be ``admin_issuer`` when set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from inclavare.crypto import jws
from inclavare.errors import ConfigError, KbsError

MAX_ADMIN_TOKEN_LIFETIME_S = 3600.0


def load_admin_key(path: str) -> jws.VerifyKey:
    try:
        with open(path, "rb") as fh:
            key = load_pem_public_key(fh.read())
    except OSError as exc:
        raise ConfigError(f"cannot read admin_public_key {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"admin_public_key {path} is not a PEM public key") from exc
    if isinstance(key, ed25519.Ed25519PublicKey) or (
        isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        return key
    raise ConfigError(f"admin_public_key {path} must be an Ed25519 or P-256 public key")


DEFAULT_ADMIN_ISSUER = "inclavare-admin"


class AdminAuth:
    def __init__(self, key: jws.VerifyKey | None, audience: str | None = None, issuer: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if key is not None and not audience:
            raise ConfigError("an admin key needs an admin_audience")
        self.key = key
        self.audience = audience
        self.issuer = issuer
        self.clock = clock

    def check(self, authorization: str | None, endpoint: str) -> None:
        if self.key is None:
            raise _denied(endpoint, "admin API disabled (no admin_public_key configured)")
        if not authorization or not authorization.startswith("Bearer "):
            raise _denied(endpoint, "missing 'Authorization: Bearer <token>'")
        token = authorization[len("Bearer "):].strip()
        try:
            claims = jws.verify(token, self.key, now=self.clock(), max_lifetime=MAX_ADMIN_TOKEN_LIFETIME_S).claims
        except jws.JwtError as exc:
            raise _denied(endpoint, str(exc)) from exc
        if not _audience_matches(claims.get("aud"), self.audience):
            raise _denied(endpoint, f"token 'aud' does not name this broker ({self.audience!r})")
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise _denied(endpoint, f"token 'iss' is not {self.issuer!r}")


def _audience_matches(aud: Any, expected: str | None) -> bool:
    """RFC 7519 4.1.3: ``aud`` is one string or a list of strings; absent never matches."""
    if isinstance(aud, str):
        return aud == expected
    return isinstance(aud, list) and all(isinstance(a, str) for a in aud) and expected in aud


def _denied(endpoint: str, why: str) -> KbsError:
    return KbsError(f"admin access denied for endpoint {endpoint}: {why}", kind="AdminAuthAccess")


def make_admin_token(key: jws.SigningKey, audience: str, issuer: str = DEFAULT_ADMIN_ISSUER,
                     lifetime_s: int = 300, now: float | None = None) -> str:
    """A short-lived admin token for the broker named ``audience`` (what ``inclavare kbs admin`` sends)."""
    issued = int(time.time() if now is None else now)
    return jws.sign({"iat": issued, "nbf": issued, "exp": issued + lifetime_s, "sub": "inclavare-admin",
                     "aud": audience, "iss": issuer}, key)
