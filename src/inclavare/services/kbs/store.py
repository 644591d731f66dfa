"""KBS state shared by every worker and replica: resources, policies, reference values (durable)
and RCAR sessions and per-client ``/auth`` buckets (ephemeral). One interface, two SQL backends.

SQLite (``sqlite:///PATH``, WAL) for the workers of one host; PostgreSQL (``postgresql://...``)
so several replicas share one state. Every admin write is one transaction committed durably
(SQLite ``synchronous=FULL``: the WAL is fsynced) before the request is acknowledged, and bumps a
generation counter that workers compare to refresh their compiled-policy caches. Session writes
are committed without waiting for the disk (``ephemeral``: SQLite ``synchronous=NORMAL``,
PostgreSQL ``synchronous_commit = off``): a process killed after its commit loses nothing, only a
crash of the host (SQLite) or of the database server can drop the last few, and a lost session
just means the client starts again with ``/auth``.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from inclavare.errors import StoreError
from inclavare.policy.reference_values import ReferenceValue

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kbs_resources (path TEXT PRIMARY KEY, data {blob} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS kbs_policies (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS kbs_reference_values (name TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS kbs_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    # RCAR sessions (services.kbs.sessions); token/claims are set once, when the session attests.
    "CREATE TABLE IF NOT EXISTS kbs_sessions (id TEXT PRIMARY KEY, client TEXT NOT NULL, tee TEXT NOT NULL, "
    "nonce TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL, token TEXT, claims TEXT)",
    "CREATE INDEX IF NOT EXISTS kbs_sessions_expires ON kbs_sessions (expires)",
    # Per client address: its /auth token bucket and how many live sessions it holds.
    "CREATE TABLE IF NOT EXISTS kbs_clients (client TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, "
    "updated DOUBLE PRECISION NOT NULL, sessions BIGINT NOT NULL)",
)
# kbs_meta counters created with the schema: the policy generation and the live session count.
COUNTERS = ("generation", "sessions")


class KbsStore(ABC):
    """SQL store; subclasses provide the connection, placeholder style and blob type."""

    placeholder = "?"
    blob_type = "BLOB"
    for_update = ""  # row lock for read-modify-write inside a transaction (PostgreSQL: FOR UPDATE)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @abstractmethod
    @contextmanager
    def _transaction(self, write: bool = True, durable: bool = True) -> Iterator[Any]:
        """Yield a cursor inside a transaction committed on exit (``write=False``: read-only, one
        statement on SQLite;
        ``durable=False``: the commit does not wait for the disk, see the module docstring)."""

    def ephemeral(self) -> Any:
        """A write transaction for session state (committed, but not fsynced)."""
        return self._transaction(write=True, durable=False)

    def reading(self) -> Any:
        """A read-only transaction (on SQLite: one statement)."""
        return self._transaction(write=False)

    def sql(self, text: str) -> str:
        """``text`` with ``?`` placeholders in this backend's style."""
        return self._sql(text)

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def _sql(self, text: str) -> str:
        return text.replace("?", self.placeholder)

    def _init_schema(self) -> None:
        with self._transaction() as cur:
            for stmt in SCHEMA:
                cur.execute(stmt.format(blob=self.blob_type))
            for counter in COUNTERS:
                cur.execute(self._sql(
                    "INSERT INTO kbs_meta (key, value) VALUES (?, 0) ON CONFLICT (key) DO NOTHING"
                ), (counter,))

    def _bump(self, cur: Any) -> None:
        cur.execute("UPDATE kbs_meta SET value = value + 1 WHERE key = 'generation'")

    def _one(self, query: str, args: tuple[Any, ...]) -> Any:
        with self._transaction(write=False) as cur:
            cur.execute(self._sql(query), args)
            row = cur.fetchone()
        return None if row is None else row[0]

    # resources -------------------------------------------------------------------------------
    def get_resource(self, path: str) -> bytes | None:
        value = self._one("SELECT data FROM kbs_resources WHERE path = ?", (path,))
        return None if value is None else bytes(value)

    def put_resource(self, path: str, data: bytes) -> None:
        with self._transaction() as cur:
            cur.execute(self._sql(
                "INSERT INTO kbs_resources (path, data) VALUES (?, ?) "
                "ON CONFLICT (path) DO UPDATE SET data = excluded.data"
            ), (path, data))

    def delete_resource(self, path: str) -> bool:
        with self._transaction() as cur:
            cur.execute(self._sql("DELETE FROM kbs_resources WHERE path = ?"), (path,))
            return bool(cur.rowcount)

    def list_resources(self) -> list[str]:
        with self._transaction(write=False) as cur:
            cur.execute("SELECT path FROM kbs_resources ORDER BY path")
            return [row[0] for row in cur.fetchall()]

    # policies ----------------------------------------------------------------------------------
    def get_policy(self, policy_id: str) -> str | None:
        value = self._one("SELECT body FROM kbs_policies WHERE id = ?", (policy_id,))
        return None if value is None else str(value)

    def put_policy(self, policy_id: str, body: str) -> None:
        with self._transaction() as cur:
            cur.execute(self._sql(
                "INSERT INTO kbs_policies (id, body) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET body = excluded.body"
            ), (policy_id, body))
            self._bump(cur)

    # reference values --------------------------------------------------------------------------
    def put_reference_values(self, values: Iterable[ReferenceValue]) -> None:
        with self._transaction() as cur:
            for rv in values:
                cur.execute(self._sql(
                    "INSERT INTO kbs_reference_values (name, record) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET record = excluded.record"
                ), (rv.name, json.dumps(rv.record())))
            self._bump(cur)

    def reference_values(self) -> list[ReferenceValue]:
        with self._transaction(write=False) as cur:
            cur.execute("SELECT record FROM kbs_reference_values ORDER BY name")
            rows = cur.fetchall()
        return [ReferenceValue.from_record(json.loads(row[0])) for row in rows]

    def generation(self) -> int:
        return int(self._one("SELECT value FROM kbs_meta WHERE key = ?", ("generation",)) or 0)


def open_store(url: str) -> KbsStore:
    """Open the store named by ``url`` (``sqlite:///PATH`` or ``postgresql://...``)."""
    if url.startswith("sqlite:///"):
        from inclavare.services.kbs.store_sqlite import SqliteStore

        return SqliteStore(url[len("sqlite:///"):])
    if url.startswith(("postgresql://", "postgres://")):
        from inclavare.services.kbs.store_postgres import PostgresStore

        return PostgresStore(url)
    raise StoreError(f"unsupported store URL {url!r}")
