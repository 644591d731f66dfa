"""Without enclave configuration rune is runc: same output, exit status and state (real runc)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BundleFactory

pytestmark = pytest.mark.root


class Pair:
    """Runs the same command line through rune and through runc against one private root."""

    def __init__(self, rune: str, runc: str, root: str, tmp: Path) -> None:
        self.rune, self.runc, self.root, self.tmp = rune, runc, root, tmp

    def run(self, binary: str, *args: str, timeout: float = 20, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, "--root", self.root, *args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, **kw)

    def both(self, *args: str, **kw: Any) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        return self.run(self.rune, *args, **kw), self.run(self.runc, *args, **kw)

    def create(self, binary: str, bundle: str, cid: str) -> None:
        out = self.tmp / f"{cid}.out"
        with open(out, "w") as f:  # the container inherits these fds; pipes would stay open
            r = subprocess.run([binary, "--root", self.root, "create", "--bundle", bundle, cid],
                               stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, timeout=20)
        assert r.returncode == 0, out.read_text()

    def state(self, binary: str, cid: str) -> dict[str, Any]:
        r = self.run(binary, "state", cid)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def wait_status(self, cid: str, status: str) -> dict[str, Any]:
        for _ in range(200):
            st = self.state(self.runc, cid)
            if st["status"] == status:
                return st
            time.sleep(0.02)
        raise AssertionError(f"{cid} never reached {status}: {st}")


@pytest.fixture
def pair(rune_bin: str, runc_bin: str, runc_root: str, tmp_path: Path, rune_state: str) -> Pair:
    return Pair(rune_bin, runc_bin, runc_root, tmp_path)


def normalized_state(st: dict[str, Any]) -> dict[str, Any]:
    st = dict(st)
    st.pop("pid", None)
    st.pop("created", None)
    st["id"] = re.sub(r"-(rune|runc)$", "", st["id"])
    return st


@pytest.mark.parametrize("script,expected", [
    ("echo out; echo err >&2; exit 0", 0),
    ("echo three; exit 3", 3),
    ("echo child; sh -c 'kill -TERM $$'; exit $?", 143),
])
def test_run_exit_status_and_output(pair: Pair, bundle_factory: BundleFactory, script: str, expected: int) -> None:
    bundle = bundle_factory(["/bin/sh", "-c", script])
    a = pair.run(pair.rune, "run", "--bundle", bundle, "c-rune")
    b = pair.run(pair.runc, "run", "--bundle", bundle, "c-runc")
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)
    assert a.returncode == expected


def test_run_death_by_signal(pair: Pair, bundle_factory: BundleFactory) -> None:
    """The container's init killed from outside: runc run reports 128+signal; so must rune."""
    bundle = bundle_factory(["/bin/sh", "-c", "echo up; exec sleep 60"])
    results = []
    for binary, cid in ((pair.rune, "sig-rune"), (pair.runc, "sig-runc")):
        proc = subprocess.Popen([binary, "--root", pair.root, "run", "--bundle", bundle, cid],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "up\n"
        assert pair.run(pair.runc, "kill", cid, "KILL").returncode == 0
        out, err = proc.communicate(timeout=20)
        results.append((proc.returncode, out, err))
    assert results[0] == results[1]
    assert results[0][0] == 137


def test_signals_to_rune_reach_the_container(pair: Pair, bundle_factory: BundleFactory) -> None:
    """An engine signalling the runtime process of a foreground run: runc forwards it; so does rune."""
    bundle = bundle_factory(["/bin/sh", "-c", "trap 'echo got-term; exit 7' TERM; echo up; while :; do sleep 0.1; done"])
    proc = subprocess.Popen([pair.rune, "--root", pair.root, "run", "--bundle", bundle, "fwd"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "up\n"
    proc.terminate()
    out, err = proc.communicate(timeout=20)
    assert (proc.returncode, out, err) == (7, "got-term\n", "")


def test_lifecycle_state_matches_runc(pair: Pair, bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory(["/bin/sh", "-c", "trap 'exit 0' TERM; echo started; sleep 60 & wait"])
    for binary, cid in ((pair.rune, "life-rune"), (pair.runc, "life-runc")):
        pair.create(binary, bundle, cid)
    created = [normalized_state(pair.state(b, c)) for b, c in ((pair.rune, "life-rune"), (pair.runc, "life-runc"))]
    assert created[0] == created[1]
    assert created[0]["status"] == "created"
    assert created[0]["bundle"] == bundle

    a, b = pair.run(pair.rune, "start", "life-rune"), pair.run(pair.runc, "start", "life-runc")
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr) == (0, "", "")
    running = [normalized_state(pair.wait_status(c, "running")) for c in ("life-rune", "life-runc")]
    assert running[0] == running[1]
    assert (pair.tmp / "life-rune.out").read_text() == "started\n"

    # exec: output and exit code pass through
    a = pair.run(pair.rune, "exec", "life-rune", "/bin/sh", "-c", "echo in-exec; exit 5")
    b = pair.run(pair.runc, "exec", "life-runc", "/bin/sh", "-c", "echo in-exec; exit 5")
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr) == (5, "in-exec\n", "")
    a = pair.run(pair.rune, "exec", "life-rune", "/bin/sh", "-c", "kill -TERM $$")
    b = pair.run(pair.runc, "exec", "life-runc", "/bin/sh", "-c", "kill -TERM $$")
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)
    assert a.returncode == 143

    # ps: same processes
    a = pair.run(pair.rune, "ps", "--format", "json", "life-rune")
    assert a.returncode == 0
    assert pair.state(pair.runc, "life-rune")["pid"] in json.loads(a.stdout)
    b = pair.run(pair.runc, "ps", "--format", "json", "life-rune")
    assert a.stdout == b.stdout

    # pause / resume
    for verb, status in (("pause", "paused"), ("resume", "running")):
        a, b = pair.run(pair.rune, verb, "life-rune"), pair.run(pair.runc, verb, "life-runc")
        assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr) == (0, "", "")
        assert pair.state(pair.rune, "life-rune")["status"] == status

    # list: byte-identical to runc's own listing of the same root
    a, b = pair.both("list", "--format", "json")
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout
    assert {c["id"] for c in json.loads(a.stdout)} == {"life-rune", "life-runc"}
    a, b = pair.both("list")
    assert a.stdout == b.stdout

    # kill with a signal name and a number
    assert pair.run(pair.rune, "kill", "life-rune", "TERM").returncode == 0
    assert pair.run(pair.runc, "kill", "life-runc", "15").returncode == 0
    stopped = [normalized_state(pair.wait_status(c, "stopped")) for c in ("life-rune", "life-runc")]
    assert stopped[0] == stopped[1]

    a, b = pair.run(pair.rune, "delete", "life-rune"), pair.run(pair.runc, "delete", "life-runc")
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr) == (0, "", "")
    a, b = pair.run(pair.rune, "state", "life-rune"), pair.run(pair.runc, "state", "life-runc")
    assert (a.returncode, a.stdout) == (b.returncode, b.stdout)
    assert a.returncode == 1 and "does not exist" in a.stderr


