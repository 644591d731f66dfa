"""Containers in simulated enclaves, run by rune with real runc and a real node agent.

The simulated TEE protects nothing; these tests show it exercises the real paths: the workload
gets a quote in the real SGX format from inside a busybox-only image, the verifier that checks
Intel's quotes accepts it under the simulated root, and identity comes from kernel facts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BundleFactory
from tests.enclave.conftest import Rune, measure, verify_sim_evidence
from tests.support.agent import AgentProcess

pytestmark = pytest.mark.root

SIM = {"enclave.type": "sim"}
ATTEST = "/run/inclavare/bin/attest"


def evidence_of(rune: Rune, cid: str, data: str) -> str:
    r = rune("exec", cid, ATTEST, "evidence", "--runtime-data", data)
    assert r.returncode == 0, r.stderr
    return r.stdout


def wait_running(rune: Rune, cid: str) -> None:
    for _ in range(200):
        if json.loads(rune("state", cid).stdout or "{}").get("status") == "running":
            return
        time.sleep(0.02)
    raise AssertionError(f"{cid} is not running")


def test_busybox_container_fetches_and_verifies_its_own_evidence(
        rune: Rune, agent: AgentProcess, bundle_factory: BundleFactory, enclave_env: dict[str, str]) -> None:
    bundle = bundle_factory([ATTEST, "evidence", "--runtime-data", "nonce-1234"], annotations=SIM)
    expected = measure(bundle, enclave_env)
    r = rune("run", "--bundle", bundle, "ev1")
    assert r.returncode == 0, r.stderr
    verified = verify_sim_evidence(agent, r.stdout)
    assert verified.claims.mr_enclave.hex() == expected
    assert verified.claims.report_data == b"nonce-1234".ljust(64, b"\0")


def test_two_containers_have_distinct_identities(
        rune: Rune, agent: AgentProcess, bundle_factory: BundleFactory, enclave_env: dict[str, str]) -> None:
    bundles = {cid: bundle_factory(["/bin/sleep", str(300 + i)], annotations=SIM) for i, cid in enumerate(("a1", "a2"))}
    for cid, bundle in bundles.items():
        rune.create(bundle, cid)
        assert rune("start", cid).returncode == 0
        wait_running(rune, cid)
    try:
        seen = {}
        for cid, bundle in bundles.items():
            claims = verify_sim_evidence(agent, evidence_of(rune, cid, cid)).claims
            assert claims.mr_enclave.hex() == measure(bundle, enclave_env)
            assert claims.report_data.rstrip(b"\0") == cid.encode()
            seen[cid] = claims.mr_enclave
        assert seen["a1"] != seen["a2"]
    finally:
        for cid in bundles:
            rune("delete", "--force", cid)


def test_modified_rootfs_changes_the_measurement(
        rune: Rune, agent: AgentProcess, busybox_rootfs: str, tmp_path: Path, bundle_factory: BundleFactory,
        enclave_env: dict[str, str]) -> None:
    args = [ATTEST, "evidence"]
    original = bundle_factory(args, annotations=SIM)
    copy = str(tmp_path / "modified-rootfs")
    shutil.copytree(busybox_rootfs, copy, symlinks=True)
    Path(copy, "etc", "motd").write_text("one changed file\n")
    modified = bundle_factory(args, annotations=SIM, rootfs=copy)
    assert measure(original, enclave_env) != measure(modified, enclave_env)
    r = rune("run", "--bundle", modified, "mod1")
    assert r.returncode == 0, r.stderr
    assert verify_sim_evidence(agent, r.stdout).claims.mr_enclave.hex() == measure(modified, enclave_env)


def test_runtime_data_longer_than_64_bytes_is_an_error(rune: Rune, bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory([ATTEST, "evidence", "--runtime-data", "x" * 65], annotations=SIM)
    r = rune("run", "--bundle", bundle, "long1")
    assert r.returncode == 1
    assert "longer than 64 bytes" in r.stderr


def test_rune_attest_and_delete_deregisters(
        rune: Rune, agent: AgentProcess, bundle_factory: BundleFactory, enclave_env: dict[str, str]) -> None:
    bundle = bundle_factory(["/bin/sleep", "300"], annotations=SIM)
    rune.create(bundle, "att1")
    assert rune("start", "att1").returncode == 0
    wait_running(rune, "att1")
    r = rune("attest", "--runtime-data", "from-rune-attest", "att1")
    assert r.returncode == 0, r.stderr
    claims = verify_sim_evidence(agent, r.stdout).claims
    assert claims.mr_enclave.hex() == measure(bundle, enclave_env)
    assert claims.report_data.rstrip(b"\0") == b"from-rune-attest"
    # the operator's tool agrees, under the simulated root given explicitly
    import subprocess
    import sys

    from inclavare.tee.sim_authority import SimAuthority

    trust = agent.work / "trust"
    SimAuthority.load_or_create(str(agent.state_dir / "sim")).export(str(trust))
    v = subprocess.run([str(Path(sys.executable).parent / "inclavare"), "verify", "-", "--json", "--trust-anchor",
                        str(trust / "root-ca.pem"), "--collateral", str(trust / "collateral.json")],
                       input=r.stdout, capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    assert measure(bundle, enclave_env) in v.stdout
    assert "att1" in {c["id"] for c in agent.containers()}
    assert rune("delete", "--force", "att1").returncode == 0
    assert "att1" not in {c["id"] for c in agent.containers()}
    r = rune("attest", "att1")
    assert r.returncode == 1 and "container att1 does not exist" in r.stderr


def test_agent_kill9_and_restart_keeps_identities(
        rune: Rune, agent: AgentProcess, bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory(["/bin/sleep", "300"], annotations=SIM)
    rune.create(bundle, "k9")
    assert rune("start", "k9").returncode == 0
    wait_running(rune, "k9")
    try:
        before = verify_sim_evidence(agent, evidence_of(rune, "k9", "before")).claims.mr_enclave
        agent.kill9()
        agent.start()
        after = verify_sim_evidence(agent, evidence_of(rune, "k9", "after")).claims.mr_enclave
        assert after == before
    finally:
        rune("delete", "--force", "k9")


def test_exit_codes_signals_and_exec_keep_container_semantics(rune: Rune, bundle_factory: BundleFactory) -> None:
    r = rune("run", "--bundle", bundle_factory(["/bin/sh", "-c", "echo in-enclave; exit 3"], annotations=SIM), "x3")
    assert (r.returncode, r.stdout) == (3, "in-enclave\n")
    bundle = bundle_factory(["/bin/sh", "-c", "trap 'exit 42' TERM; sleep 300 & wait"], annotations=SIM)
    rune.create(bundle, "sig1")
    assert rune("start", "sig1").returncode == 0
    wait_running(rune, "sig1")
    e = rune("exec", "sig1", "/bin/sh", "-c", "echo exec-ok; exit 5")
    assert (e.returncode, e.stdout) == (5, "exec-ok\n")
    assert rune("kill", "sig1", "TERM").returncode == 0
    for _ in range(200):
        if json.loads(rune("state", "sig1").stdout)["status"] == "stopped":
            break
        time.sleep(0.02)
    st = json.loads(rune("state", "sig1").stdout)
    assert st["status"] == "stopped"
    assert st["bundle"] == bundle  # the caller's bundle, not rune's private copy
    assert rune("delete", "sig1").returncode == 0


@pytest.mark.parametrize("annotations,message", [
    ({"enclave.type": "sgx"}, "enclave type sgx is not supported"),
    ({"enclave.type": "sim", "enclave.runtime.path": "nosuch"}, "unknown enclave runtime 'nosuch'"),
    ({"enclave.type": "intelSgx", "enclave.runtime.path": "/nonexistent/liberpal.so"}, "does not exist"),
])
def test_errors_planned_by_the_agent_reach_the_log(rune: Rune, agent: AgentProcess, bundle_factory: BundleFactory,
                                                   tmp_path: Path, annotations: dict[str, str], message: str) -> None:
    """With an agent running, the native launcher has the agent plan the container: its
    refusal must reach the caller exactly as rune's own errors do (runc's log format)."""
    bundle = bundle_factory(["/bin/echo", "must not run"], annotations=annotations)
    log = tmp_path / "log.json"
    r = rune("--log", str(log), "--log-format", "json", "create", "--bundle", bundle, "agent-refused")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("rune: ") and message in r.stderr
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and message in entry["msg"]
    assert "agent-refused" not in {c["id"] for c in agent.containers()}


def test_enclave_container_cannot_join_another_containers_pid_namespace(
        rune: Rune, bundle_factory: BundleFactory) -> None:
    host = bundle_factory(["/bin/sleep", "300"])
    rune.create(host, "pidhost")
    try:
        init = json.loads(rune("state", "pidhost").stdout)["pid"]
        bundle = bundle_factory(["/bin/true"], annotations=SIM)
        spec = json.loads(Path(bundle, "config.json").read_text())
        spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "pid"]
        spec["linux"]["namespaces"].append({"type": "pid", "path": f"/proc/{init}/ns/pid"})
        Path(bundle, "config.json").write_text(json.dumps(spec))
        r = rune("run", "--bundle", bundle, "joiner")
        assert r.returncode == 1 and "cannot join another's" in r.stderr
        assert "joiner" not in rune("list", "-q").stdout.split()
    finally:
        rune("delete", "--force", "pidhost")


def test_enclave_needs_its_own_pid_namespace(rune: Rune, bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory(["/bin/true"], annotations=SIM)
    spec = json.loads(Path(bundle, "config.json").read_text())
    spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "pid"]
    Path(bundle, "config.json").write_text(json.dumps(spec))
    r = rune("run", "--bundle", bundle, "nopid")
    assert r.returncode == 1 and "own pid namespace" in r.stderr


def test_recycled_pid_never_inherits_an_identity(tmp_path: Path) -> None:
    """A registration's init process is trusted only while it is alive with its recorded start
    time: a later process that reuses the pid (or a dead container's namespaces) is nobody."""
    import subprocess
    import sys
    from dataclasses import replace

    from inclavare.services.agent.registry import Registry, registration_from
    from inclavare.services.peer import namespaces_of, start_time

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        base = {"root": "/run/x", "runc": "/bin/false", "bundle": "/b", "measurement": "00" * 32,
                "enclave": {"type": "sim"}, "runtime": "sim"}
        registry = Registry(str(tmp_path / "reg"))
        live = registry.register(replace(registration_from({**base, "id": "live"}),
                                         init_pid=child.pid, init_start=start_time(child.pid)))
        dead = registry.register(replace(registration_from({**base, "id": "dead"}), init_pid=child.pid,
                                         init_start=start_time(child.pid) + 1))
        for reloaded in (registry, Registry(str(tmp_path / "reg"))):
            assert reloaded.init_namespaces(live.key) == namespaces_of(child.pid)
            assert reloaded.init_namespaces(dead.key) is None
    finally:
        child.kill()
        child.wait()


def test_python_launcher_plans_enclaves_itself(launchers: dict[str, str], runc_root: str, agent: AgentProcess,
                                              bundle_factory: BundleFactory, enclave_env: dict[str, str]) -> None:
    """Without the native launcher, rune's Python path plans the enclave in its own process: same
    measurement, same registration, same evidence."""
    import subprocess

    bundle = bundle_factory([ATTEST, "evidence", "--runtime-data", "py"], annotations=SIM)
    r = subprocess.run([launchers["python"], "--root", runc_root, "run", "--bundle", bundle, "py1"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 0, r.stderr
    claims = verify_sim_evidence(agent, r.stdout).claims
    assert claims.mr_enclave.hex() == measure(bundle, enclave_env)
    assert claims.report_data.rstrip(b"\0") == b"py"


def test_a_registration_lists_every_field() -> None:
    from dataclasses import fields

    from inclavare.services.agent.registry import Registration, registration_from

    reg = registration_from({"id": "c", "root": "/r", "runc": "/runc", "bundle": "/b", "measurement": "ab" * 32,
                             "enclave": {"type": "sim"}, "runtime": "sim"})
    assert set(reg.public()) == {f.name for f in fields(Registration)}


def test_agent_ls_lists_what_the_agent_holds(rune: Rune, agent: AgentProcess, bundle_factory: BundleFactory,
                                            enclave_env: dict[str, str]) -> None:
    import sys

    inclavare = str(Path(sys.executable).parent / "inclavare")
    bundle = bundle_factory(["/bin/sleep", "300"], annotations=SIM)
    rune.create(bundle, "listed")
    try:
        r = subprocess.run([inclavare, "agent", "ls", "--socket", agent.socket, "--json"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        entry = next(c for c in json.loads(r.stdout) if c["id"] == "listed")
        assert entry["measurement"] == measure(bundle, enclave_env) and entry["relay"]["tunnels"] == 0
        text = subprocess.run([inclavare, "agent", "ls", "--socket", agent.socket], capture_output=True, text=True,
                              timeout=30).stdout.splitlines()
        assert text[0].split()[:3] == ["ID", "TYPE", "MEASUREMENT"]
        row = next(line for line in text if line.startswith("listed "))
        assert "sim (SIMULATED)" in row and entry["measurement"][:16] in row
    finally:
        rune("delete", "--force", "listed")


def test_agent_decisions_are_json_lines_with_log_format_json(
        rune_bin: str, runc_root: str, tmp_path: Path, bundle_factory: BundleFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One structured line per registration and deregistration, with the facts as fields."""
    (tmp_path / "agent").mkdir()
    agent = AgentProcess(tmp_path / "agent", log_format="json").start()
    try:
        for k, v in agent.env.items():
            monkeypatch.setenv(k, v)
        rune = Rune(rune_bin, runc_root, tmp_path)
        rune.create(bundle_factory(["/bin/sleep", "300"], annotations=SIM), "logged")
        assert rune("delete", "--force", "logged").returncode == 0
    finally:
        agent.stop()
    lines = [json.loads(line) for line in agent.log.read_text().splitlines()]  # every line is JSON
    events = {doc.get("event"): doc for doc in lines if doc.get("container") == "logged"}
    assert set(events) >= {"register", "deregister"}, lines
    register = events["register"]
    assert register["tee"] == "sim" and register["simulated"] is True and len(register["measurement"]) == 64
    assert register["request_id"] and register["component"] == "agent" and register["level"] == "info"


def test_agent_metrics_count_what_happened(rune: Rune, agent: AgentProcess, bundle_factory: BundleFactory) -> None:
    """Prometheus text on the control socket: starts, quotes, refusals by reason, EPC."""
    import socket as _socket

    from inclavare.services.agent import client

    def metrics() -> dict[str, float]:
        text = client.request(agent.socket, "GET", "/metrics").body.decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line and not line.startswith("#")}

    before = metrics()
    rune.create(bundle_factory(["/bin/sleep", "300"], annotations=SIM), "counted")
    try:
        assert rune("start", "counted").returncode == 0
        wait_running(rune, "counted")
        assert rune("exec", "counted", ATTEST, "evidence").returncode == 0  # one quote
        channel = next(c["channel"] for c in agent.containers() if c["id"] == "counted")
        with _socket.socket(_socket.AF_UNIX) as host:  # a host process: refused (namespaces differ)
            host.connect(os.path.join(channel, "host.sock"))
            host.sendall(b"POST /v1/quote HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            assert b" 403 " in host.recv(4096)
        after = metrics()
    finally:
        rune("delete", "--force", "counted")
    assert after["agent_registrations_total"] == before["agent_registrations_total"] + 1
    assert after["agent_quotes_total"] >= before["agent_quotes_total"] + 1
    assert after['agent_refusals_total{reason="namespace"}'] >= before.get('agent_refusals_total{reason="namespace"}', 0) + 1
    assert after["agent_enclaves"] >= 1 and "agent_epc_in_use_mib" in after
