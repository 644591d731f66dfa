"""Rego policies compiled once and evaluated many times (regopy / rego-cpp).

A fresh interpreter costs ~4 ms per request; a compiled bundle ~0.1 ms. regopy bakes ``data``
into the bundle at build time (data added later is ignored), and rego-cpp 1.5.2 aborts the
whole process on ``with`` over rules that reference other rules, so per-request data is never
rebound: one bundle is compiled per distinct ``data`` document and kept in a bounded LRU cache
(``PolicyCache``). The policy sees Trustee's layout unchanged (``input`` = claims, ``data.plugin``).

regopy reports a ``false`` result as *undefined*; the query binds the rule to a variable so the
two are told apart, and undefined always means deny.

The input document is handed to rego-cpp through the same C calls as ``regopy.Input`` makes
(``regoInput*``, one per value, the same tree), but without regopy's per-value Python wrappers:
building the input was half the cost of an evaluation (``_build_input``).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from inclavare.errors import InclavareError

PACKAGE = "policy"
MAX_POLICY_BYTES = 256 * 1024
_PACKAGE_DECL = re.compile(r"^\s*package\s+policy\s*$", re.MULTILINE)


class PolicyError(InclavareError):
    """A policy could not be compiled or evaluated (syntax error, wrong package, runtime error)."""


class RegoPolicy:
    """One compiled module of ``package policy`` with a fixed ``data`` document; thread-safe."""

    def __init__(self, source: str, rule: str, data: Mapping[str, Any] | None = None) -> None:
        import regopy

        if len(source.encode()) > MAX_POLICY_BYTES:
            raise PolicyError(f"policy is larger than {MAX_POLICY_BYTES} bytes")
        if not _PACKAGE_DECL.search(source):
            raise PolicyError("policy must declare 'package policy'")
        self.source = source
        self.rule = rule
        target = f"data.{PACKAGE}" + (f".{rule}" if rule else "")
        self._lock = threading.Lock()
        self._interp = regopy.Interpreter()
        self._interp.log_level = regopy.LogLevel.NONE  # errors come back as PolicyError, not on stdout
        try:
            self._interp.add_module("policy.rego", source)
            if data:
                self._interp.add_data_json(json.dumps(data))
            self._bundle = self._interp.build(f"result := {target}", [])
        except regopy.RegoError as exc:
            raise PolicyError(f"policy does not compile: {_compile_error(str(exc), source)}") from None
        if not self._bundle.ok():
            raise PolicyError(f"policy does not compile: {_compile_error(str(self._bundle.node), source)}")

    def evaluate(self, input_doc: Mapping[str, Any]) -> Any:
        """The value of the rule, or ``None`` when undefined. Errors raise ``PolicyError``."""
        import regopy

        with self._lock:
            try:
                _set_input(self._interp, input_doc)
                out = self._interp.query_bundle(self._bundle)
            except regopy.RegoError as exc:
                raise PolicyError(f"policy evaluation failed: {_first_line(str(exc))}") from exc
            text = str(out)
            ok = out.ok()
        if text.strip() == "undefined":
            return None
        if not ok:
            raise PolicyError(f"policy evaluation failed: {_first_line(text)}")
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise PolicyError("policy evaluation returned unreadable output") from exc
        bindings = parsed.get("bindings") if isinstance(parsed, dict) else None
        if not isinstance(bindings, dict) or "result" not in bindings:
            return None
        return bindings["result"]


class PolicyCache:
    """Compiled policies by (source, rule, data); LRU-bounded so varied requests can't grow it."""

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._entries: OrderedDict[str, RegoPolicy] = OrderedDict()
        self._digests: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, source: str, rule: str, data: Mapping[str, Any] | None = None) -> RegoPolicy:
        digest = self._digests.get(source)
        if digest is None:
            digest = hashlib.sha256(source.encode()).hexdigest()
            if len(self._digests) >= self._limit:
                self._digests.clear()
            self._digests[source] = digest
        key = digest + rule + json.dumps(data or {}, sort_keys=True, separators=(",", ":"))
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        policy = RegoPolicy(source, rule, data)
        with self._lock:
            self._entries[key] = policy
            while len(self._entries) > self._limit:
                self._entries.popitem(last=False)
        return policy

    def __len__(self) -> int:
        return len(self._entries)


_ERROR_AT = re.compile(r"\(error\s+\d+:[^|()]*\|(\d+)\|\d+\s+\(errormsg\s+(\d+):")


def _compile_error(text: str, source: str) -> str:
    """regopy reports errors as S-expressions with byte offsets
    (``(rego-errorseq (error 11:policy.rego|64|2 (errormsg 16:this is unclosed)``): the first one
    as ``line L, column C: message``, where the offset points in the policy's source."""
    m = _ERROR_AT.search(text)
    if m is None:
        return _first_line(text)
    offset, size = int(m[1]), int(m[2])
    message = text[m.end():m.end() + size]
    raw = source.encode()[:offset].decode("utf-8", "replace")
    line = raw.count("\n") + 1
    column = len(raw) - (raw.rfind("\n") + 1) + 1
    return f"line {line}, column {column}: {message}"


def _build_input(lib: Any, handle: Any, value: Any) -> None:
    """Push ``value`` onto rego-cpp's input builder ``handle`` (what ``regopy.Input`` does)."""
    kind = type(value)
    if kind is str:
        _check(lib.regoInputString(handle, value.encode("utf-8")))
    elif kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise PolicyError(f"policy input keys must be strings, got {type(key).__name__}")
            _check(lib.regoInputString(handle, key.encode("utf-8")))
            _build_input(lib, handle, item)
            _check(lib.regoInputObjectItem(handle))
        _check(lib.regoInputObject(handle, len(value)))
    elif kind is list or kind is tuple:
        for item in value:
            _build_input(lib, handle, item)
        _check(lib.regoInputArray(handle, len(value)))
    elif kind is bool:
        _check(lib.regoInputBoolean(handle, value))
    elif kind is int:
        if not -(2**63) <= value < 2**63:  # ctypes would wrap it silently
            raise PolicyError("policy input holds an integer beyond 64 bits")
        _check(lib.regoInputInt(handle, value))
    elif kind is float:
        _check(lib.regoInputFloat(handle, value))
    elif value is None:
        _check(lib.regoInputNull(handle))
    elif isinstance(value, Mapping):
        _build_input(lib, handle, dict(value))
    elif isinstance(value, (set, frozenset)):
        for item in value:
            _build_input(lib, handle, item)
        _check(lib.regoInputSet(handle, len(value)))
    else:
        raise PolicyError(f"policy input cannot hold a {kind.__name__}")


def _check(code: int) -> None:
    if code != 0:
        raise PolicyError(f"policy input could not be built (rego-cpp code {code})")


def _set_input(interp: Any, doc: Mapping[str, Any]) -> None:
    from regopy import rego_shared

    lib = rego_shared.rego
    handle = lib.regoNewInput()
    try:
        _build_input(lib, handle, doc)
        rego_shared.rego_set_input(interp._impl, handle)
    except ctypes.ArgumentError as exc:
        raise PolicyError(f"policy input cannot be represented: {exc}") from exc
    finally:
        lib.regoFreeInput(handle)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " ".join(lines[:3])[:300] if lines else "unknown error"
