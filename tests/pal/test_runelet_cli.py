"""The runelet's command line outside a container: usage errors, an unreachable exec
socket, a broken configuration. Always one ``runelet:`` line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inclavare.runtime.pal.container_layout import BOOT


def runelet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", "-S", "-c",
                           f"import sys; sys.path[:0] = {sys.path!r}; {BOOT}", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args", [[], ["bogus"], ["init"], ["exec", "--socket", "/x"],
                                  ["exec", "--", "true"], ["exec", "--what", "x", "--", "y"]])
def test_usage_errors(args: list[str]) -> None:
    result = runelet(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("runelet: error:") and "usage:" in result.stderr
    assert result.stderr.count("\n") == 1


def test_exec_without_a_runelet(tmp_path: Path) -> None:
    result = runelet("exec", "--socket", str(tmp_path / "none.sock"), "--", "true")
    assert result.returncode == 255
    assert result.stderr.startswith("runelet: error: cannot reach the container's runelet at")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content, why", [
    (None, "cannot read runelet configuration"),
    (b"{", "not UTF-8 JSON"),
    (b'{"version": 1}', "runtime must be a JSON object"),
])
def test_init_with_a_broken_configuration(tmp_path: Path, content: bytes | None, why: str) -> None:
    config = tmp_path / "runelet.json"
    if content is not None:
        config.write_bytes(content)
    result = runelet("init", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith("runelet: error:") and why in result.stderr
    assert "Traceback" not in result.stderr
