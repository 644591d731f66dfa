"""Stopping the real processes tests start (agents, registries, swtpm, plugins)."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float) -> bool:
    """SIGTERM, then SIGKILL after ``grace`` seconds; True when it ended within the grace."""
    proc.terminate()
    try:
        proc.wait(grace)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False
