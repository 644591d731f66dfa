"""Workload identity under attack: who may talk to an enclave container's two sockets.

A simulated enclave container has the enclave agent at ``/run/inclavare/agent.sock`` (evidence,
tokens, secrets) and its own channel to the node agent at ``/run/inclavare/host/host.sock``
(quotes). Both must answer the processes of that one container only. This is not hypothetical:
a plain container that joined an enclave's pid namespace used to receive the enclave's secrets
through ``/proc/1/root/run/inclavare/agent.sock``. Each case below is a way to reach a socket
from outside the container, tried through the real socket paths with real runc containers:

1. a host process, through the channel's host path and ``/proc/PID/root``;
2. a plain container sharing the enclave's pid namespace (``--pid=container:X``, debug
   containers), through ``/proc/1/root`` — the reported attack;
3. a plain container that bind-mounts the enclave's channel directory;
4. a process reaching the sockets through an enclave process's open directory fd
   (``/proc/PID/fd/N/...``), which no mount table shows;
5. a process ``nsenter``-ed into the enclave's pid namespace only (its pid is then visible to
   the enclave agent, so only the mount namespace tells it apart);
6. another enclave container, through a bind mount of the first one's channel.

Every refusal must be a ``403`` from the component that owns the socket, with its refusal text
and nothing else (no quote, no evidence); every case also shows the same request succeeding for
a process of the container, so a client or a path that simply does not work cannot pass for a
refusal.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import BundleFactory
from tests.enclave.conftest import Rune, measure, verify_sim_evidence
from tests.enclave.test_sim_enclave import wait_running
from tests.support.agent import AgentProcess
from tests.support.host_python import python_mounts, python_ready_rootfs

pytestmark = pytest.mark.root

SIM = {"enclave.type": "sim"}
ATTEST = "/run/inclavare/bin/attest"
AGENT_SOCKET = "/run/inclavare/agent.sock"
HOST_SOCKET = "/run/inclavare/host/host.sock"
AGENT_REFUSED = "refused: the enclave agent answers only the processes of its own enclave container"
CHANNEL_REFUSED = "refused: this channel answers only the processes of the enclave container it belongs to"
REPORT_DATA = b"identity-test"
QUOTE_BODY = json.dumps({"report_data": base64.b64encode(REPORT_DATA).decode()})
EVIDENCE = "/aa/evidence?runtime_data=x"
SLEEP = ["/bin/sleep", "300"]
CONTAINER_CAPS = ("audit_write", "kill", "net_bind_service")  # what sample_images.default_spec grants

# An HTTP client on a unix socket for containers (busybox has none): python -c CLIENT SOCKET
# METHOD TARGET BODY prints the status line, then the body; exits 0 whatever the status.
CLIENT = r"""
import os, socket, sys
path, method, target, body = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
if len(path) < 100:
    s.connect(path)
else:  # longer than sun_path: through the directory
    d = os.open(os.path.dirname(path), os.O_PATH)
    s.connect(f"/proc/self/fd/{d}/{os.path.basename(path)}")
s.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
          f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
answer = b""
while chunk := s.recv(65536):
    answer += chunk
