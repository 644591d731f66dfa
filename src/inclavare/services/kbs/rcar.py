"""The RCAR handshake (Request-Challenge-Attestation-Response) of KBS protocol 0.4.0.

``/auth`` opens a session bound to a fresh 32-byte nonce; ``/attest`` accepts evidence only if
its runtime data carries that nonce and the TEE report data is bound to (nonce, TEE key), so
evidence replayed on another session or bound to another key fails. A session attests once, on
whichever replica: a second ``/attest`` on an attested session returns the same token, as Trustee
does, and is not verified again. ``/auth`` is the one unauthenticated call that costs the broker
a stored session, so it is rate-limited per client before anything is parsed.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from inclavare.crypto.jwe import check_recipient_jwk
from inclavare.errors import FormatError, InclavareError, KbsError
from inclavare.services.kbs.attestation_service import BuiltinAttestationService, evidence_error
from inclavare.services.kbs.client_limits import TokenBuckets, TooManyRequests
from inclavare.services.kbs.protocol import (
    attest_error,
    auth_error,
    make_nonce,
    parse_attestation,
    parse_request,
    runtime_data,
)
from inclavare.services.kbs.sessions import Session, SessionMap

log = logging.getLogger("inclavare.kbs")


class RcarHandshake:
    def __init__(self, sessions: SessionMap, attestation: BuiltinAttestationService,
                 auth_rate: TokenBuckets | None = None) -> None:
        self.sessions = sessions
        self.attestation = attestation
        self.auth_rate = auth_rate

    def admit(self, client: str) -> None:
        """Refuse (429) a client over its ``/auth`` rate, before its body is read."""
        wait = self.auth_rate.take(client) if self.auth_rate is not None else 0.0
        if wait > 0:
            raise TooManyRequests("too many /auth requests from this client; retry later", wait)

    def auth(self, body: bytes, client: str = "") -> tuple[Session, dict[str, Any]]:
        request = parse_request(body)
        reason = self.attestation.supports(request.tee)
        if reason is not None:
            raise auth_error(reason)
        session = self.sessions.create(request.tee, make_nonce(), client)
        return session, {"nonce": session.nonce, "extra-params": ""}

    def attest(self, session_id: str | None, body: bytes, known: Session | None = None) -> Session:
        """``known``: the session already looked up for ``session_id`` (saves a store round trip)."""
        if not session_id:
            raise attest_error("cookie not found")
        session = known if known is not None and known.id == session_id else self.sessions.get(session_id)
        if session is None:
            raise attest_error("session not found or expired; start again with /auth")
        if session.attested:
            return session
        attestation = parse_attestation(body)
        if not hmac.compare_digest(attestation.nonce.encode(), session.nonce.encode()):
            raise attest_error(
                "the nonce in the handshake session is different from the client side in "
                "KBS protocol's Attestation message"
            )
        try:
            tee_key = check_recipient_jwk(attestation.tee_pubkey)
        except FormatError as exc:
            raise attest_error(f"invalid tee-pubkey: {exc}") from exc
        rd = runtime_data(attestation.tee_pubkey, attestation.nonce, attestation.additional_evidence)
        try:
            result = self.attestation.verify_and_appraise(
                session.tee, attestation.primary_evidence, rd, attestation.init_data,
                attestation.additional_evidence,
            )
        except KbsError:
            raise
        except InclavareError as exc:
            log.info("attestation failed for session %s (%s): %s", session.id[:8], session.tee, exc)
            raise evidence_error(exc) from exc
        # The claims carry this very key (runtime_data_claims.tee-pubkey), already parsed above.
        session = self.sessions.attest(session, result.token, result.claims, tee_key)
        if not session.attested:
            raise attest_error("session not found or expired; start again with /auth")
        return session
