"""JSON through CPython's C accelerator (``_json``) only, for rune's hot path.

``import json`` costs ~8 ms of a ~30 ms ``runc run`` on these machines (it compiles regular
expressions, pulling in ``re`` and ``enum``). The scanner and encoder used here are the C code
``json`` itself delegates to; only the thin Python driver is repeated. Anything off the hot path
uses ``json``.

Every malformed input raises ``ValueError``: on CPython 3.11 the C scanner finds its error type
in ``sys.modules["json.decoder"]`` and, when that module was never imported, fails with
``SystemError`` instead; nesting beyond the interpreter's recursion limit raises
``RecursionError``. Both are turned into ``ValueError`` here (only the failure path pays for
``json.decoder``, to word the error as ``json`` does).
"""

from __future__ import annotations

import _json

_WS = " \t\n\r"


_INF = float("inf")


def _finite_float(text: str) -> float:
    """Numbers beyond a double's range are refused (json gives inf, which nothing can write back)."""
    value = float(text)
    if value in (_INF, -_INF):
        raise ValueError(f"JSON number {text[:40]} is out of range")
    return value


class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = staticmethod(_finite_float)
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"JSON constant {name} is not allowed")


_scan = _json.make_scanner(_Context)  # type: ignore[arg-type]  # duck-typed context, as json does


def loads(data: str | bytes) -> object:
    """Parse one JSON document (UTF-8 if bytes; NaN and Infinity refused); raises ValueError
    (never SystemError or RecursionError) on malformed input."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    start = len(text) - len(text.lstrip(_WS))
    try:
        obj, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"expecting a JSON value at offset {exc.value}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except SystemError:
        raise _scanner_error(text, start) from None
    if text[end:].strip(_WS):
        raise ValueError(f"extra data after the JSON value at offset {end}")
    return obj


def _scanner_error(text: str, start: int) -> ValueError:
    """The error the C scanner meant to raise: it needs ``json.decoder`` loaded to build it."""
    import json.decoder  # noqa: F401  (the scanner looks its error type up in sys.modules)

    try:
        _scan(text, start)
    except ValueError as exc:  # json.JSONDecodeError
        return exc
    except (StopIteration, RecursionError, SystemError):
        pass
    return ValueError("malformed JSON")


def _default(obj: object) -> object:
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


_encode = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ":", ",",
                             False, False, False)


def dumps(obj: object) -> str:
    """Compact JSON (no spaces), ASCII-escaped, NaN refused."""
    return "".join(_encode(obj, 0))
