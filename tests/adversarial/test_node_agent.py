"""The node agent under a local attacker (observations 1 and 2 of the hardening issue).

An unprivileged local user (``nobody``) can reach every container's channel socket (it must be
connectable by the container's own users, whatever their uid). Before the hardening, one such
user could hold the agent's connection slots and worker threads (idle or trickling connections)
so that enclaves got no quotes and rune's control calls hung; and each request it sent to a
stopped enclave container's channel made the agent run ``runc state``. Here the attacker runs for
real (a separate process as ``nobody``, a few hundred sockets, a few seconds) against a real agent
whose descriptor limit is lowered so that exhaustion would be reachable, while a real enclave
container asks for evidence.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.errors import AgentError
from inclavare.services.agent import client
from tests.conftest import BundleFactory
from tests.enclave.conftest import Rune
from tests.enclave.test_sim_enclave import wait_running
from tests.support.agent import AgentProcess

pytestmark = pytest.mark.root

SIM = {"enclave.type": "sim"}
ATTEST = "/run/inclavare/bin/attest"
ATTACKER = str(Path(__file__).with_name("attacker.py"))
AGENT_NOFILE = 256  # the agent's descriptor limit: a few hundred attacker sockets would exhaust it
ATTACK_SECONDS = 8.0


def nobody() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user 'nobody' to attack as")
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def reachable_agent(runc_bin: str) -> Iterator[AgentProcess]:
    """An agent whose sockets other users can reach (pytest's temp dirs are root-only), with its
    descriptor limit lowered, and rune's runc replaced by a wrapper that logs who calls it."""
    work = Path(tempfile.mkdtemp(prefix="inclavare-adv-", dir="/tmp"))
    os.chmod(work, 0o711)
    wrapper = work / "runc"
    wrapper.write_text(f'#!/bin/sh\necho "$PPID $1 $2 $3" >> {work}/runc.log\nexec {runc_bin} "$@"\n')
    wrapper.chmod(0o755)
    agent = AgentProcess(work).start(nofile=AGENT_NOFILE)
    try:
        yield agent
    finally:
        agent.stop()
        print(agent.log.read_text()[-3000:])
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def arune(rune_bin: str, runc_root: str, tmp_path: Path, reachable_agent: AgentProcess,
          monkeypatch: pytest.MonkeyPatch) -> Rune:
    for k, v in reachable_agent.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("INCLAVARE_RUNC", str(reachable_agent.work / "runc"))
    return Rune(rune_bin, runc_root, tmp_path)


def attack(paths: list[str], connections: int, payload: str, seconds: float = ATTACK_SECONDS) -> subprocess.Popen[str]:
    uid, gid = nobody()

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    proc = subprocess.Popen([sys.executable, "-I", "-S", ATTACKER, str(seconds), str(connections), payload, *paths],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=drop,
                            stdin=subprocess.DEVNULL)
    time.sleep(1.0)  # let it open its sockets
    assert proc.poll() is None, proc.communicate()
    return proc


def finish(proc: subprocess.Popen[str]) -> dict[str, int]:
    out, err = proc.communicate(timeout=ATTACK_SECONDS + 30)
    assert proc.returncode == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def timed_evidence(rune: Rune, cid: str) -> float:
    start = time.monotonic()
    r = rune("exec", cid, ATTEST, "evidence", "--runtime-data", "legit", timeout=60)
    took = time.monotonic() - start
    assert r.returncode == 0, f"legit evidence failed under attack after {took:.2f}s: {r.stderr.strip()}"
    assert json.loads(r.stdout)["quote"]
    return took


def timed_health(agent: AgentProcess) -> float:
    start = time.monotonic()
    assert client.call(agent.socket, "GET", "/v1/health", timeout=10)["status"] == "ok"
    return time.monotonic() - start


def open_fds(agent: AgentProcess) -> int:
    assert agent.proc is not None
    return len(os.listdir(f"/proc/{agent.proc.pid}/fd"))


def start_enclave(rune: Rune, bundle_factory: BundleFactory, cid: str, args: list[str]) -> None:
    rune.create(bundle_factory(args, annotations=SIM), cid)
    r = rune("start", cid)
    assert r.returncode == 0, r.stderr


def channel_of(agent: AgentProcess, cid: str) -> str:
    return next(c["channel"] for c in agent.containers() if c["id"] == cid) + "/host.sock"


@pytest.mark.parametrize("payload", ["idle", "partial"])
def test_a_local_user_holding_connections_does_not_starve_enclaves_or_rune(
        arune: Rune, reachable_agent: AgentProcess, bundle_factory: BundleFactory, payload: str) -> None:
    """Observation 1: hundreds of idle (or trickling) connections from ``nobody`` to an enclave's
    channel; the enclave still gets evidence, root still gets ``/v1/health``, the agent's
    descriptors stay bounded."""
    start_enclave(arune, bundle_factory, "victim", ["/bin/sleep", "300"])
    wait_running(arune, "victim")
    baseline = timed_evidence(arune, "victim")  # also starts the enclave agent
    proc = attack([channel_of(reachable_agent, "victim")], 300, payload)
    try:
        took = [timed_evidence(arune, "victim") for _ in range(5)]
        health = [timed_health(reachable_agent) for _ in range(5)]
        fds = open_fds(reachable_agent)
    finally:
        stats = finish(proc)
    print(f"baseline {baseline:.3f}s, under attack {max(took):.3f}s, health {max(health):.3f}s, "
          f"agent fds {fds}, attacker {stats}")
    assert stats["opened"] >= 300, stats  # the attack did happen
    assert max(took) < max(2.0, 10 * baseline), took
    assert max(health) < 1.0, health
    assert fds < 64, fds  # refused callers hold at most Limits.max_lingering (32) descriptors, ≤ 1 s each


def test_requests_to_stopped_enclaves_do_not_make_the_agent_run_runc(
        arune: Rune, reachable_agent: AgentProcess, bundle_factory: BundleFactory) -> None:
    """Observation 2: an unidentified caller's requests to the channels of stopped enclave
    containers are refused in O(1): the agent runs no ``runc`` for them, and a running enclave's
    evidence stays fast."""
    stopped = [f"stopped{i}" for i in range(12)]
    for cid in stopped:
        start_enclave(arune, bundle_factory, cid, ["/bin/true"])
    start_enclave(arune, bundle_factory, "victim", ["/bin/sleep", "300"])
    wait_running(arune, "victim")
    for cid in stopped:
        for _ in range(200):
            if json.loads(arune("state", cid).stdout or "{}").get("status") == "stopped":
                break
            time.sleep(0.02)
    paths = [channel_of(reachable_agent, cid) for cid in stopped]
    baseline = timed_evidence(arune, "victim")
    assert reachable_agent.proc is not None
    agent_pid = str(reachable_agent.proc.pid)
    log = reachable_agent.work / "runc.log"

    def agent_runc_calls() -> int:
        return sum(1 for line in log.read_text().splitlines() if line.split()[0] == agent_pid)

    before = agent_runc_calls()
    proc = attack(paths, 48, "quote")
    try:
        took = [timed_evidence(arune, "victim") for _ in range(5)]
    finally:
        stats = finish(proc)
    calls = agent_runc_calls() - before
    print(f"baseline {baseline:.3f}s, under attack {max(took):.3f}s, runc calls by the agent {calls}, "
          f"attacker {stats}")
    assert stats["opened"] >= 48, stats
    assert calls == 0
    assert max(took) < max(2.0, 10 * baseline), took


def raw_exchange(path: str, data: bytes, *, read: bool = True, reset: bool = False) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(data)
    answer = b""
    if read:
        while chunk := s.recv(65536):
            answer += chunk
    if reset:  # close with unread data and SO_LINGER 0: the agent's next write fails
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    return answer


def post(body: bytes) -> bytes:
    return (b"POST /v1/containers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


@pytest.mark.parametrize("body, reason", [
    ('{"id": "x"}'.encode("utf-16"), "not valid UTF-8"),
    (b'{"id": NaN}', "NaN is not allowed"),
    (b'{"id": "a", "id": "b"}', "duplicate JSON key 'id'"),
    (b"[" * 100_000, "not valid JSON"),
])
def test_control_socket_bodies_are_parsed_strictly(reachable_agent: AgentProcess, body: bytes, reason: str) -> None:
    """Observation 10 at the agent: what serde_json refuses, the agents refuse too, in one line."""
    answer = raw_exchange(reachable_agent.socket, post(body))
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    detail = json.loads(payload)["detail"]
    assert reason in detail and "\n" not in detail, detail


def test_aborted_connections_are_not_logged_as_failures(reachable_agent: AgentProcess) -> None:
    """Observation 8 at the agent: clients that vanish mid-request or mid-answer cost no
    traceback and no error line."""
    health = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(20):
        raw_exchange(reachable_agent.socket, post(b'{"id": "x"')[:-4], read=False)  # mid-body
        raw_exchange(reachable_agent.socket, health[:10], read=False)  # mid-head
        raw_exchange(reachable_agent.socket, health, read=False, reset=True)  # never reads the answer
        raw_exchange(reachable_agent.socket, post(b"{}") * 50, read=False, reset=True)  # pipelined junk
    deadline = time.monotonic() + 10  # the aborted ones are over within a moment; then it answers
    while True:
        try:
            timed_health(reachable_agent)
            break
        except AgentError:  # 503 while the aborted connections are being closed
            assert time.monotonic() < deadline
            time.sleep(0.1)
    log = reachable_agent.log.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-2000:]
