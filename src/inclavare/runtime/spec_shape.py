"""The shape of an OCI spec, checked once, before rune creates anything for a container.

rune reads a few fields of ``config.json`` (the process, the root, the mounts, the
annotations, some of ``linux``) and runc reads the whole spec with Go's ``encoding/json``. The
check makes both read the same thing and lets the rest of rune trust the types it reads:

* every field rune reads has the JSON type runc's Go structs give it (``null`` is what Go
  reads as absent, so the key is dropped);
* no key differs from a field rune reads only in letter case: Go matches field names
  case-insensitively (``"Process"`` is runc's ``process``; ``"ſ"`` folds to ``"s"``), so such a
  key would make runc run what rune never saw;
* nesting is bounded (:data:`MAX_DEPTH`; an OCI spec is at most ~8 levels deep) so nothing
  downstream recurses without end, and no string holds a lone surrogate (Go would turn it into
  U+FFFD, rune would fail to write it).

Imports nothing beyond the errors module: it runs on rune's create path.
"""

from __future__ import annotations

from inclavare.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    Shape: TypeAlias = Any  # a kind name, or a dict of field shapes, or a one-element list

MAX_DEPTH = 64  # levels of objects/arrays; a runtime-generated spec uses fewer than 10

STRING, STRINGS, UINT32, OBJECT = "string", "strings", "uint32", "object"


class SpecShapeError(ConfigError):
    """config.json is not valid JSON, or a field rune reads has the wrong type."""


# The fields rune reads or writes, by object; a dict is an object with these fields, a
# one-element list is an array of that shape. Fields rune does not read are left to runc.
_NAMESPACE = {"type": STRING, "path": STRING}
_MOUNT = {"destination": STRING, "source": STRING, "type": STRING, "options": STRINGS}
SPEC_SHAPE: dict[str, Shape] = {
    "process": {"args": STRINGS, "env": STRINGS, "cwd": STRING, "user": {"uid": UINT32, "gid": UINT32}},
    "root": {"path": STRING},
    "mounts": [_MOUNT],
    "annotations": OBJECT,  # values: strings (checked below)
    "linux": {"namespaces": [_NAMESPACE], "devices": [OBJECT], "resources": {"devices": [OBJECT]},
              "uidMappings": [OBJECT], "gidMappings": [OBJECT]},
}


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def check_spec(spec: dict[str, Any]) -> None:
    """Raise :class:`SpecShapeError` unless ``spec`` has the shape above; drops null fields."""
    _check_depth_and_text(spec)
    _check_object(spec, SPEC_SHAPE, "")
    annotations = spec.get("annotations", {})
    for key, value in annotations.items():
        if not isinstance(value, str):
            raise SpecShapeError(f"config.json: annotation {_short(key)} must be a string, not {_kind(value)}")


def _short(text: str) -> str:
    return repr(text[:60])


def _check_object(obj: dict[str, Any], fields: dict[str, Shape], where: str) -> None:
    folded = {name.casefold(): name for name in fields}
    for key in list(obj):
        name = folded.get(key.casefold())
        if name is not None and name != key:
            raise SpecShapeError(f"config.json: key {where}{_short(key)} differs from {where}{name} only in "
                                 "letter case (runc would read it as that field)")
    for name, shape in fields.items():
        if name not in obj:
            continue
        if obj[name] is None:
            del obj[name]  # Go reads null as the field's zero value: the same as absent
            continue
        _check_value(obj[name], shape, where + name)


def _check_value(value: object, shape: Shape, where: str) -> None:
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            raise SpecShapeError(f"config.json: {where} must be an object, not {_kind(value)}")
        _check_object(value, shape, where + ".")
    elif isinstance(shape, list):
        if not isinstance(value, list):
            raise SpecShapeError(f"config.json: {where} must be an array, not {_kind(value)}")
        for i, item in enumerate(value):
            _check_value(item, shape[0], f"{where}[{i}]")
    elif shape == OBJECT:
        if not isinstance(value, dict):
            raise SpecShapeError(f"config.json: {where} must be an object, not {_kind(value)}")
    elif shape == STRING:
        if not isinstance(value, str) or "\0" in value:
            raise SpecShapeError(f"config.json: {where} must be a string without NUL, not {_kind(value)}")
    elif shape == STRINGS:
        if not isinstance(value, list) or not all(isinstance(v, str) and "\0" not in v for v in value):
            raise SpecShapeError(f"config.json: {where} must be an array of strings without NUL")
    elif shape == UINT32:
        if type(value) is not int or not 0 <= value < 2**32:
            raise SpecShapeError(f"config.json: {where} must be an integer from 0 to 4294967295")


def _check_depth_and_text(spec: object) -> None:
    """Iteratively (no recursion on untrusted depth): bounded nesting, UTF-8-encodable text."""
    stack: list[tuple[object, int]] = [(spec, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecShapeError(f"config.json is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            for key, value in node.items():
                _check_text(key)
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
        elif isinstance(node, str):
            _check_text(node)


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise SpecShapeError("config.json holds a string with a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