head, _, payload = answer.partition(b"\r\n\r\n")
print(head.split(b"\r\n")[0].decode())
print(payload.decode())
"""


def call(path: str, method: str, target: str, body: str = "") -> tuple[int, bytes]:
    """The same request from a host process (the client run by this host's interpreter)."""
    return parse_client(subprocess.run([sys.executable, "-I", "-S", "-c", CLIENT, path, method, target, body],
                                       capture_output=True, text=True, timeout=60))


def parse_client(r: subprocess.CompletedProcess[str]) -> tuple[int, bytes]:
    assert r.returncode == 0 and r.stderr == "", (r.returncode, r.stderr)
    line, _, payload = r.stdout.partition("\n")
    return int(line.split()[1]), payload.rstrip("\n").encode()


def assert_refused(status: int, body: bytes, refusal: str, reason: str | set[str] | None) -> None:
    """A 403 with ``refusal`` and nothing else; ``reason`` is the exact parenthesised reason, or
    the set of namespaces named as differing (None: any reason)."""
    assert status == 403, body
    doc = json.loads(body)
    assert set(doc) == {"detail"}, doc
    detail = doc["detail"]
    assert detail.startswith(f"{refusal} (") and detail.endswith(")"), detail
    why = detail[len(refusal) + 2:-1]
    if isinstance(reason, str):
        assert why == reason, detail
    elif reason is not None:
        m = re.fullmatch(r"the caller's ([a-z, ]+) namespace differs", why)
        assert m and set(m[1].split(", ")) == reason, detail
    assert b"quote" not in body and b"evidence" not in body


def assert_quote(status: int, body: bytes) -> dict[str, object]:
    assert status == 200, body
    doc = json.loads(body)
    assert doc["tee"] == "sgx" and doc["simulated"] is True and doc["evidence"]["quote"]
    return doc  # type: ignore[no-any-return]


def assert_agent_evidence(status: int, body: bytes) -> None:
    assert status == 200, body
    assert json.loads(body)["quote"]


def assert_evidence(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["quote"]


def assert_attest_refused(r: subprocess.CompletedProcess[str], reason: str | set[str]) -> None:
    assert r.returncode == 1 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    prefix = "attest: the enclave agent refused (403): "
    assert r.stderr.startswith(prefix), r.stderr
    assert_refused(403, r.stderr[len(prefix):].strip().encode(), AGENT_REFUSED, reason)


@dataclass(frozen=True)
class Container:
    cid: str
    pid: int  # its init process, on the host
    channel: str = ""  # enclave containers: the host directory of its node-agent channel
    measurement: str = ""  # enclave containers: `inclavare measure` of its bundle


class Containers:
    """Starts this test's containers (enclave or plain, the host's Python mounted in each) and
    runs clients in them; every container is force-deleted at the end of the test."""

    def __init__(self, rune: Rune, agent: AgentProcess, bundle_factory: BundleFactory, rootfs: str,
                 env: dict[str, str], prefix: str) -> None:
        self.rune, self.agent, self.bundle_factory, self.rootfs, self.env = rune, agent, bundle_factory, rootfs, env
        self.python, self.mounts = python_mounts()
        self.prefix = prefix
        self.started: list[str] = []

    def start(self, name: str, args: list[str], *, enclave: bool, pid_of: Container | None = None,
              bind: dict[str, str] | None = None) -> Container:
        """``pid_of``: join that container's pid namespace; ``bind``: read-only binds, dest → source."""
        bundle = self.bundle_factory(args, rootfs=self.rootfs, annotations=SIM if enclave else None)
        spec = json.loads(Path(bundle, "config.json").read_text())
        spec["mounts"] += self.mounts + [{"destination": dest, "type": "bind", "source": src,
                                          "options": ["rbind", "ro", "nosuid", "nodev"]}
                                         for dest, src in (bind or {}).items()]
        if pid_of is not None:
            spec["linux"]["namespaces"] = [{"type": "pid", "path": f"/proc/{pid_of.pid}/ns/pid"}
                                           if ns["type"] == "pid" else ns for ns in spec["linux"]["namespaces"]]
        Path(bundle, "config.json").write_text(json.dumps(spec))
        measurement = measure(bundle, self.env) if enclave else ""
        cid = f"{self.prefix}-{name}"
        self.started.append(cid)
        self.rune.create(bundle, cid)
        r = self.rune("start", cid)
        assert r.returncode == 0, r.stderr
        wait_running(self.rune, cid)
        pid = json.loads(self.rune("state", cid).stdout)["pid"]
        if not enclave:
            return Container(cid, pid)
        channel = next(c["channel"] for c in self.agent.containers() if c["id"] == cid)
        return Container(cid, pid, channel, measurement)

    def client(self, c: Container, sock: str, method: str, target: str, body: str = "") -> tuple[int, bytes]:
        """``method target`` to ``sock`` from a process exec'd into container ``c``."""
        return parse_client(self.rune("exec", c.cid, self.python, "-I", "-S", "-c", CLIENT,
                                      sock, method, target, body))

    def attest(self, c: Container, agent_socket: str | None = None) -> subprocess.CompletedProcess[str]:
        """``attest evidence`` exec'd into ``c`` (through ``agent_socket`` if given)."""
        env = ["--env", f"INCLAVARE_AGENT_SOCKET={agent_socket}"] if agent_socket else []
        return self.rune("exec", *env, c.cid, ATTEST, "evidence", "--runtime-data", "x")

    def delete_all(self) -> None:
        for cid in reversed(self.started):  # a pid-sharing container before the enclave it joined
            self.rune("delete", "--force", cid)


@pytest.fixture(scope="module")
def python_rootfs(tmp_path_factory: pytest.TempPathFactory) -> str:
    return python_ready_rootfs(str(tmp_path_factory.mktemp("identity") / "rootfs"))


@pytest.fixture
def containers(rune: Rune, agent: AgentProcess, bundle_factory: BundleFactory, python_rootfs: str,
               enclave_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[Containers]:
    prefix = "id-" + re.sub(r"[^a-z0-9]", "", request.node.name.removeprefix("test_"))[:24]
    made = Containers(rune, agent, bundle_factory, python_rootfs, enclave_env, prefix)
    try:
        yield made
    finally:
        made.delete_all()


def test_host_process_is_refused_by_the_channel_and_the_enclave_agent(containers: Containers) -> None:
    a = containers.start("a", SLEEP, enclave=True)
    host_path = os.path.join(a.channel, "host.sock")
    via_proc = f"/proc/{a.pid}/root{AGENT_SOCKET}"
    assert os.path.exists(host_path) and os.path.exists(via_proc)

    assert_refused(*call(host_path, "POST", "/v1/quote", QUOTE_BODY), CHANNEL_REFUSED, {"pid", "mnt"})
    assert_refused(*call(via_proc, "GET", EVIDENCE), AGENT_REFUSED, "the caller is outside its pid namespace")

    assert_evidence(containers.attest(a))
    assert_quote(*containers.client(a, HOST_SOCKET, "POST", "/v1/quote", QUOTE_BODY))


def test_plain_container_sharing_the_pid_namespace_is_refused(containers: Containers) -> None:
    a = containers.start("a", SLEEP, enclave=True)
    plain = containers.start("plain", SLEEP, enclave=False, pid_of=a)
    via_pid1 = f"/proc/1/root{AGENT_SOCKET}"
    host_via_pid1 = f"/proc/1/root{HOST_SOCKET}"
    # pid 1 of the shared namespace is the enclave's workload, seen from the plain container
    assert containers.rune("exec", plain.cid, "/bin/cat", "/proc/1/cmdline").stdout.split("\0")[:2] == SLEEP

    # the reported attack: only the mount namespace tells the neighbour apart
    r = containers.rune("exec", "--env", f"INCLAVARE_AGENT_SOCKET={via_pid1}", plain.cid,
                        f"/proc/1/root{ATTEST}", "evidence", "--runtime-data", "x")
    assert_attest_refused(r, {"mnt"})
    assert_refused(*containers.client(plain, host_via_pid1, "POST", "/v1/quote", QUOTE_BODY),
                   CHANNEL_REFUSED, {"mnt"})

    # the very same requests, through the same paths, from the enclave container's own process
    assert_evidence(containers.attest(a, via_pid1))
    assert_quote(*containers.client(a, host_via_pid1, "POST", "/v1/quote", QUOTE_BODY))


def test_container_bind_mounting_the_channel_directory_is_refused(containers: Containers) -> None:
    a = containers.start("a", SLEEP, enclave=True)
    plain = containers.start("plain", SLEEP, enclave=False, bind={"/mnt/channel": a.channel})

    assert_refused(*containers.client(plain, "/mnt/channel/host.sock", "POST", "/v1/quote", QUOTE_BODY),
                   CHANNEL_REFUSED, {"pid", "mnt"})

    assert_quote(*containers.client(a, HOST_SOCKET, "POST", "/v1/quote", QUOTE_BODY))


def test_reaching_the_sockets_through_proc_fd_is_refused(containers: Containers) -> None:
    a = containers.start("a", ["/bin/sh", "-c", "exec 9</run/inclavare; exec /bin/sleep 300"], enclave=True)
    assert os.readlink(f"/proc/{a.pid}/fd/9") == "/run/inclavare"
    plain = containers.start("plain", SLEEP, enclave=False, pid_of=a)

    # from the host
    fd_dir = f"/proc/{a.pid}/fd/9"
    assert_refused(*call(f"{fd_dir}/agent.sock", "GET", EVIDENCE), AGENT_REFUSED,
                   "the caller is outside its pid namespace")
    assert_refused(*call(f"{fd_dir}/host/host.sock", "POST", "/v1/quote", QUOTE_BODY), CHANNEL_REFUSED,
                   {"pid", "mnt"})
    # from a container sharing the enclave's pid namespace (there the workload is pid 1)
    assert_refused(*containers.client(plain, "/proc/1/fd/9/agent.sock", "GET", EVIDENCE),
                   AGENT_REFUSED, {"mnt"})
    assert_refused(*containers.client(plain, "/proc/1/fd/9/host/host.sock", "POST", "/v1/quote", QUOTE_BODY),
                   CHANNEL_REFUSED, {"mnt"})

    # the same paths from the enclave container's own process
    assert_agent_evidence(*containers.client(a, "/proc/1/fd/9/agent.sock", "GET", EVIDENCE))
    assert_quote(*containers.client(a, "/proc/1/fd/9/host/host.sock", "POST", "/v1/quote", QUOTE_BODY))
    assert_evidence(containers.attest(a, "/proc/1/fd/9/agent.sock"))


def test_process_nsentered_into_only_the_pid_namespace_is_refused(containers: Containers) -> None:
    nsenter, setpriv = shutil.which("nsenter"), shutil.which("setpriv")
    if nsenter is None or setpriv is None:
        pytest.skip("nsenter and setpriv (util-linux) are not installed")
    a = containers.start("a", SLEEP, enclave=True, bind={setpriv: setpriv})  # setpriv for the positive control
    # with the container's capabilities only, the caller is one the enclave agent may inspect (a
    # process holding capabilities the agent lacks is not: refused as "could not be inspected")
    as_container = [setpriv, "--bounding-set", "-all," + ",".join(f"+{c}" for c in CONTAINER_CAPS), "--"]

    def run(how: list[str], sock: str, method: str, target: str, body: str = "") -> tuple[int, bytes]:
        command = [nsenter, "--target", str(a.pid), *how, containers.python, "-I", "-S", "-c", CLIENT,
                   sock, method, target, body]
        return parse_client(subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                           timeout=60))

    # the client is a child inside the enclave's pid namespace, in the host's mount namespace
    where = subprocess.run([nsenter, "--target", str(a.pid), "--pid", "--", "/bin/sh", "-c",
                            "readlink /proc/self/ns/pid /proc/self/ns/mnt"], capture_output=True, text=True)
    assert where.stdout.split() == [os.readlink(f"/proc/{a.pid}/ns/pid"), os.readlink("/proc/self/ns/mnt")]
    channel, agent_via_proc = os.path.join(a.channel, "host.sock"), f"/proc/{a.pid}/root{AGENT_SOCKET}"
    for how in (["--pid", "--", *as_container], ["--pid", "--"]):
        assert_refused(*run(how, channel, "POST", "/v1/quote", QUOTE_BODY), CHANNEL_REFUSED, {"mnt"})
    assert_refused(*run(["--pid", "--", *as_container], agent_via_proc, "GET", EVIDENCE), AGENT_REFUSED, {"mnt"})
    # with all of root's capabilities it is refused too (as a process the agent cannot inspect)
    assert_refused(*run(["--pid", "--"], agent_via_proc, "GET", EVIDENCE), AGENT_REFUSED, None)

    # the same client in the container's pid and mount (and cgroup) namespaces, with its
    # capabilities, is a process of the container: root on the host can always do this (docs:
    # "What this does not stop")
    full = ["--pid", "--mount", "--cgroup", "--", *as_container]
    assert_quote(*run(full, HOST_SOCKET, "POST", "/v1/quote", QUOTE_BODY))
    assert_agent_evidence(*run(full, AGENT_SOCKET, "GET", EVIDENCE))
    assert_evidence(containers.attest(a))


def test_another_enclave_container_is_refused_on_the_first_ones_channel(
        agent: AgentProcess, containers: Containers) -> None:
    a = containers.start("a", SLEEP, enclave=True)
    b = containers.start("b", ["/bin/sleep", "301"], enclave=True, bind={"/mnt/a-channel": a.channel})

    assert_refused(*containers.client(b, "/mnt/a-channel/host.sock", "POST", "/v1/quote", QUOTE_BODY),
                   CHANNEL_REFUSED, {"pid", "mnt"})

    # B's own channel answers B, with a quote for B's measurement; A's answers A
    own = assert_quote(*containers.client(b, HOST_SOCKET, "POST", "/v1/quote", QUOTE_BODY))
    a_quote = assert_quote(*containers.client(a, HOST_SOCKET, "POST", "/v1/quote", QUOTE_BODY))
    for c, doc in ((a, a_quote), (b, own)):
        claims = verify_sim_evidence(agent, json.dumps(doc["evidence"])).claims
        assert claims.mr_enclave.hex() == c.measurement
        assert claims.report_data.rstrip(b"\0") == REPORT_DATA
    assert a.measurement != b.measurement
