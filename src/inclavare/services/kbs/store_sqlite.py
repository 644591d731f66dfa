"""SQLite backend of the KBS store: WAL journal (durable writes ``synchronous=FULL``, session writes
``NORMAL``), one connection per process under a lock; the workers of one host share the file."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from inclavare.errors import StoreError
from inclavare.services.kbs.store import KbsStore


class SqliteStore(KbsStore):
    placeholder = "?"
    blob_type = "BLOB"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # FULL around durable writes
            self._conn.execute("PRAGMA busy_timeout=30000")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open SQLite store {path}: {exc}") from exc
        self._init_schema()

    @contextmanager
    def _transaction(self, write: bool = True, durable: bool = True) -> Iterator[Any]:
        with self._lock:
            cur = self._conn.cursor()
            sync = write and durable
            try:
                if sync:  # a FULL commit fsyncs the WAL, and with it every commit before it
                    cur.execute("PRAGMA synchronous=FULL")
                if write:
                    cur.execute("BEGIN IMMEDIATE")
                yield cur  # a read is one statement: atomic on its own, no BEGIN/COMMIT to pay
                if write:
                    cur.execute("COMMIT")
            except sqlite3.Error as exc:
                if write:
                    self._quietly(cur, "ROLLBACK")
                raise StoreError(f"SQLite store error: {exc}") from exc
            except BaseException:
                if write:
                    self._quietly(cur, "ROLLBACK")
                raise
            finally:
                if sync:
                    self._quietly(cur, "PRAGMA synchronous=NORMAL")
                cur.close()

    @staticmethod
    def _quietly(cur: sqlite3.Cursor, statement: str) -> None:
        """Clean-up after a failure must not hide the failure."""
        try:
            cur.execute(statement)
        except sqlite3.Error:
            pass

    def close(self) -> None:
        with self._lock:
            self._conn.close()
