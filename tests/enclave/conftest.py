"""Fixtures for enclave containers: a node agent, rune pointed at it, and evidence checking."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import AgentProcess


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, rune_bin: str) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path_factory.mktemp("agent")).start()
    try:
        yield a
    finally:
        a.stop()


@pytest.fixture
def enclave_env(agent: AgentProcess, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in agent.env.items():
        monkeypatch.setenv(k, v)
    return agent.env


class Rune:
    def __init__(self, binary: str, root: str, tmp: Path) -> None:
        self.binary, self.root, self.tmp = binary, root, tmp

    def __call__(self, *args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, "--root", self.root, *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout, **kw)

    def create(self, bundle: str, cid: str) -> Path:
        out = self.tmp / f"{cid}.out"
        with open(out, "w") as f:  # the container inherits these: pipes would never close
            r = subprocess.run([self.binary, "--root", self.root, "create", "--bundle", bundle, cid],
                               stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, timeout=60)
        assert r.returncode == 0, out.read_text()
        return out


@pytest.fixture
def rune(rune_bin: str, runc_root: str, tmp_path: Path, enclave_env: dict[str, str]) -> Rune:
    return Rune(rune_bin, runc_root, tmp_path)


def rune_with(agent: AgentProcess, monkeypatch: pytest.MonkeyPatch, rune_bin: str, runc_root: str, tmp_path: Path) -> Rune:
    """rune pointed at ``agent`` (its environment set for the test)."""
    for k, v in agent.env.items():
        monkeypatch.setenv(k, v)
    return Rune(rune_bin, runc_root, tmp_path)


def measure(bundle: str, env: dict[str, str]) -> str:
    inclavare = str(Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" / "inclavare")
    import sys
    inclavare = str(Path(sys.executable).parent / "inclavare")
    r = subprocess.run([inclavare, "measure", bundle], capture_output=True, text=True, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def verify_sim_evidence(agent: AgentProcess, evidence_json: str) -> Any:
    """Verify evidence from a sim enclave with the verifier that checks Intel quotes."""
    from inclavare.tee.sim_authority import SimAuthority
    from inclavare.verify.dcap import verify_quote
    from cryptography import x509

    sim = SimAuthority.load_or_create(str(agent.state_dir / "sim"))
    quote = base64.b64decode(json.loads(evidence_json)["quote"])
    root = x509.load_pem_x509_certificate(sim.root_ca_pem.encode())
    return verify_quote(quote, sim.collateral(), now=datetime.now(timezone.utc), trust_anchors=[root])
