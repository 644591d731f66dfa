"""``inclavare ratls``: inspect, issue, verify and the two relays, run as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from inclavare.tee.sim_authority import SimAuthority
from tests.ratls.conftest import MR_A, MR_B, RATLS_DATA, exchange, shared_certificate

INCLAVARE = str(Path(sys.executable).parent / "inclavare")
pytestmark = pytest.mark.timeout(120)


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INCLAVARE, "ratls", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def exported(authority: SimAuthority, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trust")
    authority.export(str(out))
    return out


def _sim_args(authority: SimAuthority, mr: bytes) -> list[str]:
    return ["--attester", "sim", "--sim-authority", authority._state_dir, "--sim-mr-enclave", mr.hex()]  # noqa: SLF001


def _trust_args(trust: Path, mr: bytes) -> list[str]:
    return ["--trust-anchor", str(trust / "root-ca.pem"), "--collateral", str(trust / "collateral.json"),
            "--mr-enclave", mr.hex()]


def test_inspect_shared_certificate_json() -> None:
    shared_certificate("gramine-cert.pem")
    r = run("inspect", str(RATLS_DATA / "gramine-cert.pem"), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["evidence_type"] == "sgx_ecdsa" and doc["pubkey_bound"] is True
    assert doc["claims"]["pubkey-hash"]["alg"] == "sha256"
    assert doc["quote"]["mr_enclave"] == "0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585"
    text = run("inspect", str(RATLS_DATA / "intel-sgxsdk-cert.pem"))
    assert "evidence_type: sgx_ecdsa" in text.stdout and "pubkey_bound: true" in text.stdout


@pytest.mark.parametrize("content, message", [
    (b"garbage", "malformed certificate"),
    (b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n", "malformed certificate"),
])
def test_inspect_malformed_is_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    r = run("inspect", str(path))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("inclavare: error:") and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_issue_then_inspect_and_verify(authority: SimAuthority, exported: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    r = run("issue", "--cert-out", str(cert), "--key-out", str(key), *_sim_args(authority, MR_A),
            "--endorsements")
    assert r.returncode == 0, r.stderr
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert "SIMULATED TEE" in r.stderr and str(key) in r.stderr  # where the key went, and what it is
    first_key = key.read_bytes()
    again = run("issue", "--cert-out", str(cert), "--key-out", str(key), *_sim_args(authority, MR_A))
    assert again.returncode == 2 and "--force" in again.stderr and key.read_bytes() == first_key  # nothing lost
    inspected = json.loads(run("inspect", str(cert), "--json").stdout)
    assert inspected["pubkey_bound"] is True and inspected["quote"]["simulated"] is True
    ok = run("verify", str(cert), "--json", "--trust-anchor", str(exported / "root-ca.pem"),
             "--mr-enclave", MR_A.hex())
    assert ok.returncode == 0, ok.stderr
    verdict = json.loads(ok.stdout)
    assert verdict["claims"]["collateral_from"] == "certificate"
    assert verdict["verified"] is True and verdict["simulated"] is True  # the same keys as the text
    text = run("verify", str(cert), "--trust-anchor", str(exported / "root-ca.pem"), "--mr-enclave", MR_A.hex())
    assert "simulated: true (SIMULATED TEE" in text.stdout and "None" not in text.stdout
    wrong = run("verify", str(cert), *_trust_args(exported, MR_B))
    assert wrong.returncode == 1 and "mr_enclave" in wrong.stderr and "Traceback" not in wrong.stderr
    intel = run("verify", str(cert), "--mr-enclave", MR_A.hex())  # default trust: Intel's root only
    assert intel.returncode == 1 and "inclavare: error:" in intel.stderr
    later = run("verify", str(cert), *_trust_args(exported, MR_A), "--at", "2099-01-01T00:00:00Z")
    assert later.returncode == 1 and "not valid at this time" in later.stderr
    nopin = run("verify", str(cert), "--trust-anchor", str(exported / "root-ca.pem"))
    assert nopin.returncode == 2 and "pins no identity" in nopin.stderr


def test_option_errors_are_one_line(tmp_path: Path) -> None:
    r = run("serve", "--listen", "nowhere", "--forward", "127.0.0.1:1")
    assert r.returncode == 2 and "HOST:PORT" in r.stderr
    r = run("connect", "--listen", "127.0.0.1:0", "--connect", "127.0.0.1:1", "--insecure-any-enclave",
            "--policy", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "cannot read policy" in r.stderr
    env_less = subprocess.run([INCLAVARE, "ratls", "issue", "--cert-out", str(tmp_path / "c"),
                               "--key-out", str(tmp_path / "k")], capture_output=True, text=True,
                              env={**os.environ, "INCLAVARE_AGENT_SOCKET": str(tmp_path / "none.sock")})
    assert env_less.returncode == 2 and "no TEE found" in env_less.stderr


class Relay:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen([INCLAVARE, "ratls", *args], stdout=subprocess.PIPE,
                                     stderr=open(log, "wb"), stdin=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.wait(10)
            raise AssertionError(f"relay did not start: {line!r} {log.read_text()}")
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)


def test_relays_carry_a_plain_service_over_mutual_ratls(authority: SimAuthority, exported: Path,
                                                       echo_port: int, tmp_path: Path) -> None:
    serve = Relay(["serve", "--listen", "127.0.0.1:0", "--forward", f"127.0.0.1:{echo_port}", "--mutual",
                   *_sim_args(authority, MR_A), *_trust_args(exported, MR_B)], tmp_path / "serve.log")
    good = Relay(["connect", "--listen", "127.0.0.1:0", "--connect", f"127.0.0.1:{serve.port}", "--mutual",
                  *_sim_args(authority, MR_B), *_trust_args(exported, MR_A)], tmp_path / "good.log")
    impostor = Relay(["connect", "--listen", "127.0.0.1:0", "--connect", f"127.0.0.1:{serve.port}",
                      "--mutual", *_sim_args(authority, bytes(32)), *_trust_args(exported, MR_A)],
                     tmp_path / "impostor.log")
    picky = Relay(["connect", "--listen", "127.0.0.1:0", "--connect", f"127.0.0.1:{serve.port}", "--mutual",
                   *_sim_args(authority, MR_B), *_trust_args(exported, MR_B)], tmp_path / "picky.log")
    try:
        payload = os.urandom(200_000)
        assert exchange(good.port, payload) == payload
        assert exchange(impostor.port, b"let me in") == b""  # the server refused this client
        assert exchange(picky.port, b"hello") == b""  # this client refused the server
    finally:
        codes = [relay.stop() for relay in (serve, good, impostor, picky)]
    assert codes == [0, 0, 0, 0]
    serve_log = (tmp_path / "serve.log").read_text()
    assert f"mr_enclave {bytes(32).hex()} is not an expected value" in serve_log
    assert "accepted" in serve_log and "Traceback" not in serve_log
    assert f"mr_enclave {MR_A.hex()} is not an expected value" in (tmp_path / "picky.log").read_text()
    # the refused client does not report a connection as a success: the server closed it at once
    assert "without sending a byte" in (tmp_path / "impostor.log").read_text()
    assert "Traceback" not in (tmp_path / "good.log").read_text()
