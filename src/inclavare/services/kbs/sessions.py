"""RCAR sessions: Authed{request, nonce} -> Attested{token}, with expiry.

Held in this process's memory (Trustee keeps them in a local map too): a multi-replica
deployment needs sticky sessions for auth -> attest, after which clients can present the
attestation token as ``Authorization: Bearer`` to any replica that shares the token key.
The map is bounded in total (``max_sessions``) and per client (``max_per_client``), so one
client cannot take every slot. All sessions live equally long, so insertion order is expiry
order and purging costs only what has expired.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from inclavare.services.kbs.client_limits import TooManyRequests


@dataclass
class Session:
    id: str
    tee: str
    nonce: str
    expires: float
    token: str | None = None
    claims: dict[str, Any] | None = None
    tee_key: Any = None
    client: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def attested(self) -> bool:
        return self.token is not None

    def expired(self, now: float) -> bool:
        return now >= self.expires


class SessionMap:
    def __init__(self, timeout_s: float, max_sessions: int, clock: Any = time.time,
                 max_per_client: int | None = None) -> None:
        self.timeout_s = timeout_s
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._by_client: dict[str, deque[Session]] = {}
        self._last_purge = clock()

    def __len__(self) -> int:
        return len(self._sessions)

    def count(self, client: str) -> int:
        return len(self._by_client.get(client, ()))

    def create(self, tee: str, nonce: str, client: str = "") -> Session:
        now = self._clock()
        if now - self._last_purge > min(30.0, self.timeout_s) or len(self._sessions) >= self.max_sessions:
            self.purge(now)
        owned = self._by_client.get(client)
        if self.max_per_client is not None and owned and len(owned) >= self.max_per_client:
            raise TooManyRequests(
                f"too many open sessions from this client (at most {self.max_per_client}); retry later",
                owned[0].expires - now,
            )
        if len(self._sessions) >= self.max_sessions:
            oldest = next(iter(self._sessions.values()))
            raise TooManyRequests("too many open sessions; retry later", oldest.expires - now, status=503)
        session = Session(secrets.token_hex(16), tee, nonce, now + self.timeout_s, client=client)
        self._sessions[session.id] = session
        self._by_client.setdefault(client, deque()).append(session)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session, or None when unknown or expired (expired ones go at the next purge)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None or session.expired(self._clock()):
            return None
        return session

    def purge(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        self._last_purge = now
        while self._sessions:
            session = next(iter(self._sessions.values()))
            if not session.expired(now):
                break
            del self._sessions[session.id]
            owned = self._by_client[session.client]
            owned.popleft()  # the client's oldest session is this one: same lifetime, same order
            if not owned:
                del self._by_client[session.client]
