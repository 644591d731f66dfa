"""`make demo`'s job: the secret reaches the genuine container and only it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root]


def test_demo_passes_end_to_end(runc_bin: str) -> None:
    r = subprocess.run([str(Path(sys.executable).parent / "inclavare"), "demo"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "secret released" in r.stdout and "correct-horse-battery-staple" in r.stdout
    assert "refused" in r.stdout and "PolicyDeny" in r.stdout
    assert "SIMULATED TEE" in r.stdout  # the demo says on screen that it trusts the simulation
    assert r.stdout.rstrip().endswith("demo passed")
