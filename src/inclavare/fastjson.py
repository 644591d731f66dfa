"""JSON through CPython's C accelerator (``_json``) only, for rune's hot path.

``import json`` costs ~8 ms of a ~30 ms ``runc run`` on these machines (it compiles regular
expressions, pulling in ``re`` and ``enum``). The scanner and encoder used here are the C code
``json`` itself delegates to; only the thin Python driver is repeated. Anything off the hot path
uses ``json``.
"""

from __future__ import annotations

import _json

_WS = " \t\n\r"


class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"JSON constant {name} is not allowed")


_scan = _json.make_scanner(_Context)  # type: ignore[arg-type]  # duck-typed context, as json does


def loads(data: str | bytes) -> object:
    """Parse one JSON document; raises ValueError (json.JSONDecodeError) on malformed input."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    start = len(text) - len(text.lstrip(_WS))
    try:
        obj, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"expecting a JSON value at offset {exc.value}") from None
    if text[end:].strip(_WS):
        raise ValueError(f"extra data after the JSON value at offset {end}")
    return obj


def _default(obj: object) -> object:
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


_encode = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ":", ",",
                             False, False, False)


def dumps(obj: object) -> str:
    """Compact JSON (no spaces), ASCII-escaped, NaN refused."""
    return "".join(_encode(obj, 0))
