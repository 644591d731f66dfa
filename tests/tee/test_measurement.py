"""The sim enclave measurement: stable for the same content, changed by any trusted byte."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inclavare.errors import ConfigError
from inclavare.sample_images import build_busybox_rootfs
from inclavare.tee.epm import EnclavePool
from inclavare.tee.measurement import RACY_NS, measure, parse_trusted_arg, racy, rescan, scan

PROCESS = {"args": ["/bin/sh", "-c", "echo hi"], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}}
ENCLAVE = {"type": "sim", "path": "", "args": "", "loglevel": "info"}


@pytest.fixture(scope="module")
def base_rootfs(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = build_busybox_rootfs(str(tmp_path_factory.mktemp("m") / "rootfs"))
    os.makedirs(os.path.join(root, "app"))
    Path(root, "app", "data.bin").write_bytes(os.urandom(4096))
    return root


@pytest.fixture
def rootfs(base_rootfs: str, tmp_path: Path) -> str:
    copy = str(tmp_path / "rootfs")
    shutil.copytree(base_rootfs, copy, symlinks=True)
    time.sleep(RACY_NS / 1e9 + 0.01)  # files changed within a clock tick of a measurement are not pooled
    return copy


def m(rootfs: str, process: dict = PROCESS, enclave: dict = ENCLAVE, **kw: object) -> str:  # type: ignore[type-arg]
    return measure(rootfs, process, enclave, **kw).hex  # type: ignore[arg-type]


def test_same_content_same_measurement(base_rootfs: str, rootfs: str) -> None:
    assert m(base_rootfs) == m(rootfs)  # a copy (other inodes, times) has the same identity


@pytest.mark.parametrize("change", [
    "flip a byte of a trusted file", "append a byte", "chmod", "retarget a symlink", "add a file",
    "remove a file", "rename a file",
])
def test_any_change_changes_the_measurement(rootfs: str, change: str) -> None:
    before = m(rootfs)
    _change(rootfs, change)
    assert m(rootfs) != before


CHANGES = ["flip a byte of a trusted file", "append a byte", "chmod", "retarget a symlink",
           "replace a symlink by rename", "turn a symlink into a file", "add a file", "remove a file",
           "rename a file", "add a symlink in a subdirectory"]


def _change(rootfs: str, change: str) -> None:
    data = Path(rootfs, "app", "data.bin")
    if change == "flip a byte of a trusted file":
        raw = bytearray(data.read_bytes()); raw[100] ^= 1; data.write_bytes(bytes(raw))
    elif change == "append a byte":
        data.write_bytes(data.read_bytes() + b"\0")
    elif change == "chmod":
        data.chmod(0o700)
    elif change == "retarget a symlink":
        os.unlink(os.path.join(rootfs, "bin", "ls")); os.symlink("busybox2", os.path.join(rootfs, "bin", "ls"))
    elif change == "replace a symlink by rename":
        os.symlink("/app/data.bin", os.path.join(rootfs, "bin", "tmp-link"))
        os.rename(os.path.join(rootfs, "bin", "tmp-link"), os.path.join(rootfs, "bin", "ls"))
    elif change == "turn a symlink into a file":
        os.unlink(os.path.join(rootfs, "bin", "ls")); Path(rootfs, "bin", "ls").write_text("#!/bin/sh\n")
    elif change == "add a file":
        Path(rootfs, "etc", "new").write_text("x")
    elif change == "remove a file":
        os.unlink(os.path.join(rootfs, "etc", "group"))
    elif change == "rename a file":
        os.rename(data, Path(rootfs, "app", "data2.bin"))
    elif change == "add a symlink in a subdirectory":
        os.symlink("../bin/busybox", os.path.join(rootfs, "app", "sh"))


@pytest.mark.parametrize("change", CHANGES)
def test_a_warm_pool_never_serves_a_changed_rootfs(rootfs: str, tmp_path: Path, change: str) -> None:
    """The pool skips lstat for symlinks (their directory's identity covers them): whatever
    changes, a pool hit must give exactly the measurement of a fresh, pool-less measure."""
    pool = EnclavePool(str(tmp_path / "epm"))
    before = measure(rootfs, PROCESS, ENCLAVE, pool=pool)
    assert measure(rootfs, PROCESS, ENCLAVE, pool=pool).cached
    _change(rootfs, change)
    after = measure(rootfs, PROCESS, ENCLAVE, pool=pool)
    assert after.measurement == measure(rootfs, PROCESS, ENCLAVE).measurement != before.measurement
    assert not after.cached


def test_command_and_configuration_are_measured_env_is_not(rootfs: str) -> None:
    base = m(rootfs)
    assert m(rootfs, process={**PROCESS, "args": ["/bin/sh", "-c", "echo other"]}) != base
    assert m(rootfs, process={**PROCESS, "cwd": "/tmp"}) != base
    assert m(rootfs, process={**PROCESS, "user": {"uid": 1, "gid": 0}}) != base
    assert m(rootfs, enclave={**ENCLAVE, "args": "debug"}) != base
    assert m(rootfs, process={**PROCESS, "env": ["PATH=/bin", "HOSTNAME=x"]}) == base


def test_mount_destinations_and_empty_dirs_do_not_count(rootfs: str) -> None:
    """runc creates mount points in the rootfs; that must not change the next container's identity."""
    base = m(rootfs, excluded=["/run/inclavare", "/etc/hosts"])
    os.makedirs(os.path.join(rootfs, "run", "inclavare", "bin"))
    Path(rootfs, "run", "inclavare", "bin", "attest").write_text("shadowed by the mount")
    Path(rootfs, "etc", "hosts").write_text("shadowed")
    os.makedirs(os.path.join(rootfs, "empty", "dir"))
    assert m(rootfs, excluded=["/run/inclavare", "/etc/hosts"]) == base


def test_trusted_paths_limit_what_is_measured(rootfs: str) -> None:
    trusted = parse_trusted_arg("debug trusted=/app:/bin/busybox")
    assert trusted == ["/app", "/bin/busybox"]
    base = m(rootfs, trusted=trusted)
    Path(rootfs, "etc", "passwd").write_text("changed, untrusted\n")
    assert m(rootfs, trusted=trusted) == base
    Path(rootfs, "app", "data.bin").write_bytes(b"changed")
    assert m(rootfs, trusted=trusted) != base
    with pytest.raises(ConfigError, match="does not exist"):
        m(rootfs, trusted=["/nope"])


def test_pool_hit_skips_reading_and_any_change_invalidates(rootfs: str, tmp_path: Path) -> None:
    pool = EnclavePool(str(tmp_path / "epm"))
    cold = measure(rootfs, PROCESS, ENCLAVE, pool=pool)
    warm = measure(rootfs, PROCESS, ENCLAVE, pool=pool)
    assert not cold.cached and warm.cached
    assert cold.measurement == warm.measurement == measure(rootfs, PROCESS, ENCLAVE).measurement
    data = Path(rootfs, "app", "data.bin")
    raw = bytearray(data.read_bytes()); raw[0] ^= 0xFF; data.write_bytes(bytes(raw))
    time.sleep(RACY_NS / 1e9 + 0.01)  # else the changed file is racy: hashed, not pooled
    changed = measure(rootfs, PROCESS, ENCLAVE, pool=pool)
    assert not changed.cached and changed.measurement != cold.measurement
    assert changed.measurement == measure(rootfs, PROCESS, ENCLAVE).measurement
    assert len(pool.entries()) == 2
    assert pool.remove(pool.entries()[0].key[:8])
    assert len(pool.clear()) == 1 and pool.entries() == []
    assert not measure(rootfs, PROCESS, ENCLAVE, pool=pool).cached  # `epm rm` also empties a live pool


def test_damaged_pool_entry_is_recomputed(rootfs: str, tmp_path: Path) -> None:
    pool = EnclavePool(str(tmp_path / "epm"))
    good = measure(rootfs, PROCESS, ENCLAVE, pool=pool)
    for f in (tmp_path / "epm" / "entries").iterdir():
        f.write_text('{"format": 1, "key": "garbage"')
    again = measure(rootfs, PROCESS, ENCLAVE, pool=EnclavePool(str(tmp_path / "epm")))  # a new process
    assert again.measurement == good.measurement and not again.cached


def test_scan_does_not_follow_symlinks(rootfs: str, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("host file")
    os.symlink(str(secret), os.path.join(rootfs, "app", "escape"))
    entry = [e for e in scan(rootfs) if e.path == "app/escape"][0]
    assert entry.kind == "l"


def test_a_read_only_pool_is_used_but_never_written(rootfs: str, tmp_path: Path) -> None:
    """`inclavare measure` reports; it must not create or touch rune's enclave pool."""
    directory = tmp_path / "epm"
    reader = EnclavePool(str(directory), read_only=True)
    first = measure(rootfs, PROCESS, ENCLAVE, pool=reader)
    assert not first.cached and not directory.exists()
    written = measure(rootfs, PROCESS, ENCLAVE, pool=EnclavePool(str(directory)))  # a writer fills it, as rune
    before = {p: p.stat().st_mtime_ns for p in directory.rglob("*")}
    again = measure(rootfs, PROCESS, ENCLAVE, pool=EnclavePool(str(directory), read_only=True))
    assert again.cached and again.hex == written.hex == first.hex
    assert {p: p.stat().st_mtime_ns for p in directory.rglob("*")} == before


def test_measure_command_creates_no_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from inclavare.cli.main import main
    from inclavare.sample_images import make_bundle

    bundle = make_bundle(str(tmp_path / "b"), ["/bin/true"], rootfs=build_busybox_rootfs(str(tmp_path / "rootfs")),
                         annotations={"enclave.type": "sim"})
    assert main(["measure", bundle, "--pool", str(tmp_path / "epm")]) == 0
    assert len(capsys.readouterr().out.strip()) == 64
    assert not (tmp_path / "epm").exists()


def test_an_identity_read_within_a_clock_tick_is_not_trusted(rootfs: str, tmp_path: Path) -> None:
    """"Racy git": file times come from a coarse clock (on kernels without fine-grained
    timestamps), so a file or directory changed twice within one tick keeps its identity. An
    identity read that close to its change is never taken as "unchanged"."""
    entries = scan(rootfs, ["/app"])
    app = os.lstat(Path(rootfs, "app"))
    assert rescan(rootfs, entries, app.st_ctime_ns + 5 * RACY_NS) is entries  # listed long after: trusted
    assert rescan(rootfs, entries, app.st_ctime_ns) is None  # listed within a tick of its change: listed again
    assert racy(app.st_ctime_ns - RACY_NS // 2, app.st_ctime_ns) and not racy(app.st_ctime_ns - 2 * RACY_NS,
                                                                           app.st_ctime_ns)
    assert racy(10**18 - 10**9, 10**18)  # whole-second times (ext3, FAT): a second of doubt

    pool = EnclavePool(str(tmp_path / "epm"))
    Path(rootfs, "app", "data.bin").write_bytes(os.urandom(4096))
    first = measure(rootfs, PROCESS, ENCLAVE, pool=pool)
    again = measure(rootfs, PROCESS, ENCLAVE, pool=pool)
    assert not first.cached and not again.cached and pool.entries() == []  # the racy file is hashed again
    time.sleep(RACY_NS / 1e9 + 0.01)
    assert not measure(rootfs, PROCESS, ENCLAVE, pool=pool).cached and len(pool.entries()) == 1
    assert measure(rootfs, PROCESS, ENCLAVE, pool=pool).cached


@pytest.mark.parametrize("change", [*CHANGES, "rewrite a file, restoring its times",
                                    "replace a directory by rename", "replace a trusted symlink"])
def test_rescan_sees_what_a_full_scan_sees(rootfs: str, tmp_path: Path, change: str) -> None:
    """The pool's scan after a change equals a full scan, with the directories old enough that
    their identity is trusted (the racy case has its own test)."""
    pool = EnclavePool(str(tmp_path / "epm"))
    trusted = ["/", "/bin/ls"] if change == "replace a trusted symlink" else ["/"]
    first = pool.scan(rootfs, trusted, ["/proc"])
    assert pool.scan(rootfs, trusted, ["/proc"]) is first  # unchanged: the same list, not compared
    data = Path(rootfs, "app", "data.bin")
    if change == "rewrite a file, restoring its times":
        st = os.stat(data)
        raw = bytearray(data.read_bytes()); raw[1] ^= 1; data.write_bytes(bytes(raw))
        os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))  # only the ctime still tells
    elif change == "replace a directory by rename":
        shutil.copytree(Path(rootfs, "app"), Path(rootfs, "app.new"), symlinks=True)
        Path(rootfs, "app.new", "extra").write_text("x")
        shutil.rmtree(Path(rootfs, "app"))
        os.rename(Path(rootfs, "app.new"), Path(rootfs, "app"))
    elif change == "replace a trusted symlink":
        os.symlink("/app/data.bin", os.path.join(rootfs, "bin", "ls.new"))
        os.rename(os.path.join(rootfs, "bin", "ls.new"), os.path.join(rootfs, "bin", "ls"))
    else:
        _change(rootfs, change)
    assert pool.scan(rootfs, trusted, ["/proc"]) == scan(rootfs, trusted, ["/proc"]) != first