def test_delete_force_and_kill_all(pair: Pair, bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory(["/bin/sh", "-c", "sleep 60 & sleep 60"])
    for binary, cid in ((pair.rune, "f-rune"), (pair.runc, "f-runc")):
        pair.create(binary, bundle, cid)
        assert pair.run(binary, "start", cid).returncode == 0
        pair.wait_status(cid, "running")
    a = pair.run(pair.rune, "kill", "--all", "f-rune", "KILL")
    b = pair.run(pair.runc, "kill", "--all", "f-runc", "KILL")
    assert (a.returncode, a.stderr) == (b.returncode, b.stderr)
    a, b = pair.run(pair.rune, "delete", "--force", "f-rune"), pair.run(pair.runc, "delete", "--force", "f-runc")
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr) == (0, "", "")


def test_update_and_events(pair: Pair, bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory(["/bin/sleep", "60"])
    pair.create(pair.rune, bundle, "u1")
    assert pair.run(pair.rune, "start", "u1").returncode == 0
    a = pair.run(pair.rune, "update", "--pids-limit", "42", "u1")
    assert (a.returncode, a.stderr) == (0, "")
    pids_max = Path("/sys/fs/cgroup/pids") / "u1" / "pids.max"
    if pids_max.exists():  # cgroup v1 hybrid layout of this machine
        assert pids_max.read_text().strip() == "42"
    ev = pair.run(pair.rune, "events", "--stats", "u1")
    assert ev.returncode == 0
    assert json.loads(ev.stdout)["type"] == "stats"


def test_errors_are_runc_errors(pair: Pair, tmp_path: Path) -> None:
    log_rune, log_runc = tmp_path / "rune.log", tmp_path / "runc.log"
    a = pair.run(pair.rune, "--log", str(log_rune), "--log-format", "json", "state", "nosuch")
    b = pair.run(pair.runc, "--log", str(log_runc), "--log-format", "json", "state", "nosuch")
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k != "time"} for line in p.read_text().splitlines()]  # noqa: E731
    assert strip(log_rune) == strip(log_runc) == [{"level": "error", "msg": "container does not exist"}]
    for args in (["nosuchcommand"], ["start"], ["kill"], ["run", "--bundle", str(tmp_path / "missing"), "x"]):
        a, b = pair.both(*args)
        assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr), args
        assert a.returncode != 0


