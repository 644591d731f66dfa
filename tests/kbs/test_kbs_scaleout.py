"""Scale-out: replicas on one PostgreSQL and workers on one host serve any step of any flow.

No stickiness: every test sends the steps of a flow to different processes. Replay: a session
attests once across replicas. Failure: kill -9 of a replica under load loses nothing that was
acknowledged (sessions, tokens, admin writes) and flows go on on the other replica.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kbs_harness import ALLOW_ALL, KbsProcess, SampleSession, error_type

SECRET = b"shared by every replica"
RESOURCE = "default/shared/1"


def _replica_config(directory: Path, workers: int = 1) -> str:
    """The token key is shared, as every replica of a deployment shares it."""
    key = ec.generate_private_key(ec.SECP256R1())
    (directory / "token.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return f'workers = {workers}\n[attestation]\ntoken_signing_key = "token.key"\n'


@pytest.fixture
def replicas(make_kbs, postgres: str, tmp_path: Path) -> tuple[KbsProcess, KbsProcess]:
    extra = _replica_config(tmp_path)
    a = make_kbs(extra, store=postgres)
    b = make_kbs(extra, store=postgres, directory=str(tmp_path))
    a.set_resource_policy(ALLOW_ALL)
    assert a.admin("POST", f"/resource/{RESOURCE}", SECRET).status_code == 200
    return a, b


def _cookie(session_id: str) -> dict[str, str]:
    return {"cookie": f"kbs-session-id={session_id}"}


def _at(session: SampleSession, server: KbsProcess) -> SampleSession:
    """Send the session's next request to ``server`` (its cookie jar goes along, as behind a balancer)."""
    session.url = server.url + "/kbs/v0"
    return session


def test_a_client_alternating_replicas_on_every_request_completes_flows(replicas) -> None:
    a, b = replicas
    for i in range(6):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        s = SampleSession(first.url)
        assert s.auth().status_code == 200
        r = _at(s, second).attest()
        assert r.status_code == 200, r.text
        r = _at(s, first).resource(RESOURCE)
        assert r.status_code == 200 and s.decrypt(r) == SECRET
    # An admin change through one replica applies on the other at its next request.
    b.set_resource_policy("package policy\nimport rego.v1\ndefault allow := false\n")
    r = _at(s, a).resource(RESOURCE)
    assert r.status_code == 401 and error_type(r) == "PolicyDeny"


def test_a_replayed_attest_on_the_other_replica_is_refused(replicas) -> None:
    a, b = replicas
    victim = SampleSession(a.url)
    victim.auth()
    captured = victim.attestation()
    token = victim.attest(captured).json()["token"]
    cookie = victim.http.cookies["kbs-session-id"]

    # The captured attestation under a session of the other replica: its nonce is not that session's.
    eve = SampleSession(b.url)
    assert eve.auth().status_code == 200
    r = eve.attest(captured)
    assert r.status_code == 401 and error_type(r) == "AttestationError"
    assert "nonce" in r.json()["detail"]

    # The captured cookie and attestation on the other replica: the session attested once; no second
    # verification and no new token, only the one bound to the victim's key.
    r = httpx.post(b.url + "/kbs/v0/attest", json=captured, headers=_cookie(cookie))
    assert r.status_code == 200 and r.json()["token"] == token

    # Racing attests of one session on both replicas: one counts, both answer the same token.
    for _ in range(5):
        s = SampleSession(a.url)
        s.auth()
        body, jar = s.attestation(), _cookie(s.http.cookies["kbs-session-id"])
        tokens: list[str] = []
        start = threading.Barrier(2)

        def attest(server: KbsProcess, body: dict = body, jar: dict = jar) -> None:
            start.wait()
            tokens.append(httpx.post(server.url + "/kbs/v0/attest", json=body, headers=jar).json()["token"])

        threads = [threading.Thread(target=attest, args=(server,)) for server in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(tokens) == 2 and tokens[0] == tokens[1]
        s.close()


class _FailoverClient:
    """Alternates replicas on every request; a request a dead replica cannot answer goes to the next."""

    def __init__(self, servers: list[KbsProcess]) -> None:
        self.servers = servers
        self.turn = 0
        self.http = httpx.Client(timeout=10)

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        for _ in range(len(self.servers) * 2):
            self.turn += 1
            server = self.servers[self.turn % len(self.servers)]
            try:
                return self.http.request(method, server.url + "/kbs/v0" + path, **kw)
            except httpx.TransportError:
                continue
        raise RuntimeError("no replica answered")


@pytest.mark.slow
def test_kill_9_of_a_replica_under_load_loses_nothing_acknowledged(replicas, postgres: str) -> None:
    a, b = replicas
    attested: list[tuple[SampleSession, str]] = []  # sessions whose attest was acknowledged
    written: dict[str, bytes] = {}  # admin writes acknowledged
    after_kill: list[float] = []
    killed_at: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def flows() -> None:
        client = _FailoverClient([a, b])
        while not stop.is_set():
            s = SampleSession(a.url)
            try:
                r = client.request("POST", "/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": {}})
                s.nonce, jar = r.json()["nonce"], _cookie(r.cookies["kbs-session-id"])
                r = client.request("POST", "/attest", json=s.attestation(), headers=jar)
                assert r.status_code == 200, r.text
                with lock:
                    attested.append((s, r.cookies["kbs-session-id"]))
                r = client.request("GET", f"/resource/{RESOURCE}", headers=jar)
                assert r.status_code == 200 and s.decrypt(r) == SECRET, r.text
            except Exception as exc:  # every failure is reported below
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}"[:200])
                return
            if killed_at:
                after_kill.append(time.monotonic())

    def admin_writes() -> None:
        i = 0
        while not stop.is_set():
            server = (a, b)[i % 2]
            path, value = f"default/w/{i}", os.urandom(8)
            try:
                if server.admin("POST", f"/resource/{path}", value).status_code == 200:
                    with lock:
                        written[path] = value
            except httpx.TransportError:
                pass  # the killed replica: not acknowledged
            i += 1

    threads = [threading.Thread(target=flows) for _ in range(4)] + [threading.Thread(target=admin_writes)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    a.kill9()
    killed_at.append(time.monotonic())
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert not failures, failures[:3]
    assert len(after_kill) >= 4, "flows did not continue on the surviving replica"
    # Every acknowledged attestation and admin write is there, on the survivor.
    for s, cookie in attested:
        r = httpx.get(f"{b.url}/kbs/v0/resource/{RESOURCE}", headers=_cookie(cookie))
        assert r.status_code == 200 and s.decrypt(r) == SECRET
    assert written, "no admin write was acknowledged"
    from inclavare.services.kbs.store import open_store

    store = open_store(postgres)
    try:
        missing = [p for p, v in written.items() if store.get_resource(p) != v]
    finally:
        store.close()
    assert not missing, f"acknowledged writes lost: {missing[:3]}"


# --- workers on one host (SQLite) ---------------------------------------------------------------


def _fresh() -> httpx.Client:
    """A client that opens a new connection per request, so requests spread over the workers."""
    return httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0))


