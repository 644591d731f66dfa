"""Attestation tokens presented as ``Authorization: Bearer``: ours only, checked fully.

A token is trusted only if signed by this service's token key (configured, so replicas share
it, or generated per process); the ``jwk`` in its header is never trusted. The TEE public key
comes from Trustee's claim path ``submods.cpu0.ear.veraison.annotated-evidence.runtime_data_claims.tee-pubkey``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from inclavare.crypto import jws
from inclavare.crypto.jwe import check_recipient_jwk
from inclavare.crypto.jwk import PublicKey
from inclavare.errors import FormatError, KbsError


class TokenVerifier:
    def __init__(self, public_key: ec.EllipticCurvePublicKey, clock: Callable[[], float] = time.time) -> None:
        self.public_key = public_key
        self.clock = clock

    def verify(self, token: str) -> dict[str, Any]:
        try:
            return jws.verify(token, self.public_key, now=self.clock(), leeway=0).claims
        except jws.JwtError as exc:
            raise KbsError(f"Token Verifier error: {exc}", kind="TokenVerifierError") from exc


def tee_public_key(claims: Mapping[str, Any]) -> PublicKey:
    try:
        jwk = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["runtime_data_claims"]["tee-pubkey"]
        return check_recipient_jwk(jwk)
    except (KeyError, TypeError, FormatError) as exc:
        raise KbsError("Attestation error: Failed to extract Tee public key from claims",
                       kind="AttestationError") from exc
