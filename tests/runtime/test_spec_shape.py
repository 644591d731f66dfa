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


def test_a_reloaded_spec_is_checked_once_and_callers_change_only_their_copy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The agent plans the same bundle again and again: an unchanged config.json is not parsed or
    checked twice, and what one plan changes (its absolutized copy) never reaches the next."""
    import json

    from inclavare.runtime.bundle import absolutize, load_spec

    spec = {"process": {"args": ["/bin/true"], "env": ["A=1"], "cwd": "/"}, "root": {"path": "rootfs"},
            "mounts": [{"destination": "/data", "type": "bind", "source": "data", "options": ["rbind"]}]}
    (tmp_path / "config.json").write_text(json.dumps(spec))
    first = load_spec(str(tmp_path))
    assert load_spec(str(tmp_path)) is first  # served from the memo
    copy = absolutize(first, str(tmp_path))
    copy["process"]["env"].append("B=2")
    copy["mounts"].append({"destination": "/x"})
    assert load_spec(str(tmp_path)) == spec and copy["root"]["path"] == str(tmp_path / "rootfs")
    (tmp_path / "config.json").write_text(json.dumps({**spec, "process": {**spec["process"], "cwd": "/srv"}}))
    assert load_spec(str(tmp_path))["process"]["cwd"] == "/srv"  # other bytes: read and checked again
