"""Operator mistakes end in one line and exit 1 or 2, never an internal error (70).

Each case is a mistake seen in practice: a second node agent on a live socket (it used to take the
socket over silently, leaving the first agent alive but unreachable), a relay on a port in use, a
launcher written into a directory that does not exist."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from inclavare.services.agent import client
from inclavare.tee.sim_authority import SimAuthority
from tests.support.agent import AgentProcess
from tests.support.processes import stop

INCLAVARE = str(Path(sys.executable).parent / "inclavare")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INCLAVARE, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def assert_one_line(r: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    # notices (e.g. which simulated measurement a relay would present) are not part of the error
    lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("inclavare ratls: ")]
    assert len(lines) == 1 and lines[0].startswith("inclavare: error: ") and words in lines[0], r.stderr


def test_a_second_agent_on_a_live_socket_refuses_and_the_first_keeps_serving(tmp_path: Path) -> None:
    (tmp_path / "first").mkdir()
    first = AgentProcess(tmp_path / "first").start()
    try:
        r = run("agent", "serve", "--state-dir", str(tmp_path / "second"), "--socket", first.socket)
        assert_one_line(r, 2, "another process is serving on this socket")
        assert client.call(first.socket, "GET", "/v1/health", timeout=5)["status"] == "ok"
    finally:
        first.stop()


def test_a_relay_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        authority = SimAuthority.load_or_create(str(tmp_path / "sim"))
        r = run("ratls", "serve", "--listen", f"127.0.0.1:{port}", "--forward", "127.0.0.1:9",
                "--attester", "sim", "--sim-authority", authority._state_dir)  # noqa: SLF001
        assert_one_line(r, 1, "address already in use")


def test_a_launcher_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    r = run("install-rune", "--output", str(tmp_path / "missing" / "rune"))
    assert_one_line(r, 2, "does not exist")
    assert not (tmp_path / "missing").exists()


def test_agent_state_dir_holds_its_pool_and_runtime_folder(tmp_path: Path) -> None:
    """`agent serve --state-dir DIR` keeps everything it makes under DIR (nothing under
    /var/lib/inclavare unless that is DIR)."""
    (tmp_path / "a").mkdir()
    agent = AgentProcess(tmp_path / "a")
    env = {k: v for k, v in os.environ.items() if k not in ("INCLAVARE_EPM_DIR", "INCLAVARE_RUNELET_DIR")}
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([INCLAVARE, "agent", "serve", "--state-dir", str(agent.state_dir), "--socket",
                                 agent.socket], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60  # a fresh state dir builds the enclave runtime folder first
        while True:
            try:
                if client.call(agent.socket, "GET", "/v1/health", timeout=2)["status"] == "ok":
                    break
            except Exception:
                assert proc.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "the agent did not answer within 60 s:\n" + log.read_text()[-2000:]
                time.sleep(0.05)
        assert (agent.state_dir / "runelet").is_dir() and (agent.state_dir / "sim").is_dir()
    finally:
        if not stop(proc, 30):
            raise AssertionError("the agent did not stop within 30 s of SIGTERM:\n" + log.read_text()[-2000:])
