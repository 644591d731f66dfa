"""rune's native launcher starts runc before the node agent has answered (rune.c, early_start).

runc's own start-up then overlaps the agent's planning; runc reads its config.json from a pipe
rune fills once the agent has answered. These tests hold the launcher to what that must never
change: the container runs from the agent's config, every other answer leaves no runc behind and
nothing on stderr but rune's own line, and a launcher killed mid-way leaves no runc waiting.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import BundleFactory
from tests.enclave.conftest import Rune
from tests.support.agent import AgentProcess
from tests.support.loopback import read_request

pytestmark = pytest.mark.root

SIM = {"enclave.type": "sim"}


def record_dir(rune_state: str, runc_root: str, cid: str) -> Path:
    return Path(rune_state + os.path.abspath(runc_root), cid)


def runc_bundle(runc_bin: str, runc_root: str, cid: str) -> str:
    r = subprocess.run([runc_bin, "--root", runc_root, "state", cid], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return str(json.loads(r.stdout)["bundle"])


def runc_processes(cid: str) -> list[int]:
    """Processes whose command line names runc and the (test-unique) container id."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = Path("/proc", pid, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"runc") and cid.encode() in args:
            found.append(int(pid))
    return found


@pytest.mark.parametrize("shape", ["--bundle B", "-b B", "--bundle=B", "cwd", "global and create flags"])
def test_runc_reads_the_agents_config_through_the_early_bundle(
        rune: Rune, runc_bin: str, runc_root: str, tmp_path: Path, bundle_factory: BundleFactory,
        shape: str) -> None:
    """Every way engines name the bundle gets the early start (the argv rune predicts is the
    agent's), and what the caller sees is unchanged: rune's state names the caller's bundle."""
    bundle = bundle_factory(["/bin/sleep", "30"], annotations=SIM)
    cid = f"early-{shape.replace(' ', '').replace('-', '').replace('=', '')}"
    head: list[str] = []
    tail = ["--bundle", bundle]
    cwd = None
    if shape == "-b B":
        tail = ["-b", bundle]
    elif shape == "--bundle=B":
        tail = [f"--bundle={bundle}"]
    elif shape == "cwd":
        tail, cwd = [], bundle
    elif shape == "global and create flags":
        head = ["--log", str(tmp_path / "runc.log"), "--log-format", "json"]
        tail = ["--pid-file", str(tmp_path / "pid"), "--bundle", bundle, "--no-pivot"]
    out = tmp_path / "out"
    with open(out, "w") as f:
        r = subprocess.run([rune.binary, "--root", runc_root, *head, "create", *tail, cid], cwd=cwd,
                           stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, timeout=60)
    assert r.returncode == 0, out.read_text()
    try:
        rune_state = os.environ["INCLAVARE_RUNE_STATE"]
        directory = record_dir(rune_state, runc_root, cid)
        assert runc_bundle(runc_bin, runc_root, cid) == str(directory / "early"), "runc was not started early"
        assert os.readlink(directory / "early" / "config.json") == "../bundle/config.json"
        config = json.loads((directory / "early" / "config.json").read_text())
        assert config["annotations"]["io.inclavare.enclave.measurement"]  # the agent's config, read through it
        assert json.loads(rune("state", cid).stdout)["bundle"] == bundle
        if shape == "global and create flags":
            assert int((tmp_path / "pid").read_text()) == json.loads(rune("state", cid).stdout)["pid"]
    finally:
        assert rune("delete", "--force", cid).returncode == 0
    assert not directory.exists()


