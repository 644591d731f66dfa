"""Mutual RA-TLS between two simulated enclave containers started by rune (real runc, a real
node agent): each container issues its certificate with evidence from the agent, which
identifies it from kernel facts, and each verifies the other's measurement.

The containers run busybox images. The host's Python, its standard library, the venv's
site-packages and this project's source are bind-mounted read-only (environment.md §9): a
bind mount keeps the test fast and exposes exactly those directories, unchanged, whereas the
runelet runtime folder only holds the standard-library modules the runelet imports (no ssl,
asyncio or site-packages). Mounted content is data to the simulated TEE and is not measured;
the measurement covers the image and the command line, which is what distinguishes the
containers here.
"""

from __future__ import annotations

import json
import os
import socket
import sysconfig
import time
from pathlib import Path

import pytest

import inclavare
from inclavare.sample_images import build_busybox_rootfs, make_bundle
from inclavare.tee.sim_authority import SimAuthority
from tests.enclave.conftest import Rune, agent, enclave_env, measure, rune  # noqa: F401
from tests.ratls.conftest import exchange
from tests.support.agent import AgentProcess
from tests.support.host_python import python_mounts

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

SIM = {"enclave.type": "sim"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bundle(tmp: Path, name: str, rootfs: str, ratls_args: list[str], trust: Path) -> str:
    source = str(Path(inclavare.__file__).resolve().parent.parent)
    python, mounts = python_mounts([sysconfig.get_paths()["purelib"], source])
    boot = (f"import sys; sys.path[:0] = [{source!r}, {sysconfig.get_paths()['purelib']!r}]; "
            "from inclavare.cli.main import main; sys.exit(main())")
    bundle = make_bundle(str(tmp / name), [python, "-I", "-S", "-B", "-c", boot, "ratls", *ratls_args],
                         rootfs=rootfs, annotations=SIM)
    spec = json.loads(Path(bundle, "config.json").read_text())
    spec["mounts"] += mounts + [{"destination": "/trust", "type": "bind", "source": str(trust),
                                 "options": ["rbind", "ro"]}]
    # the host's loopback: both containers and the test's plain service meet there
    spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network"]
    Path(bundle, "config.json").write_text(json.dumps(spec))
    return bundle


def _wait_listening(output: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "listening on" in output.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"relay in container did not start: {output.read_text()[-2000:]}")


def test_mutual_ratls_between_two_sim_enclave_containers(
        rune: Rune, agent: AgentProcess, enclave_env: dict[str, str], tmp_path: Path,  # noqa: F811
        echo_port: int) -> None:
    rootfs = build_busybox_rootfs(str(tmp_path / "rootfs"))
    for link in ("lib", "lib64"):
        os.symlink(f"usr/{link}", os.path.join(rootfs, link))
    trust = tmp_path / "trust"
    SimAuthority.load_or_create(str(agent.state_dir / "sim")).export(str(trust))
    verify = ["--trust-anchor", "/trust/root-ca.pem", "--collateral", "/trust/collateral.json"]
    server_port, client_port, impostor_port = _free_port(), _free_port(), _free_port()
    server = _bundle(tmp_path, "server", rootfs,
                     ["serve", "--listen", f"127.0.0.1:{server_port}", "--forward", f"127.0.0.1:{echo_port}",
                      "--mutual", *verify, "--policy", "/trust/server-policy.json"], trust)
    client = _bundle(tmp_path, "client", rootfs,
                     ["connect", "--listen", f"127.0.0.1:{client_port}", "--connect",
                      f"127.0.0.1:{server_port}", "--mutual", *verify, "--policy", "/trust/client-policy.json"],
                     trust)
    impostor = _bundle(tmp_path, "impostor", rootfs,
                       ["connect", "--listen", f"127.0.0.1:{impostor_port}", "--connect",
                        f"127.0.0.1:{server_port}", "--mutual", "--key-type", "ec-p384", *verify,
                        "--policy", "/trust/client-policy.json"], trust)
    measured = {name: measure(bundle, enclave_env) for name, bundle in
                (("server", server), ("client", client), ("impostor", impostor))}
    assert len(set(measured.values())) == 3
    (trust / "server-policy.json").write_text(json.dumps({"mr_enclave": [measured["client"]]}))
    (trust / "client-policy.json").write_text(json.dumps({"mr_enclave": [measured["server"]]}))
    outputs = {}
    try:
        for name, bundle in (("server", server), ("client", client), ("impostor", impostor)):
            outputs[name] = rune.create(bundle, f"ratls-{name}")
            assert rune("start", f"ratls-{name}").returncode == 0
        for output in outputs.values():
            _wait_listening(output)
        payload = os.urandom(100_000)
        assert exchange(client_port, payload) == payload
        assert exchange(impostor_port, b"let me in") == b""
    finally:
        for name in ("server", "client", "impostor"):
            rune("kill", f"ratls-{name}", "TERM")
        time.sleep(0.3)
        for name in ("server", "client", "impostor"):
            rune("delete", "--force", f"ratls-{name}")
    server_log = outputs["server"].read_text()
    assert "accepted" in server_log and measured["client"][:16] in server_log
    assert f"mr_enclave {measured['impostor']} is not an expected value" in server_log
    assert measured["server"][:16] in outputs["client"].read_text()
    assert "Traceback" not in "".join(o.read_text() for o in outputs.values())
