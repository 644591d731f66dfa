"""The PAL C ABI through ctypes against the skeleton PAL compiled by the tests: version
negotiation, struct layouts, every call's arguments, negative returns, missing symbols."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
from pathlib import Path

import pytest

from inclavare.errors import PalError
from inclavare.runtime.pal import abi
from inclavare.runtime.pal.abi import PalLibrary, PalLoadError, PrebuiltEnclave, StdioFds

from .runc_harness import Skeletons, calls


def test_struct_layouts_match_the_c_abi() -> None:
    ptr = ctypes.sizeof(ctypes.c_void_p)
    assert ctypes.sizeof(abi.PalAttr) == 2 * ptr
    assert ctypes.sizeof(abi.PalAttrV3) == 2 * ptr + 8 + 8  # int fd padded before uint64 addr
    assert abi.PalAttrV3.addr.offset == 2 * ptr + 8
    assert ctypes.sizeof(abi.PalStdioFds) == 12
    assert ctypes.sizeof(abi.PalCreateProcessArgs) == 5 * ptr  # five pointers, not packed
    assert ctypes.sizeof(abi.PalExecArgs) == 2 * ptr
    assert abi.PalExecArgs.exit_value.offset == ptr


@pytest.mark.parametrize("version", [1, 2, 3])
def test_version_negotiation(skeletons: Skeletons, version: int) -> None:
    assert PalLibrary.load(skeletons.get(version)).version == version


def test_version_above_3_is_refused(skeletons: Skeletons, tmp_path: Path) -> None:
    with pytest.raises(PalLoadError, match="unsupported pal api version 4") as info:
        PalLibrary.load(skeletons.get(4))
    assert info.value.errno == errno.ENOSYS


def test_version_below_1_is_refused(skeletons: Skeletons, tmp_path: Path) -> None:
    with pytest.raises(PalLoadError, match="invalid pal api version 0"):
        PalLibrary.load(skeletons.get(2, "SKELETON_REPORTED_VERSION=0"))


@pytest.mark.parametrize("version, define, symbol", [
    (2, "SKELETON_OMIT_KILL", "pal_kill"),
    (2, "SKELETON_OMIT_CREATE_PROCESS", "pal_create_process"),
    (3, "SKELETON_OMIT_GET_LOCAL_REPORT", "pal_get_local_report"),
])
def test_missing_symbol_for_the_version(skeletons: Skeletons, version: int, define: str,
                                        symbol: str) -> None:
    path = skeletons.get(version, define)
    with pytest.raises(PalLoadError, match=f"version {version} but does not export {symbol}"):
        PalLibrary.load(path)


def test_not_a_library(tmp_path: Path) -> None:
    bogus = tmp_path / "liberpal-bogus.so"
    bogus.write_bytes(b"not an ELF file")
    with pytest.raises(PalLoadError, match="cannot load enclave runtime"):
        PalLibrary.load(str(bogus))
    with pytest.raises(PalLoadError):
        PalLibrary.load(str(tmp_path / "missing.so"))


def _pipe_stdio() -> tuple[StdioFds, int, int]:
    r, w = os.pipe()
    return StdioFds(0, w, w), r, w


def _read_all(r: int) -> bytes:
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    return out


def test_v3_calls_and_arguments(skeletons: Skeletons, tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    lib = PalLibrary.load(skeletons.fresh(tmp_path, 3))
    lib.init(f"record={record} debug", "info", PrebuiltEnclave(fd=7, addr=0x7F0000000000))
    stdio, r, w = _pipe_stdio()
    pid = lib.create_process("/bin/sh", ["sh", "-c", 'echo "$A" "$1"', "x", "arg 1"], ["A=b c"], stdio)
    os.close(w)
    status = lib.exec(pid)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _read_all(r) == b"b c arg 1\n"
    report = lib.get_local_report(bytes(range(256)) * 2)
    assert len(report) == abi.REPORT_SIZE and report.startswith(b"SKELETON")
    lib.destroy()
    seq = calls(record)
    assert seq[0] == {"call": "pal_get_version"}
    assert seq[1] == {"call": "pal_init", "args": f"record={record} debug", "log_level": "info",
                      "fd": 7, "addr": 0x7F0000000000}
    assert seq[2] == {"call": "pal_create_process", "path": "/bin/sh",
                      "argv": ["sh", "-c", 'echo "$A" "$1"', "x", "arg 1"], "env": ["A=b c"],
                      "stdio": [0, stdio.stdout, stdio.stdout]}
    assert seq[3] == {"call": "pal_exec", "pid": pid}
    assert seq[4] == {"call": "pal_get_local_report", "targetinfo_len": 512, "report_len": 432}
    assert seq[5] == {"call": "pal_destroy"}


def test_v3_without_prebuilt_enclave_passes_minus_one_and_zero(skeletons: Skeletons, tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    lib = PalLibrary.load(skeletons.fresh(tmp_path, 3))
    lib.init(f"record={record}", "off")
    assert calls(record)[1] == {"call": "pal_init", "args": f"record={record}", "log_level": "off",
                                "fd": -1, "addr": 0}


def test_no_epm_in_args_means_no_prebuilt_enclave(skeletons: Skeletons, tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    lib = PalLibrary.load(skeletons.fresh(tmp_path, 3))
    lib.init(f"record={record} no-epm", "info", PrebuiltEnclave(fd=7, addr=4096))
    assert calls(record)[1]["fd"] == -1 and calls(record)[1]["addr"] == 0


def test_exit_value_is_a_wait_status(skeletons: Skeletons, tmp_path: Path) -> None:
    lib = PalLibrary.load(skeletons.fresh(tmp_path, 2))
    lib.init("", "info")
    pid = lib.create_process("/bin/sh", ["sh", "-c", "exit 3"], [], StdioFds())
    assert lib.exec(pid) == 3 << 8
    pid = lib.create_process("/bin/sh", ["sh", "-c", "kill -USR1 $$"], [], StdioFds())
    assert lib.exec(pid) == signal.SIGUSR1


def test_kill_signals_the_enclave(skeletons: Skeletons, tmp_path: Path) -> None:
    lib = PalLibrary.load(skeletons.fresh(tmp_path, 2))
    lib.init("", "info")
    pid = lib.create_process("/bin/sleep", ["sleep", "30"], [], StdioFds())
    lib.kill(-1, signal.SIGTERM)
    assert lib.exec(pid) == signal.SIGTERM
    with pytest.raises(PalError) as info:
        lib.kill(pid, signal.SIGTERM)  # no longer a process of the enclave
    assert info.value.errno == errno.ESRCH


def test_v1_exec_is_synchronous_and_returns_an_exit_code(skeletons: Skeletons, tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    lib = PalLibrary.load(skeletons.fresh(tmp_path, 1))
    lib.init(f"record={record}", "debug")
    stdio, r, w = _pipe_stdio()
    assert lib.exec_v1("/bin/sh", ["sh", "-c", "echo v1; exit 5"], stdio) == 5
    os.close(w)
    assert _read_all(r) == b"v1\n"
    assert [c["call"] for c in calls(record)] == ["pal_init", "pal_exec"]
    with pytest.raises(PalError, match="needs pal api version 2"):
        lib.create_process("/bin/true", ["true"], [], StdioFds())
    with pytest.raises(PalError, match="needs pal api version 2"):
        lib.kill(-1, 15)


@pytest.mark.parametrize("call, err", [
    ("init", errno.ENOENT), ("create_process", errno.EACCES), ("exec", errno.EINVAL),
    ("kill", errno.ESRCH), ("destroy", errno.ENOSYS), ("get_local_report", errno.EIO),
])
def test_negative_return_raises_pal_error_with_errno(skeletons: Skeletons, tmp_path: Path, call: str, err: int) -> None:
    lib = PalLibrary.load(skeletons.fresh(tmp_path, 3))
    args = f"fail={call}:{err}"
    if call == "init":
        with pytest.raises(PalError, match=r"pal_init\(\) failed") as info:
            lib.init(args, "info")
        assert info.value.errno == err
        return
    lib.init(args, "info")
    pid = 0
    if call != "create_process":
        pid = lib.create_process("/bin/true", ["true"], [], StdioFds())
    with pytest.raises(PalError, match=rf"pal_{call}\(\) failed: {os.strerror(err)}") as info:
        if call == "create_process":
            lib.create_process("/bin/true", ["true"], [], StdioFds())
        elif call == "exec":
            lib.exec(pid)
        elif call == "kill":
            lib.kill(-1, 15)
        elif call == "destroy":
            lib.destroy()
        else:
            lib.get_local_report(bytes(512))
    assert info.value.errno == err


def test_exec_failure_of_a_missing_program_is_enoent(skeletons: Skeletons, tmp_path: Path) -> None:
    lib = PalLibrary.load(skeletons.fresh(tmp_path, 2))
    lib.init("", "info")
    with pytest.raises(PalError) as info:
        lib.create_process("/no/such/program", ["x"], [], StdioFds())
    assert info.value.errno == errno.ENOENT


def test_bad_arguments_are_refused_before_the_call(skeletons: Skeletons, tmp_path: Path) -> None:
    lib = PalLibrary.load(skeletons.fresh(tmp_path, 3))
    with pytest.raises(PalError, match="NUL") as info:
        lib.init("a\x00b", "info")
    assert info.value.errno == errno.EINVAL
    lib.init("", "info")
    with pytest.raises(PalError, match="NUL"):
        lib.create_process("/bin/true", ["tr\x00ue"], [], StdioFds())
    with pytest.raises(PalError, match="must be 512 bytes"):
        lib.get_local_report(b"short")
    with pytest.raises(PalError, match="out of range"):
        PalLibrary.load(skeletons.fresh(tmp_path, 3)).init("", "info", PrebuiltEnclave(fd=-2, addr=0))


def test_records_are_valid_json_for_hostile_strings(skeletons: Skeletons, tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    lib = PalLibrary.load(skeletons.fresh(tmp_path, 2))
    hostile = 'quote" back\\ nl\n tab\t é'
    lib.init(f"record={record}", hostile)
    assert json.loads(record.read_text().splitlines()[1])["log_level"] == hostile
