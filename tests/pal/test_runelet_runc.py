"""The runelet as a real container's pid 1 under runc, driving the skeleton PAL v1/v2/v3
and the built-in sim runtime: call sequence and arguments, stdio, exit codes, signals,
exec into the enclave, orphan reaping, failures."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from inclavare.runtime.pal.runelet_rt import runelet_exec_args

from .runc_harness import RUNC, Containers, Skeletons, calls, read_until

pytestmark = pytest.mark.root

PAYLOAD = "echo out $FOO; echo err >&2; exit 3"
WAITING = "echo ready; exec sleep 30"


def names(record: list[dict]) -> list[str]:
    return [c["call"] for c in record]


@pytest.mark.parametrize("version", [1, 2, 3])
def test_payload_runs_through_the_pal(containers: Containers, skeletons: Skeletons, version: int) -> None:
    pal = skeletons.get(version)
    cid, bundle, record = containers.prepare(["sh", "-c", PAYLOAD], pal, runtime_args="mode=test")
    rc, out, err = containers.run(cid, bundle)
    assert rc == 3, err
    assert out == "out bar\n"
    assert err == "err\n"
    seq = calls(record)
    init = {"call": "pal_init", "args": "record=/record/calls.jsonl mode=test", "log_level": "debug"}
    if version == 1:
        assert names(seq) == ["pal_init", "pal_exec", "pal_destroy"]
        assert seq[0] == init
        assert seq[1] == {"call": "pal_exec", "path": "/bin/sh", "argv": ["sh", "-c", PAYLOAD],
                          "stdio": [0, 1, 2]}
        return
    assert names(seq) == ["pal_get_version", "pal_init", "pal_create_process", "pal_exec", "pal_destroy"]
    assert seq[1] == (init | {"fd": -1, "addr": 0} if version == 3 else init)
    create = seq[2]
    assert create == {"call": "pal_create_process", "path": "/bin/sh", "argv": ["sh", "-c", PAYLOAD],
                      "env": ["PATH=/bin", "FOO=bar"], "stdio": [0, 1, 2]}
    assert seq[3]["pid"] > 1  # the pid create_process reported (a child of pid 1)


@pytest.mark.parametrize("version", [2, 3])
def test_runc_kill_reaches_the_enclave(containers: Containers, skeletons: Skeletons, version: int) -> None:
    cid, bundle, record = containers.prepare(["sh", "-c", WAITING], skeletons.get(version))
    proc = containers.start(cid, bundle)
    read_until(proc.stdout, b"ready\n")
    assert containers.runc("kill", cid, "TERM").returncode == 0
    proc.wait(timeout=15)
    assert proc.returncode == 128 + signal.SIGTERM
    kills = [c for c in calls(record) if c["call"] == "pal_kill"]
    assert {"call": "pal_kill", "pid": -1, "sig": signal.SIGTERM} in kills
    assert names(calls(record))[-1] == "pal_destroy"


def test_v1_has_no_kill_so_term_is_not_delivered(containers: Containers, skeletons: Skeletons) -> None:
    cid, bundle, record = containers.prepare(["sh", "-c", WAITING], skeletons.get(1))
    proc = containers.start(cid, bundle)
    read_until(proc.stdout, b"ready\n")
    assert containers.runc("kill", cid, "TERM").returncode == 0
    assert b"signal 15 not delivered" in read_until(proc.stderr, b"not delivered")
    assert proc.poll() is None  # still running: v1 cannot signal the enclave
    assert containers.runc("kill", cid, "KILL").returncode == 0
    proc.wait(timeout=15)
    assert proc.returncode == 128 + signal.SIGKILL
    assert "pal_kill" not in names(calls(record))


@pytest.mark.parametrize("version", [1, 2, 3])
def test_exec_into_the_enclave(containers: Containers, skeletons: Skeletons, version: int) -> None:
    cid, bundle, record = containers.prepare(["sh", "-c", WAITING], skeletons.get(version))
    proc = containers.start(cid, bundle)
    read_until(proc.stdout, b"ready\n")
    env = None if version == 1 else ["FOO=exec", "X=y"]
    args = runelet_exec_args(["sh", "-c", "echo in-enclave $FOO $X; pwd; echo e >&2; exit 7"],
                             env=env, cwd=None if version == 1 else "/tmp")
    result = containers.runc("exec", cid, *args)
    assert result.returncode == 7, result.stderr
    assert result.stderr == b"e\n"
    seq = calls(record)
    if version == 1:
        assert result.stdout == b"in-enclave bar\n/\n"  # v1: the container's env and cwd
        execs = [c for c in seq if c["call"] == "pal_exec"]
        assert execs[1]["argv"] == ["sh", "-c", "echo in-enclave $FOO $X; pwd; echo e >&2; exit 7"]
        assert execs[1]["stdio"] != [0, 1, 2]  # the exec client's own descriptors, passed over
    else:
        assert result.stdout == b"in-enclave exec y\n/tmp\n"
        creates = [c for c in seq if c["call"] == "pal_create_process"]
        assert creates[1]["env"] == ["FOO=exec", "X=y"]
        assert creates[1]["path"] == "/bin/sh"
        assert creates[1]["stdio"] != [0, 1, 2]
    assert proc.poll() is None  # the container's own process is unaffected
    containers.runc("kill", cid, "KILL")
    proc.wait(timeout=15)


def test_exec_relays_signals_and_reports_missing_commands(containers: Containers,
                                                         skeletons: Skeletons) -> None:
    cid, bundle, record = containers.prepare(["sh", "-c", WAITING], skeletons.get(3))
    proc = containers.start(cid, bundle)
    read_until(proc.stdout, b"ready\n")
    missing = containers.runc("exec", cid, *runelet_exec_args(["no-such-command"]))
    assert missing.returncode == 127
    assert b"runelet: error:" in missing.stderr and b"No such file" in missing.stderr

    execp = subprocess.Popen([RUNC, "--root", containers.root, "exec", cid,
                              *runelet_exec_args(["sh", "-c", "echo started; exec sleep 30"])],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    containers.procs.append(execp)
    read_until(execp.stdout, b"started\n")
    execp.send_signal(signal.SIGTERM)  # runc exec passes it to the runelet client
    execp.wait(timeout=15)
    assert execp.returncode == 128 + signal.SIGTERM
    creates = [c for c in calls(record) if c["call"] == "pal_create_process"]
    exec_pid = [c for c in calls(record) if c["call"] == "pal_exec"][-1]["pid"]
    assert creates[1]["path"] == "no-such-command"  # not in PATH: left for the PAL, which failed
    assert {"call": "pal_kill", "pid": exec_pid, "sig": signal.SIGTERM} in calls(record)
    assert proc.poll() is None
    containers.runc("kill", cid, "KILL")
    proc.wait(timeout=15)


def test_sim_runtime_through_the_runelet(containers: Containers) -> None:
    cid, bundle, _ = containers.prepare(["sh", "-c", PAYLOAD], "sim", record=False)
    rc, out, err = containers.run(cid, bundle)
    assert (rc, out, err) == (3, "out bar\n", "err\n")

    cid, bundle, _ = containers.prepare(["sh", "-c", WAITING], "sim", record=False)
    proc = containers.start(cid, bundle)
    read_until(proc.stdout, b"ready\n")
    result = containers.runc("exec", cid, *runelet_exec_args(["sh", "-c", "echo $FOO; exit 5"]))
    assert (result.returncode, result.stdout) == (5, b"bar\n")
    assert containers.runc("kill", cid, "TERM").returncode == 0
    proc.wait(timeout=15)
    assert proc.returncode == 128 + signal.SIGTERM


ZOMBIE_CHECK = ("(sleep 0.2 &); sleep 1; "
                "for f in /proc/[0-9]*/stat; do read l < $f; case \"$l\" in *') Z '*) echo zombie;; esac; done; "
                "echo checked")


@pytest.mark.parametrize("version, reaped", [(1, False), (2, True)])
def test_orphans_are_reaped_from_v2(containers: Containers, skeletons: Skeletons,
                                    version: int, reaped: bool) -> None:
    cid, bundle, _ = containers.prepare(["sh", "-c", ZOMBIE_CHECK], skeletons.get(version))
    rc, out, err = containers.run(cid, bundle)
    assert rc == 0, err
    assert out.endswith("checked\n")
    assert ("zombie" in out) is not reaped


def test_payload_that_cannot_start(containers: Containers, skeletons: Skeletons) -> None:
    cid, bundle, record = containers.prepare(["/no/such/binary"], skeletons.get(2))
    rc, out, err = containers.run(cid, bundle)
    assert rc == 127
    assert err.startswith("runelet: error: cannot start /no/such/binary in the enclave")
    assert "Traceback" not in err
    assert names(calls(record))[-1] == "pal_destroy"


def test_pal_init_failure_is_one_clear_line(containers: Containers, skeletons: Skeletons) -> None:
    cid, bundle, _ = containers.prepare(["true"], skeletons.get(3), runtime_args="fail=init:22")
    rc, out, err = containers.run(cid, bundle)
    assert rc != 0
    assert err == "runelet: error: pal_init() failed: Invalid argument (errno 22, returned -22)\n"


def test_start_cost_is_modest(containers: Containers, skeletons: Skeletons) -> None:
    cid, bundle, _ = containers.prepare(["true"], skeletons.get(2), record=False)
    t0 = time.monotonic()
    rc, _, err = containers.run(cid, bundle)
    assert rc == 0, err
    assert time.monotonic() - t0 < 5.0
