"""Immutable value classes for modules on rune's hot path.

Elsewhere values are frozen dataclasses; ``dataclasses`` (with ``inspect``) costs ~15 ms to
import on these machines, more than rune's whole decision, so hot-path modules subclass this:
slots, no mutation after ``__init__``, equality, hashing and repr over the slots. No
``from __future__ import annotations``: rune's fast path imports this module and must not load
``__future__``.
"""


class Immutable:
    """Immutable value with equality and repr over its slots."""

    __slots__: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _set(self, **values: object) -> None:
        for k, v in values.items():
            object.__setattr__(self, k, v)

    def _items(self) -> tuple[object, ...]:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._items() == other._items()

    def __hash__(self) -> int:
        return hash(self._items())

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{type(self).__name__}({inner})"
