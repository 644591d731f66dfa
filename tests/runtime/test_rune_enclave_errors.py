"""rune refuses bad enclave configuration before anything is created, in runc's error format."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BundleFactory

pytestmark = pytest.mark.root


def rune(rune_bin: str, root: str, log: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([rune_bin, "--root", root, "--log", str(log), "--log-format", "json", *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)


@pytest.mark.parametrize("command", ["create", "run"])
@pytest.mark.parametrize("annotations,env,message", [
    ({"enclave.type": "sgx"}, [], "enclave type sgx is not supported"),
    ({"enclave.type": "intelSgx"}, [], "enclave runtime path is not configured"),
    ({"enclave.type": "intelSgx", "enclave.runtime.path": "/nonexistent/liberpal-x.so"}, [], "does not exist"),
    ({}, ["ENCLAVE_TYPE=sim", "ENCLAVE_RA_TYPE=bogus"], "attestation type bogus is not supported"),
    ({"enclave.type": "AwsNitroEnclaves", "enclave.runtime.path": "/bin/busybox"}, [],
     "refusing to run the container outside an enclave"),
    ({"enclave.type": "Jailhouse", "enclave.runtime.path": "/bin/busybox"}, [],
     "refusing to run the container outside an enclave"),
])
def test_invalid_enclave_configuration_creates_nothing(
        rune_bin: str, runc_bin: str, runc_root: str, rune_state: str, tmp_path: Path,
        bundle_factory: BundleFactory, command: str, annotations: dict[str, str], env: list[str],
        message: str) -> None:
    bundle = bundle_factory(["/bin/echo", "must not run"], annotations=annotations, env=["PATH=/bin", *env])
    log = tmp_path / "log.json"
    r = rune(rune_bin, runc_root, log, command, "--bundle", bundle, "bad")
    assert r.returncode == 1
    assert "must not run" not in r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("rune: ")
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["level"] for e in entries] == ["error"] and message in entries[0]["msg"]
    listing = subprocess.run([runc_bin, "--root", runc_root, "list", "-q"], capture_output=True, text=True)
    assert listing.stdout == ""
    assert not any(Path(rune_state).rglob("record.json"))


def test_empty_enclave_type_is_stripped_and_runs_as_runc(
        rune_bin: str, runc_root: str, rune_state: str, tmp_path: Path, bundle_factory: BundleFactory) -> None:
    """Upstream quirk: ENCLAVE_TYPE with a value of <= 1 character is consumed and ignored."""
    bundle = bundle_factory(["/bin/sh", "-c", "env | sort"], env=["PATH=/bin", "ENCLAVE_TYPE=", "KEEP=1"])
    r = rune(rune_bin, runc_root, tmp_path / "log.json", "run", "--bundle", bundle, "stripped")
    assert r.returncode == 0, r.stderr
    assert "ENCLAVE_TYPE" not in r.stdout and "KEEP=1" in r.stdout
    assert json.loads((Path(bundle) / "config.json").read_text())["process"]["env"][1] == "ENCLAVE_TYPE=", \
        "the caller's bundle must not be modified"
    assert not any(Path(rune_state).rglob("record.json")), "state left behind"


def test_stripped_container_lifecycle_reports_callers_bundle(
        rune_bin: str, runc_root: str, rune_state: str, tmp_path: Path, bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory(["/bin/sleep", "30"], env=["PATH=/bin", "ENCLAVE_TYPE=x"])
    log = tmp_path / "log.json"
    with open(tmp_path / "out", "w") as out:
        r = subprocess.run([rune_bin, "--root", runc_root, "create", "--bundle", bundle, "s2"],
                           stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=30)
    assert r.returncode == 0, (tmp_path / "out").read_text()
    st = json.loads(rune(rune_bin, runc_root, log, "state", "s2").stdout)
    assert st["bundle"] == bundle and st["status"] == "created"
    assert rune(rune_bin, runc_root, log, "delete", "--force", "s2").returncode == 0
    assert not any(Path(rune_state).rglob("record.json"))