def test_a_terminal_container_gets_its_console_through_the_early_runc(
        rune: Rune, runc_bin: str, runc_root: str, tmp_path: Path, bundle_factory: BundleFactory) -> None:
    """Engines that give a container a terminal (`podman run -t`, `ctr run -t`) pass
    `--console-socket`: the early runc sends the pty's master there as runc does, and the
    workload (behind enclave-init) runs on that terminal."""
    bundle = bundle_factory(["/bin/sh", "-c", "tty; echo on-the-terminal"], annotations=SIM, terminal=True)
    path = str(tmp_path / "console.sock")
    masters: list[int] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        server.settimeout(30)

        def receive() -> None:
            conn, _ = server.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
                masters.extend(fds)

        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        out = tmp_path / "create.out"
        with open(out, "w") as f:
            r = subprocess.run([rune.binary, "--root", rune.root, "create", "--console-socket", path, "--bundle",
                                bundle, "early-tty"], stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                               timeout=60)
        assert r.returncode == 0, out.read_text()
        receiver.join(30)
    assert len(masters) == 1
    try:
        early = record_dir(os.environ["INCLAVARE_RUNE_STATE"], runc_root, "early-tty") / "early"
        assert runc_bundle(runc_bin, runc_root, "early-tty") == str(early)
        assert rune("start", "early-tty").returncode == 0
        seen = b""
        deadline = time.monotonic() + 20
        while b"on-the-terminal" not in seen and time.monotonic() < deadline:
            try:
                chunk = os.read(masters[0], 4096)
            except OSError:  # EIO: the terminal's last process has gone
                break
            if not chunk:
                break
            seen += chunk
        assert b"/dev/pts/" in seen and b"on-the-terminal" in seen, seen
    finally:
        os.close(masters[0])
        rune("delete", "--force", "early-tty")


@pytest.mark.parametrize("refusal", ["before measuring", "after registering"])
def test_a_refused_container_leaves_no_runc_and_one_line(
        rune: Rune, runc_root: str, bundle_factory: BundleFactory, refusal: str) -> None:
    """The agent refuses after runc has started (and, undoing its plan, cleans rune's record
    directory): runc is killed before it has a config, so it says nothing, not even that its
    bundle went away, and created nothing; rune's record directory is gone. Ten times each, as
    the agent's answer and runc's start-up race: refused at once, or after the measurement and
    the registration (an enclave.image container that would start as uid 1000)."""
    if refusal == "before measuring":
        bundle = bundle_factory(["/bin/true"], annotations=SIM)
        spec = json.loads(Path(bundle, "config.json").read_text())
        spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "pid"]
        message = "own pid namespace"
    else:
        image = "127.0.0.1:5000/app@sha256:" + "0" * 64
        bundle = bundle_factory(["/bin/true"], annotations={**SIM, "enclave.image": image})
        spec = json.loads(Path(bundle, "config.json").read_text())
        spec["process"]["user"] = {"uid": 1000, "gid": 1000}
        message = "needs the container to start as root"
    Path(bundle, "config.json").write_text(json.dumps(spec))
    for i in range(10):
        cid = f"early-refused{i}"
        r = rune("run", "--bundle", bundle, cid)
        assert r.returncode == 1
        lines = r.stderr.splitlines()  # runc's format: one logrus line (no --log given)
        assert len(lines) == 1 and "level=error" in lines[0] and message in lines[0], r.stderr
        assert runc_processes(cid) == []
        assert cid not in rune("list", "-q").stdout.split()
        assert not record_dir(os.environ["INCLAVARE_RUNE_STATE"], runc_root, cid).exists()


def test_a_call_for_the_slow_path_leaves_no_early_bundle(
        rune: Rune, runc_root: str, bundle_factory: BundleFactory) -> None:
    """409 (here: ENCLAVE_TYPE consumed without selecting an enclave): the early runc is
    stopped and its bundle removed before rune's Python path takes the call."""
    bundle = bundle_factory(["/bin/echo", "stripped ran"], env=["PATH=/bin", "ENCLAVE_TYPE="])
    r = rune("run", "--bundle", bundle, "early-stripped")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "stripped ran\n" and r.stderr == ""
    assert runc_processes("early-stripped") == []
    assert not record_dir(os.environ["INCLAVARE_RUNE_STATE"], runc_root, "early-stripped").exists()


