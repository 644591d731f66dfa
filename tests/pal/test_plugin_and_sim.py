"""The Python plugin protocol, C PAL adapter, runtime discovery and the sim runtime driven
directly (the other way of driving it is through the runelet, in test_runelet_runc)."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import pytest

from inclavare.errors import ConfigError, NotSupportedError, PalError
from inclavare.runtime.pal.abi import REPORT_SIZE, TARGETINFO_SIZE, StdioFds
from inclavare.runtime.pal.plugin import (
    EnclaveRuntime,
    PalRuntime,
    available_enclave_runtimes,
    load_builtin_runtime,
    load_enclave_runtime,
)
from inclavare.runtime.pal.process_status import exit_code_from_status, status_from_exit_code
from inclavare.runtime.pal.sim import SimEnclaveRuntime

from .runc_harness import Skeletons


def test_builtin_runtimes_are_registered() -> None:
    assert {"sim", "occlum", "gramine"} <= set(available_enclave_runtimes())
    for name in ("sim", "occlum", "gramine"):
        runtime = load_enclave_runtime(name)
        assert isinstance(runtime, EnclaveRuntime)
        assert runtime.name == name


def test_unknown_runtime_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown enclave runtime 'nope' \(known: .*gramine, occlum, sim"):
        load_enclave_runtime("nope")


def test_a_path_loads_a_c_pal(skeletons: Skeletons) -> None:
    runtime = load_enclave_runtime(skeletons.get(2))
    assert isinstance(runtime, PalRuntime) and isinstance(runtime, EnclaveRuntime)
    assert runtime.get_version() == 2
    assert runtime.direct_launch is False


def test_builtin_loader_refuses_foreign_modules() -> None:
    for target in ("os:system", "inclavare.runtime.pal.sim", "evil.inclavare.runtime.pal.x:Y"):
        with pytest.raises(ConfigError, match="not a built-in enclave runtime"):
            load_builtin_runtime(target)
    assert isinstance(load_builtin_runtime("inclavare.runtime.pal.sim:SimEnclaveRuntime"),
                      SimEnclaveRuntime)


def test_v1_adapter_runs_synchronously_and_has_no_kill(skeletons: Skeletons, tmp_path: Path) -> None:
    runtime = PalRuntime.load(skeletons.fresh(tmp_path, 1))
    runtime.init("", "info")
    handle = runtime.create_process("/bin/sh", ["sh", "-c", "exit 9"], ["IGNORED=1"], StdioFds())
    assert exit_code_from_status(runtime.exec(handle)) == 9
    with pytest.raises(PalError) as info:
        runtime.exec(handle)  # each handle runs once
    assert info.value.errno == errno.ESRCH
    with pytest.raises(NotSupportedError, match="no pal_kill"):
        runtime.kill(-1, signal.SIGTERM)
    with pytest.raises(NotSupportedError, match="need version 3"):
        runtime.get_local_report(bytes(TARGETINFO_SIZE))


@pytest.mark.parametrize("status, code", [
    (0, 0), (3 << 8, 3), (255 << 8, 255), (signal.SIGTERM, 143), (signal.SIGKILL | 0x80, 137),
    (0x7F | (19 << 8), 255),  # stopped, not terminated
])
def test_wait_status_decoding(status: int, code: int) -> None:
    assert exit_code_from_status(status) == code


def test_exit_codes_round_trip() -> None:
    for code in range(256):
        assert exit_code_from_status(status_from_exit_code(code)) == code


# -- sim, driven directly -----------------------------------------------------------------

def _sim(provider=None) -> SimEnclaveRuntime:  # type: ignore[no-untyped-def]
    runtime = SimEnclaveRuntime(provider)
    runtime.init("a b", "info")
    return runtime


def test_sim_declares_direct_launch_and_v3() -> None:
    runtime = SimEnclaveRuntime()
    assert runtime.direct_launch is True and runtime.get_version() == 3
    with pytest.raises(PalError, match="before init"):
        runtime.create_process("/bin/true", ["true"], [], StdioFds())


def test_sim_runs_the_payload_with_its_stdio_and_env() -> None:
    runtime = _sim()
    r, w = os.pipe()
    pid = runtime.create_process("/bin/sh", ["sh", "-c", 'echo "$GREETING" >&2; exit 4'],
                                 ["GREETING=hello", "PATH=/bin"], StdioFds(0, w, w))
    os.close(w)
    assert exit_code_from_status(runtime.exec(pid)) == 4
    assert os.read(r, 100) == b"hello\n"
    os.close(r)
    runtime.destroy()


def test_sim_kill_all_and_one() -> None:
    runtime = _sim()
    a = runtime.create_process("/bin/sleep", ["sleep", "30"], [], StdioFds())
    b = runtime.create_process("/bin/sleep", ["sleep", "30"], [], StdioFds())
    runtime.kill(b, signal.SIGUSR1)
    assert runtime.exec(b) == signal.SIGUSR1
    runtime.kill(-1, signal.SIGTERM)
    assert exit_code_from_status(runtime.exec(a)) == 143
    with pytest.raises(PalError) as info:
        runtime.kill(a, signal.SIGTERM)
    assert info.value.errno == errno.ESRCH
    with pytest.raises(PalError) as info:
        runtime.kill(0, signal.SIGTERM)
    assert info.value.errno == errno.EINVAL


def test_sim_destroy_terminates_leftovers() -> None:
    runtime = _sim()
    pid = runtime.create_process("/bin/sleep", ["sleep", "30"], [], StdioFds())
    started = time.monotonic()
    runtime.destroy()
    assert time.monotonic() - started < 5
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_sim_start_failures_carry_the_errno(tmp_path: Path) -> None:
    runtime = _sim()
    with pytest.raises(PalError) as info:
        runtime.create_process("/no/such/file", ["x"], [], StdioFds())
    assert info.value.errno == errno.ENOENT
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(PalError) as info:
        runtime.create_process(str(script), ["x"], [], StdioFds())
    assert info.value.errno == errno.EACCES


def test_sim_local_report_needs_a_provider() -> None:
    with pytest.raises(NotSupportedError, match="no report provider"):
        _sim().get_local_report(bytes(TARGETINFO_SIZE))
    seen: list[bytes] = []

    def provider(target_info: bytes) -> bytes:
        seen.append(target_info)
        return b"R" * REPORT_SIZE

    runtime = _sim(provider)
    assert runtime.get_local_report(b"T" * TARGETINFO_SIZE) == b"R" * REPORT_SIZE
    assert seen == [b"T" * TARGETINFO_SIZE]
    with pytest.raises(PalError, match="must be 512 bytes"):
        runtime.get_local_report(b"short")
    with pytest.raises(PalError, match="returned 3 bytes"):
        _sim(lambda _t: b"abc").get_local_report(bytes(TARGETINFO_SIZE))
