"""The native and the Python rune launchers make the same decision for every call.

INCLAVARE_RUNE_EXPLAIN makes a launcher print its decision instead of acting: "runc" (exec runc
unchanged), "rune" (rune's Python slow path) or, native only, "prepare" (ask the node agent to
plan an enclave container; the Python path plans it itself, so it says "rune").
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BundleFactory

pytestmark = pytest.mark.root


def decide(launcher: str, argv: list[str], env: dict[str, str], cwd: str) -> str:
    r = subprocess.run([launcher, *argv], capture_output=True, text=True, cwd=cwd,
                       env={**os.environ, **env, "INCLAVARE_RUNE_EXPLAIN": "1"}, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_native_and_python_launchers_agree(launchers: dict[str, str], bundle_factory: BundleFactory,
                                           tmp_path: Path) -> None:
    plain = bundle_factory(["/bin/true"])
    enclave = bundle_factory(["/bin/true"], annotations={"enclave.type": "sim"})
    env_only = bundle_factory(["/bin/true"], env=["PATH=/bin", "ENCLAVE_TYPE="])
    state = tmp_path / "state"
    root = tmp_path / "root"
    env = {"INCLAVARE_RUNE_STATE": str(state), "INCLAVARE_AGENT_SOCKET": str(tmp_path / "no-agent.sock")}
    # rune holds state for "enc" (a direct-launch enclave) and "pal" (runs through a runelet)
    for cid, runelet in (("enc", False), ("pal", True)):
        d = state / str(root).lstrip("/") / cid
        d.mkdir(parents=True)
        (d / "record.json").write_text(json.dumps({"id": cid}))
        if runelet:
            (d / "runelet").write_text("")
    globals_variants = [[], ["--root", str(root)], [f"--root={root}", "--log", "x.log", "--log-format=json"],
                        ["--debug", "-root", str(root)]]
    commands = [
        ["create", "--bundle", plain, "c1"], ["create", "-b", enclave, "c1"], ["run", f"--bundle={env_only}", "c1"],
        ["run", "-d", "--pid-file", "p", "--bundle", enclave, "c1"], ["create", "c1"],
        ["run", "--console-socket", "/s", "-b", plain, "c1"],
        ["start", "enc"], ["kill", "enc", "9"], ["kill", "--all", "pal", "KILL"], ["exec", "enc", "true"],
        ["exec", "pal", "true"], ["exec", "-e", "A=1", "--cwd", "/", "pal", "true"], ["exec", "-p", "x.json", "pal"],
        ["exec", "--tty", "pal", "sh"], ["delete", "enc"], ["delete", "--force", "pal"], ["delete", "other"],
        ["state", "enc"], ["state", "other"], ["state", "../enc"], ["list"], ["list", "-f", "json"], ["ps", "enc"],
        ["pause", "enc"], ["resume", "enc"], ["update", "--memory", "1", "enc"], ["events", "--stats", "enc"],
        ["spec"], ["features"], ["attest", "enc"], ["attest", "--runtime-data", "x", "enc"], ["--version"], ["-v"],
        ["--help"], ["-h"], ["attest", "--help"],
        ["nosuch"], [], ["checkpoint", "--image-path", "x", "enc"],
    ]
    cwd = str(tmp_path)
    mismatches = []
    for globals_, command in itertools.product(globals_variants, commands):
        argv = [*globals_, *command]
        native = decide(launchers["native"], argv, env, cwd)
        python = decide(launchers["python"], argv, env, cwd)
        if {"prepare": "rune"}.get(native, native) != python:
            mismatches.append((argv, native, python))
    assert mismatches == []
    # and the decisions are the intended ones
    assert decide(launchers["native"], ["create", "-b", enclave, "c1"], env, cwd) == "prepare"
    assert decide(launchers["native"], ["create", "-b", plain, "c1"], env, cwd) == "runc"
    assert decide(launchers["native"], ["--root", str(root), "exec", "pal", "true"], env, cwd) == "rune"
    assert decide(launchers["native"], ["--root", str(root), "exec", "enc", "true"], env, cwd) == "runc"
    assert decide(launchers["native"], ["--root", str(root), "delete", "enc"], env, cwd) == "rune"


@pytest.mark.parametrize("kind", ["native", "python"])
def test_each_launcher_runs_containers_like_runc(launchers: dict[str, str], bundle_factory: BundleFactory,
                                                runc_root: str, kind: str) -> None:
    bundle = bundle_factory(["/bin/sh", "-c", "echo hi; exit 3"])
    r = subprocess.run([launchers[kind], "--root", runc_root, "run", "--bundle", bundle, f"l-{kind}"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (3, "hi\n", "")


def test_native_launcher_reports_a_missing_runc(launchers: dict[str, str], bundle_factory: BundleFactory,
                                                tmp_path: Path) -> None:
    for kind in ("native", "python"):
        log = tmp_path / f"{kind}.json"
        r = subprocess.run([launchers[kind], "--log", str(log), "--log-format", "json", "list"],
                           capture_output=True, text=True, env={**os.environ, "INCLAVARE_RUNC": "/nonexistent/runc"})
        assert r.returncode == 1 and "cannot execute runc at /nonexistent/runc" in r.stderr, kind
        entry = json.loads(log.read_text().splitlines()[-1])
        assert entry["level"] == "error" and "/nonexistent/runc" in entry["msg"], kind


def test_help_says_what_rune_adds(launchers: dict[str, str], tmp_path: Path) -> None:
    """`rune --help` is runc's help plus rune's own section; `rune attest --help` is a usage, exit 0;
    an attest for a container that is not in --root says where containerd keeps its containers."""
    for kind, launcher in launchers.items():
        top = subprocess.run([launcher, "--help"], capture_output=True, text=True, timeout=30)
        assert top.returncode == 0 and "runc - Open Container Initiative runtime" in top.stdout, kind
        assert "RUNE COMMANDS:" in top.stdout and "attest" in top.stdout.split("RUNE COMMANDS:")[1], kind
        usage = subprocess.run([launcher, "attest", "--help"], capture_output=True, text=True, timeout=30)
        assert usage.returncode == 0 and usage.stdout.startswith("Usage: rune [global options] attest"), kind
        missing = subprocess.run([launcher, "--root", str(tmp_path), "attest", "nosuch"], capture_output=True,
                                 text=True, timeout=30)
        assert missing.returncode == 1 and "does not exist in" in missing.stderr, kind
        assert "/run/containerd/runc/NAMESPACE" in missing.stderr and len(missing.stderr.splitlines()) == 1, kind
