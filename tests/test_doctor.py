"""`inclavare doctor` against real components: a containerd config with and without rune's entry,
node agents (one, then two), a key broker, a port that is not one, and collateral fresh and
expired. Each finding must say pass/warn/fail as the situation is, with a fix when it is not a pass."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from inclavare.services.containerd_runtime import RuntimeEntry, add_runtime
from inclavare.tee.sim_authority import SimAuthority
from tests.kbs.kbs_harness import KbsProcess, config_text, write_admin_keys
from tests.support.agent import AgentProcess
from tests.testdata_paths import vector

INCLAVARE = str(Path(sys.executable).parent / "inclavare")


def doctor(*args: str) -> tuple[int, dict[str, Any], str]:
    as_json = subprocess.run([INCLAVARE, "doctor", "--json", *args], capture_output=True, text=True, timeout=60)
    text = subprocess.run([INCLAVARE, "doctor", *args], capture_output=True, text=True, timeout=60)
    assert as_json.returncode == text.returncode, (as_json.stderr, text.stderr)
    return as_json.returncode, json.loads(as_json.stdout), text.stdout


def finding(report: dict[str, Any], check: str, index: int = 0) -> dict[str, str]:
    found = [c for c in report["checks"] if c["check"] == check]
    assert len(found) > index, report
    return found[index]


def test_doctor_on_a_node(tmp_path: Path, rune_bin: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text("version = 2\n")
    (tmp_path / "a").mkdir()
    agent = AgentProcess(tmp_path / "a").start()
    try:
        code, report, text = doctor("--containerd-config", str(config), "--rune", rune_bin,
                                    "--agent-socket", agent.socket)
        assert code == 1 and report["ok"] is False  # no runtime entry yet
        missing = finding(report, "containerd")
        assert missing["status"] == "fail" and "no runtime handler 'rune'" in missing["detail"]
        assert "inclavare node install" in missing["fix"]
        assert f"FAIL  containerd: {missing['detail']}" in text and f"fix: {missing['fix']}" in text
        assert finding(report, "runc")["status"] == "pass" and finding(report, "rune launcher")["status"] == "pass"
        assert finding(report, "node agent")["status"] == "pass"
        assert "SIMULATED" in finding(report, "TEE")["detail"]  # no TEE hardware on this machine

        config.write_bytes(add_runtime(config.read_bytes(), RuntimeEntry("rune", rune_bin)))
        code, report, _ = doctor("--containerd-config", str(config), "--rune", rune_bin, "--agent-socket", agent.socket)
        assert finding(report, "containerd")["status"] == "pass" and code == 0 and report["ok"] is True

        (tmp_path / "b").mkdir()
        second = AgentProcess(tmp_path / "b").start()  # another agent, on another socket
        try:
            _, report, _ = doctor("--containerd-config", str(config), "--rune", rune_bin,
                                  "--agent-socket", agent.socket)
            twice = [c for c in report["checks"] if c["check"] == "node agent" and c["status"] == "warn"]
            assert twice and "`inclavare agent serve` processes" in twice[0]["detail"], report
        finally:
            second.stop()
    finally:
        agent.stop()
    code, report, _ = doctor("--containerd-config", str(config), "--rune", rune_bin, "--agent-socket", agent.socket)
    assert code == 1 and finding(report, "node agent")["status"] == "fail"


def test_doctor_for_a_client(tmp_path: Path) -> None:
    kbs = KbsProcess(str(tmp_path), config_text("sqlite:///kbs.db"), write_admin_keys(str(tmp_path))).start()
    sim = SimAuthority.load_or_create(str(tmp_path / "sim"))
    sim.export(str(tmp_path / "trust"))
    common = ("--containerd-config", str(tmp_path / "none.toml"), "--agent-socket", str(tmp_path / "none.sock"))
    try:
        _, report, _ = doctor(*common, "--kbs-url", kbs.url, "--collateral", str(tmp_path / "trust" / "collateral.json"))
        assert finding(report, "key broker")["status"] == "pass"
        fresh = finding(report, "collateral")
        assert fresh["status"] == "pass" and "next update due in" in fresh["detail"]
    finally:
        kbs.stop()
    with socket.socket() as idle:  # a port that accepts nothing after the broker is gone
        idle.bind(("127.0.0.1", 0))
        port = idle.getsockname()[1]
    _, report, _ = doctor(*common, "--kbs-url", f"http://127.0.0.1:{port}",
                          "--collateral", str(vector("dcap", "sgx_quote_collateral.json")))
    unreachable = finding(report, "key broker")
    assert unreachable["status"] == "fail" and "not reachable" in unreachable["detail"] and unreachable["fix"]
    expired = finding(report, "collateral")  # Intel's real collateral of 2025: long past its next update
    assert expired["status"] == "fail" and "due in -" in expired["detail"] and expired["fix"]
