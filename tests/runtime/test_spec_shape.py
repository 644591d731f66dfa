"""The spec shape rune checks before creating anything (inclavare.runtime.spec_shape)."""

from __future__ import annotations

import pytest

from inclavare.runtime.spec_shape import MAX_DEPTH, SpecShapeError, check_spec


def test_null_fields_are_dropped_as_go_reads_them() -> None:
    spec = {"process": {"args": ["/bin/true"], "env": None, "user": None}, "mounts": None, "linux": None}
    check_spec(spec)
    assert spec == {"process": {"args": ["/bin/true"]}}


@pytest.mark.parametrize("spec,message", [
    ({"proceſs": {}}, "key 'proceſs' differs from process"),  # Go folds ſ to s
    ({"process": {"Args": ["/evil"]}}, "key process.'Args' differs from process.args"),
    ({"mounts": [{"Destination": "/run/inclavare"}]}, "differs from mounts[0].destination"),
    ({"process": {"user": {"uid": -1}}}, "process.user.uid must be an integer"),
    ({"process": {"user": {"uid": True}}}, "process.user.uid must be an integer"),
    ({"process": {"env": ["A=\0"]}}, "process.env must be an array of strings"),
    ({"annotations": {"enclave.type": 1}}, "annotation 'enclave.type' must be a string"),
    ({"linux": {"namespaces": ["pid"]}}, "linux.namespaces[0] must be an object"),
    ({"root": {"path": "\ud800"}}, "lone UTF-16 surrogate"),
])
def test_refused(spec: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(SpecShapeError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        check_spec(spec)


def test_depth_is_bounded_without_recursion() -> None:
    deep: list[object] = []
    node = deep
    for _ in range(MAX_DEPTH):
        child: list[object] = []
        node.append(child)
        node = child
    check_spec({"x": [[]] * 3})
    with pytest.raises(SpecShapeError, match="nested more than"):
        check_spec({"x": deep})