@pytest.mark.root
def test_rescan_sees_a_mount_over_a_directory(rootfs: str, tmp_path: Path) -> None:
    """A mount changes no directory's times; the lstat of the mount point by its path sees it."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    other = tmp_path / "other"
    other.mkdir()
    (other / "tool").write_text("#!/bin/sh\n")
    pool = EnclavePool(str(tmp_path / "epm"))
    first = pool.scan(rootfs, ["/"], [])
    target = Path(rootfs, "app")
    subprocess.run(["mount", "--bind", str(other), str(target)], check=True)
    try:
        assert pool.scan(rootfs, ["/"], []) == scan(rootfs, ["/"]) != first
    finally:
        subprocess.run(["umount", str(target)], check=True)


_NAMES = st.sampled_from(["a", "b", "c"])
_DIRS = st.sampled_from(["", "d1", "d1/d2", "d3"])
_OPS = st.lists(st.tuples(st.sampled_from(["write", "append", "chmod", "unlink", "symlink", "rename", "mkdir",
                                           "rmdir", "touch-back", "scan"]), _DIRS, _NAMES, _DIRS),
                min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(ops=_OPS)
def test_rescan_equals_a_full_scan_after_any_sequence_of_changes(ops: list[tuple[str, str, str, str]]) -> None:
    """Changes land at random, many within one clock tick of a scan: after each, the pool's
    scan of the tree equals a full scan."""
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "rootfs")
        for d in ("d1/d2", "d3"):
            os.makedirs(os.path.join(root, d))
        pool = EnclavePool(os.path.join(tmp, "epm"))
        for op, d, name, d2 in ops:
            path, other = os.path.join(root, d, name), os.path.join(root, d2, name + "x")
            try:
                if op == "write":
                    Path(path).write_bytes(os.urandom(8))
                elif op == "append":
                    with open(path, "ab") as f:
                        f.write(b"!")
                elif op == "chmod":
                    os.chmod(path, 0o700)
                elif op == "unlink":
                    os.unlink(path)
                elif op == "symlink":
                    os.symlink(name, path)
                elif op == "rename":
                    os.rename(path, other)
                elif op == "mkdir":
                    os.mkdir(path)
                elif op == "rmdir":
                    os.rmdir(path)
                elif op == "touch-back":
                    os.utime(path, ns=(0, 0), follow_symlinks=False)
            except OSError:
                pass  # the operation does not apply to the tree as it is: nothing changed
            assert pool.scan(root, ["/"], []) == scan(root, ["/"]), op
