"""The containerd config edit of `inclavare node install`: exact reversal, idempotency, refusals."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inclavare.services.containerd_runtime import (
    ContainerdConfigError,
    RuntimeEntry,
    add_runtime,
    remove_runtime,
)

ENTRY = RuntimeEntry("rune", "/opt/inclavare/bin/rune")
NODE_CONFIG = b"""version = 2
# a node's config, with comments and odd spacing that a TOML rewrite would lose
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image   = "registry.k8s.io/pause:3.9"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = true
"""


def runtimes(data: bytes, plugin: str = "io.containerd.grpc.v1.cri") -> dict:  # type: ignore[type-arg]
    return tomllib.loads(data.decode())["plugins"][plugin]["containerd"]["runtimes"]  # type: ignore[no-any-return]


def test_entry_is_where_containerd_looks_and_follows_the_nodes_cgroup_driver() -> None:
    rune = runtimes(add_runtime(NODE_CONFIG, ENTRY))["rune"]
    assert rune == {"runtime_type": "io.containerd.runc.v2", "pod_annotations": ["enclave.*"],
                    "container_annotations": ["enclave.*"],
                    "options": {"BinaryName": "/opt/inclavare/bin/rune", "SystemdCgroup": True}}


def test_version_3_uses_the_containerd_2_plugin() -> None:
    out = add_runtime(b"version = 3\n", ENTRY)
    assert runtimes(out, "io.containerd.cri.v1.runtime")["rune"]["options"]["BinaryName"] == ENTRY.binary


@pytest.mark.parametrize("original", [NODE_CONFIG, NODE_CONFIG.rstrip(b"\n"), b"version = 2", b"version = 2\n\n"])
def test_install_twice_equals_once_and_uninstall_gives_the_bytes_back(original: bytes) -> None:
    once = add_runtime(original, ENTRY)
    assert add_runtime(once, ENTRY) == once
    assert remove_runtime(once, "rune") == original
    assert remove_runtime(original, "rune") == original  # nothing of ours: untouched


def test_a_created_file_is_deleted_again() -> None:
    created = add_runtime(None, ENTRY)
    assert runtimes(created)["rune"]["options"]["BinaryName"] == ENTRY.binary
    assert remove_runtime(created, "rune") is None


def test_administrator_edits_around_the_block_survive_uninstall() -> None:
    installed = add_runtime(NODE_CONFIG, ENTRY)
    edited = b"# edited by the admin\n" + installed + b'[debug]\n  level = "debug"\n'
    restored = remove_runtime(edited, "rune")
    assert restored == b"# edited by the admin\n" + NODE_CONFIG + b'[debug]\n  level = "debug"\n'


def test_a_new_launcher_path_replaces_the_block() -> None:
    first = add_runtime(NODE_CONFIG, ENTRY)
    moved = add_runtime(first, RuntimeEntry("rune", "/usr/local/bin/rune"))
    assert runtimes(moved)["rune"]["options"]["BinaryName"] == "/usr/local/bin/rune"
    assert moved.count(b">>> inclavare runtime handler rune") == 1
    assert remove_runtime(moved, "rune") == NODE_CONFIG


@pytest.mark.parametrize(("config", "message"), [
    (b"[plugins.cri]\n", "config version 1 is not supported"),
    (b"version = 2\n[plugins\n", "not valid TOML"),
    (b'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n', "CRI plugin is disabled"),
    (NODE_CONFIG.replace(b"runtimes.runc", b"runtimes.rune"), "already defines runtime handler rune"),
    (b'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  runtimes = {}\n',
     "not valid TOML"),
    (b"version = 2\n\xff\n", "not UTF-8"),
])
def test_refusals_are_one_line(config: bytes, message: str) -> None:
    with pytest.raises(ContainerdConfigError, match=message) as err:
        add_runtime(config, ENTRY)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("handler", "binary"), [("Rune", "/x"), ("rune", "relative/rune"), ("rune", '/a"b')])
def test_entry_values_are_checked(handler: str, binary: str) -> None:
    with pytest.raises(ContainerdConfigError):
        RuntimeEntry(handler, binary)


def test_a_block_without_its_end_marker_is_not_guessed_at() -> None:
    broken = add_runtime(NODE_CONFIG, ENTRY).replace(b"# <<< inclavare runtime handler rune <<<\n", b"")
    with pytest.raises(ContainerdConfigError, match="lost its end marker"):
        remove_runtime(broken, "rune")


LINE = st.sampled_from(["", "# comment", "[debug]", '  level = "info"', "[grpc]", 'address = "/x.sock"',
                        "   ", "[plugins]", '[plugins."io.containerd.grpc.v1.cri"]',
                        '  sandbox_image = "pause"'])


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(LINE, max_size=8), final_newline=st.booleans())
def test_any_valid_config_round_trips_exactly(lines: list[str], final_newline: bool) -> None:
    text = "\n".join(["version = 2", *lines]) + ("\n" if final_newline else "")
    original = text.encode()
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # e.g. a table defined twice: refused by add_runtime, covered above
    installed = add_runtime(original, ENTRY)
    assert add_runtime(installed, ENTRY) == installed
    assert remove_runtime(installed, "rune") == original
