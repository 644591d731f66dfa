"""RCAR sessions: Authed{request, nonce} -> Attested{token}, with expiry, kept in the store.

Sessions live in the store's ``kbs_sessions`` table, so any worker or replica serves any step of
a flow (no sticky sessions): ``/auth`` on one, ``/attest`` on another, the resource on a third.
A session attests once: the token is written with ``... WHERE token IS NULL``, so of two
``/attest`` calls racing on two replicas exactly one verification counts and the other gets the
same token (as a second ``/attest`` does in Trustee); the nonce is single-use across replicas.
The table is bounded in total (``max_sessions``) and per client (``max_per_client``) by counters
that every replica updates in the same transaction as the insert, so one client cannot take every
slot. An attested session never changes again, so each process keeps the ones it has seen in a
small cache and a resource request after attestation costs no store round trip.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from inclavare.services.kbs.client_limits import TokenBuckets, TooManyRequests
from inclavare.services.kbs.store import KbsStore
from inclavare.services.kbs.token_verifier import tee_public_key

ATTESTED_CACHE = 4096  # attested sessions remembered per process


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


class _Full(Exception):
    """Inside ``create``'s transaction: a cap was reached (the transaction rolls back)."""

    def __init__(self, per_client: bool) -> None:
        self.per_client = per_client


class SessionMap:
    def __init__(self, store: KbsStore, timeout_s: float, max_sessions: int, clock: Any = time.time,
                 max_per_client: int | None = None, buckets: TokenBuckets | None = None) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        self._clock = clock
        self._buckets = buckets  # purge forgets the rows of idle clients whose bucket is full
        self._attested: OrderedDict[str, Session] = OrderedDict()
        self._last_purge = clock()

    def __len__(self) -> int:
        with self.store.reading() as cur:
            cur.execute("SELECT value FROM kbs_meta WHERE key = 'sessions'")
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def count(self, client: str) -> int:
        with self.store.reading() as cur:
            cur.execute(self.store.sql("SELECT sessions FROM kbs_clients WHERE client = ?"), (client,))
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def create(self, tee: str, nonce: str, client: str = "") -> Session:
        now = self._clock()
        if now - self._last_purge > min(30.0, self.timeout_s):
            self.purge(now)
        session = Session(secrets.token_hex(16), tee, nonce, now + self.timeout_s, client=client)
        try:
            self._insert(session)
        except _Full:
            self.purge(now)  # expired sessions may hold the slots
            try:
                self._insert(session)
            except _Full as full:
                raise self._refusal(full.per_client, client, now) from None
        return session

    def _insert(self, s: Session) -> None:
        store = self.store
        limit = self.max_per_client if self.max_per_client is not None else 2**62
        burst = self._buckets.burst if self._buckets is not None else 0.0
        with store.ephemeral() as cur:
            cur.execute(store.sql("UPDATE kbs_meta SET value = value + 1 WHERE key = 'sessions' AND value < ?"),
                        (self.max_sessions,))
            if cur.rowcount != 1:
                raise _Full(per_client=False)
            cur.execute(store.sql(
                "INSERT INTO kbs_clients (client, tokens, updated, sessions) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (client) DO UPDATE SET sessions = kbs_clients.sessions + 1 "
                "WHERE kbs_clients.sessions < ?"), (s.client, burst, s.expires - self.timeout_s, limit))
            if cur.rowcount != 1:
                raise _Full(per_client=True)
            cur.execute(store.sql("INSERT INTO kbs_sessions (id, client, tee, nonce, expires) VALUES (?, ?, ?, ?, ?)"),
                        (s.id, s.client, s.tee, s.nonce, s.expires))

    def _refusal(self, per_client: bool, client: str, now: float) -> TooManyRequests:
        query = "SELECT MIN(expires) FROM kbs_sessions" + (" WHERE client = ?" if per_client else "")
        with self.store.reading() as cur:
            cur.execute(self.store.sql(query), (client,) if per_client else ())
            row = cur.fetchone()
        retry = (float(row[0]) - now) if row and row[0] is not None else 1.0
        if per_client:
            return TooManyRequests(
                f"too many open sessions from this client (at most {self.max_per_client}); retry later", retry)
        return TooManyRequests("too many open sessions; retry later", retry, status=503)

    def get(self, session_id: str | None) -> Session | None:
        """The live session, or None when unknown or expired (expired ones go at the next purge)."""
        if not session_id:
            return None
        now = self._clock()
        cached = self._attested.get(session_id)
        if cached is not None:
            return None if cached.expired(now) else cached
        with self.store.reading() as cur:
            cur.execute(self.store.sql(
                "SELECT tee, nonce, expires, client, token, claims FROM kbs_sessions WHERE id = ?"), (session_id,))
            row = cur.fetchone()
        if row is None or now >= float(row[2]):
            return None
        session = Session(session_id, row[0], row[1], float(row[2]), client=row[3])
        if row[4] is not None:
            self._remember(session, row[4], json.loads(row[5]))
        return session

    def attest(self, session: Session, token: str, claims: dict[str, Any], tee_key: Any = None) -> Session:
        """Record the attestation once; the session as attested (by this call or by a racing one)."""
        with self.store.ephemeral() as cur:
            cur.execute(self.store.sql(
                "UPDATE kbs_sessions SET token = ?, claims = ? WHERE id = ? AND token IS NULL AND expires > ?"),
                (token, json.dumps(claims, separators=(",", ":")), session.id, self._clock()))
            won = cur.rowcount == 1
        if won:
            self._remember(session, token, claims, tee_key)
            return session
        return self.get(session.id) or session  # lost a race: the winner's token (or expired: None)

    def _remember(self, session: Session, token: str, claims: dict[str, Any], tee_key: Any = None) -> None:
        session.token, session.claims = token, claims
        session.tee_key = tee_key if tee_key is not None else tee_public_key(claims)
        self._attested[session.id] = session
        while len(self._attested) > ATTESTED_CACHE:
            self._attested.popitem(last=False)

    def purge(self, now: float | None = None) -> None:
        """Delete expired sessions (and their counts); forget idle clients with a full bucket."""
        now = self._clock() if now is None else now
        self._last_purge = now
        store = self.store
        with store.ephemeral() as cur:
            cur.execute(store.sql("DELETE FROM kbs_sessions WHERE expires <= ? RETURNING client"), (now,))
            gone: dict[str, int] = {}
            for (client,) in cur.fetchall():
                gone[client] = gone.get(client, 0) + 1
            for client, n in gone.items():
                cur.execute(store.sql("UPDATE kbs_clients SET sessions = sessions - ? WHERE client = ?"), (n, client))
            if gone:
                cur.execute(store.sql("UPDATE kbs_meta SET value = value - ? WHERE key = 'sessions'"),
                            (sum(gone.values()),))
            if self._buckets is not None:
                b = self._buckets
                cur.execute(store.sql("DELETE FROM kbs_clients WHERE sessions = 0 AND tokens + (? - updated) * ? >= ?"),
                            (now, b.rate, b.burst))
        for sid in [sid for sid, s in self._attested.items() if s.expired(now)]:
            del self._attested[sid]
