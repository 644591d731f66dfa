"""Bounded, thread-safe memo tables (verification caches).

Keys are the exact inputs (bytes/str and tuples of them), never digests of them, so a hit is an
equality match of the full content: two different inputs can never share a result. Only
time-independent facts are stored (parses, signature checks, validated paths with their validity
windows); every time-dependent condition is re-evaluated by the caller at its own ``now``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from inclavare.errors import FormatError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
P = TypeVar("P")

_MISSING = object()


class Memo(Generic[K, V]):
    """Least-recently-used table of at most ``size`` entries."""

    __slots__ = ("_data", "_lock", "size", "name")

    def __init__(self, name: str, size: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.size = size
        self.name = name

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key, _MISSING)
            if value is _MISSING:
                return None
            self._data.move_to_end(key)
            return value  # type: ignore[return-value]

    def put(self, key: K, value: V) -> V:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return value

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        found = self.get(key)
        if found is not None:
            return found
        return self.put(key, compute())

    def parse(self: Memo[K, P | FormatError], key: K, parser: Callable[[], P]) -> P:
        """``parser()``, memoised together with its FormatError: malformed input is parsed once
        and raises the same typed error every time."""
        found = self.get(key)
        if found is None:
            try:
                found = parser()
            except FormatError as exc:
                found = exc
            self.put(key, found)
        if isinstance(found, FormatError):
            raise found
        return found

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


_ALL: list[Memo[object, object]] = []


def memo(name: str, size: int) -> Memo[K, V]:
    """Create a named table; ``clear_all`` empties every table (tests, key rotation)."""
    table: Memo[K, V] = Memo(name, size)
    _ALL.append(table)  # type: ignore[arg-type]
    return table


def clear_all() -> None:
    for table in _ALL:
        table.clear()