def _worker_pids(server: KbsProcess) -> set[int]:
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") as fh:
        return {int(p) for p in fh.read().split()}


def test_workers_share_sessions_limits_and_survive_a_killed_worker(make_kbs, tmp_path: Path) -> None:
    server = make_kbs(_replica_config(tmp_path, workers=2)
                      + "[limits]\nauth_rate_per_second = 0.01\nauth_burst = 12\n")
    server.set_resource_policy(ALLOW_ALL)
    assert server.admin("POST", f"/resource/{RESOURCE}", SECRET).status_code == 200
    pids = _worker_pids(server)
    assert len(pids) == 2

    def flow() -> int:
        s = SampleSession(server.url)
        s.http = _fresh()
        r = s.auth()
        if r.status_code != 200:
            return r.status_code
        assert s.attest().status_code == 200
        r = s.resource(RESOURCE)
        assert r.status_code == 200 and s.decrypt(r) == SECRET
        return 200

    assert [flow() for _ in range(5)] == [200] * 5
    os.kill(sorted(pids)[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = _worker_pids(server)
        if len(now) == 2 and now != pids:
            break
        time.sleep(0.05)
    assert len(_worker_pids(server)) == 2 and _worker_pids(server) != pids, "the dead worker was not replaced"
    assert "was killed by signal 9; starting a new one" in server.stderr()
    # The /auth bucket (burst 12) is one for the whole host, whichever worker answers.
    statuses = [flow() for _ in range(10)]
    assert statuses == [200] * 7 + [429] * 3


def test_tls_table_serves_https_with_workers(tmp_path: Path) -> None:
    from tests.enclave.test_workload_kbs import _tls_material

    ca, cert, key = _tls_material(tmp_path)
    server = KbsProcess(str(tmp_path), (
        'listen = "127.0.0.1:0"\nstore = "sqlite:///kbs.db"\ninsecure_allow_sample_tee = true\n'
        f'workers = 2\n[tls]\ncert = "{cert.name}"\nkey = "{key.name}"\n'), None, ca=str(ca))
    try:
        server.start()
        assert server.url.startswith("https://")
        for _ in range(4):
            r = httpx.post(server.url + "/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample"},
                           verify=server._verify())
            assert r.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", r.cookies["kbs-session-id"])
    finally:
        server.stop()


def test_listener_bounds_hold_in_every_worker(make_kbs, tmp_path: Path) -> None:
    """Each worker applies the connection caps and the request deadline itself (per process)."""
    import socket
    from urllib.parse import urlsplit

    server = make_kbs(_replica_config(tmp_path, workers=2)
                      + "[limits]\nmax_connections_per_client = 2\nrequest_timeout_seconds = 1\n")
    parts = urlsplit(server.url)
    conns = [socket.create_connection((parts.hostname, parts.port), timeout=5) for _ in range(8)]
    time.sleep(0.5)
    refused = []
    for c in conns:
        c.setblocking(False)
        try:
            refused.append(c.recv(4096).startswith(b"HTTP/1.1 503"))
        except BlockingIOError:
            refused.append(False)  # held by a worker, silent until its deadline
    assert 4 <= refused.count(True) <= 6, refused  # 2 held per worker at most: 2 to 4 held in all
    time.sleep(1.5)
    for c, was_refused in zip(conns, refused):
        if not was_refused:
            c.setblocking(True)
            assert c.recv(4096).startswith(b"HTTP/1.1 408")  # the deadline, in whichever worker
        c.close()
