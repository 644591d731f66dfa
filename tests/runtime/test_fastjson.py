"""fastjson (rune's lean JSON) agrees with ``json`` and raises only ValueError on malformed text."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inclavare import fastjson

SRC = str(Path(__file__).resolve().parents[2] / "src")

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _no_constants(name: str) -> object:
    raise ValueError(name)  # NaN, Infinity: json's extension fastjson refuses


def _agrees_with_json(text: str) -> None:
    try:
        expected = json.loads(text, parse_constant=_no_constants)
        valid = _finite(expected)  # json turns 1e999 into inf; fastjson refuses it
    except (ValueError, RecursionError):
        valid = False
    if not valid:
        with pytest.raises(ValueError):
            fastjson.loads(text)
        return
    assert fastjson.loads(text) == expected


@settings(max_examples=300, deadline=None)
@given(_values, st.data())
def test_mutated_documents_parse_as_json_does_or_raise_value_error(value: object, data: st.DataObject) -> None:
    text = json.dumps(value)
    _agrees_with_json(text)
    assert fastjson.loads(fastjson.dumps(value)) == value
    pos = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.sampled_from(['"', "\\", ",", "]", "}", "[", "{", ":", "\\u12", "\x01", "NaN", "1e999", "-"]))
    cut = data.draw(st.integers(0, 2))
    _agrees_with_json(text[:pos] + junk + text[pos + cut:])


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='{}[]",:\\ 0123456789.eE-+ntrufalsNIy\n', max_size=40))
def test_random_text_parses_as_json_does_or_raises_value_error(text: str) -> None:
    _agrees_with_json(text)


@pytest.mark.parametrize("text", ['{"a": 1', '{"a": 1,}', '{"a": "\\q"}', "[" * 100_000, '"\\ud800"x', "[1e999]"])
def test_malformed_text_raises_value_error_without_json_loaded(text: str) -> None:
    """rune's interpreter has not imported ``json``: the C scanner cannot build its own error."""
    code = (f"import sys; sys.path.insert(0, {SRC!r}); from inclavare import fastjson\n"
            "assert 'json.decoder' not in sys.modules\n"
            f"try:\n    fastjson.loads({text!r})\nexcept ValueError as e:\n    print('ValueError', e)\n")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("ValueError"), r.stderr[-2000:]
