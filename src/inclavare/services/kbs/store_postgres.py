"""PostgreSQL backend of the KBS store (psycopg 3), for replicas sharing one state.

One connection per server process under a lock, re-opened once if the server dropped it.
Install with ``pip install 'inclavare[postgres]'``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from inclavare.errors import StoreError
from inclavare.services.kbs.store import KbsStore


class PostgresStore(KbsStore):
    placeholder = "%s"
    blob_type = "BYTEA"
    for_update = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError("PostgreSQL store needs psycopg: pip install 'inclavare[postgres]'") from exc
        self._psycopg = psycopg
        self._url = url
        self._conn = self._connect()
        self._init_schema()

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self._url, connect_timeout=10)
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL store: {str(exc).strip()[:200]}") from exc

    @contextmanager
    def _transaction(self, write: bool = True, durable: bool = True) -> Iterator[Any]:
        with self._lock:
            if self._conn.closed:
                self._conn = self._connect()
            try:
                with self._conn.transaction():
                    with self._conn.cursor() as cur:
                        if write and not durable:
                            cur.execute("SET LOCAL synchronous_commit TO OFF")
                        yield cur
            except self._psycopg.OperationalError as exc:
                self._conn.close()
                raise StoreError(f"PostgreSQL store error: {str(exc).strip()[:200]}") from exc
            except self._psycopg.Error as exc:
                raise StoreError(f"PostgreSQL store error: {str(exc).strip()[:200]}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()