def test_an_unreachable_agent_leaves_no_runc_and_fails_closed(
        rune: Rune, runc_root: str, bundle_factory: BundleFactory, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCLAVARE_AGENT_SOCKET", str(tmp_path / "no-agent.sock"))
    bundle = bundle_factory(["/bin/echo", "must not run"], annotations=SIM)
    r = rune("run", "--bundle", bundle, "early-noagent")
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "node agent not reachable" in lines[0], r.stderr
    assert runc_processes("early-noagent") == []
    assert not record_dir(os.environ["INCLAVARE_RUNE_STATE"], runc_root, "early-noagent").exists()


def test_a_config_too_large_for_the_pipe_runs_without_the_early_start(
        rune: Rune, runc_bin: str, runc_root: str, bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory(["/bin/sleep", "30"], annotations={**SIM, "org.example.padding": "x" * (600 << 10)})
    rune.create(bundle, "early-large")
    try:
        directory = record_dir(os.environ["INCLAVARE_RUNE_STATE"], runc_root, "early-large")
        assert runc_bundle(runc_bin, runc_root, "early-large") == str(directory / "bundle")
        assert not (directory / "early").exists()
    finally:
        assert rune("delete", "--force", "early-large").returncode == 0


class ScriptedAgent:
    """A control socket that reads one request and answers what ``reply`` returns for it (None:
    never answer), standing in for an agent that is slow, or that plans otherwise."""

    def __init__(self, path: str, reply: Callable[[bytes], bytes | None]) -> None:
        self.requests: list[bytes] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(4)
        self._reply = reply
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            request = read_request(conn)
            if request is None:
                continue
            head, body, _ = request
            self.requests.append(head + b"\r\n\r\n" + body)
            answer = self._reply(body)
            if answer is not None:
                conn.sendall(answer)
                conn.close()

    def close(self) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture
def scripted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent: AgentProcess
             ) -> Iterator[Callable[[Callable[[bytes], bytes | None]], ScriptedAgent]]:
    made: list[ScriptedAgent] = []

    def start(reply: Callable[[bytes], bytes | None]) -> ScriptedAgent:
        path = str(tmp_path / "scripted.sock")
        for k, v in agent.env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("INCLAVARE_AGENT_SOCKET", path)
        made.append(ScriptedAgent(path, reply))
        return made[-1]

    yield start
    for s in made:
        s.close()


def test_a_killed_launcher_leaves_no_runc_waiting(
        scripted: Callable[[Callable[[bytes], bytes | None]], ScriptedAgent], rune_bin: str, runc_bin: str,
        runc_root: str,
        bundle_factory: BundleFactory) -> None:
    """The agent never answers and rune is killed: the early runc, waiting for its config, sees
    the pipe end (or the /proc path gone) and exits by itself, having created nothing."""
    server = scripted(lambda body: None)
    bundle = bundle_factory(["/bin/true"], annotations=SIM)
    proc = subprocess.Popen([rune_bin, "--root", runc_root, "run", "--bundle", bundle, "early-orphan"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (server.requests and runc_processes("early-orphan")) and time.monotonic() < deadline:
        time.sleep(0.01)
    waiting = runc_processes("early-orphan")
    assert server.requests and waiting, "rune did not start runc while waiting for the agent"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    while runc_processes("early-orphan") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runc_processes("early-orphan") == [], "runc still waits for a config nobody will write"
    listing = subprocess.run([runc_bin, "--root", runc_root, "list", "-q"], capture_output=True, text=True)
    assert "early-orphan" not in listing.stdout.split()


def test_an_unexpected_plan_is_run_as_the_agent_says(
        scripted: Callable[[Callable[[bytes], bytes | None]], ScriptedAgent], rune_bin: str, runc_root: str,
        bundle_factory: BundleFactory) -> None:
    """An agent whose argv is not the one rune predicted (another version, another layout): the
    early runc is killed unheard and runc runs exactly the argv the agent answered."""
    planned = bundle_factory(["/bin/echo", "the agent's plan ran"])
    argv = "\0".join(["--root", runc_root, "run", "--bundle", planned, "early-other"]).encode()
    server = scripted(lambda body: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(argv), argv))
    bundle = bundle_factory(["/bin/echo", "the caller's bundle ran"], annotations=SIM)
    r = subprocess.run([rune_bin, "--root", runc_root, "run", "--bundle", bundle, "early-other"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert server.requests
    assert r.returncode == 0, r.stderr
    assert r.stdout == "the agent's plan ran\n" and r.stderr == ""
    assert runc_processes("early-other") == []
