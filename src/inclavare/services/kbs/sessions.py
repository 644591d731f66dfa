"""RCAR sessions: Authed{request, nonce} -> Attested{token}, with expiry.

Held in this process's memory (Trustee keeps them in a local map too): a multi-replica
deployment needs sticky sessions for auth -> attest, after which clients can present the
attestation token as ``Authorization: Bearer`` to any replica that shares the token key.
The map is bounded and expired sessions are purged as new ones arrive.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from inclavare.errors import KbsError


@dataclass
class Session:
    id: str
    tee: str
    nonce: str
    expires: float
    token: str | None = None
    claims: dict[str, Any] | None = None
    tee_key: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def attested(self) -> bool:
        return self.token is not None

    def expired(self, now: float) -> bool:
        return now >= self.expires


class SessionMap:
    def __init__(self, timeout_s: float, max_sessions: int, clock: Any = time.time) -> None:
        self.timeout_s = timeout_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._last_purge = clock()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, tee: str, nonce: str) -> Session:
        now = self._clock()
        if now - self._last_purge > min(30.0, self.timeout_s) or len(self._sessions) >= self.max_sessions:
            self.purge(now)
        if len(self._sessions) >= self.max_sessions:
            raise KbsError("too many open sessions; retry later", kind="AttestationError", status=503)
        session = Session(secrets.token_hex(16), tee, nonce, now + self.timeout_s)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session, or None when unknown or expired (expired ones are dropped)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expired(self._clock()):
            self._sessions.pop(session_id, None)
            return None
        return session

    def purge(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        self._last_purge = now
        for sid in [sid for sid, s in self._sessions.items() if s.expired(now)]:
            del self._sessions[sid]