def test_spec_and_features(pair: Pair, tmp_path: Path) -> None:
    for binary, d in ((pair.rune, "s1"), (pair.runc, "s2")):
        (tmp_path / d).mkdir()
        assert subprocess.run([binary, "spec", "--bundle", str(tmp_path / d)]).returncode == 0
    assert (tmp_path / "s1" / "config.json").read_bytes() == (tmp_path / "s2" / "config.json").read_bytes()
    a, b = pair.both("features")
    assert (a.returncode, a.stdout) == (b.returncode, b.stdout)
    assert json.loads(a.stdout)["ociVersionMin"]


def test_version_names_rune_and_runc(pair: Pair) -> None:
    a = subprocess.run([pair.rune, "--version"], capture_output=True, text=True)
    b = subprocess.run([pair.runc, "--version"], capture_output=True, text=True)
    assert a.returncode == 0
    first, rest = a.stdout.split("\n", 1)
    assert first.startswith("rune version ")
    assert rest == b.stdout


def test_detached_run_and_console_less_io(pair: Pair, bundle_factory: BundleFactory, tmp_path: Path) -> None:
    bundle = bundle_factory(["/bin/sh", "-c", "echo detached; sleep 60"])
    out = tmp_path / "d.out"
    with open(out, "w") as f:
        r = subprocess.run([pair.rune, "--root", pair.root, "run", "-d", "--pid-file", str(tmp_path / "pid"),
                            "--bundle", bundle, "d1"], stdin=subprocess.DEVNULL, stdout=f, stderr=f, timeout=20)
    assert r.returncode == 0
    st = pair.wait_status("d1", "running")
    assert int((tmp_path / "pid").read_text()) == st["pid"]
    assert os.path.exists(f"/proc/{st['pid']}")


def test_rune_does_not_touch_plain_containers_state(pair: Pair, bundle_factory: BundleFactory, rune_state: str) -> None:
    bundle = bundle_factory(["/bin/true"])
    assert pair.run(pair.rune, "run", "--bundle", bundle, "plain").returncode == 0
    assert not os.path.exists(rune_state), "plain containers must not create rune state"
