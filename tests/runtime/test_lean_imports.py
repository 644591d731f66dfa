"""rune's paths import no heavy standard modules (each costs milliseconds per container start)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")
HEAVY = {"dataclasses", "typing", "subprocess", "json", "re", "socket", "enum", "hashlib", "inspect",
         "signal", "urllib", "shutil", "copy", "http", "email", "logging", "threading", "contextlib",
         "collections", "functools"}


def imported_by(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-I", "-S", "-c",
                          f"import sys; sys.path.insert(0, {SRC!r}); before = set(sys.modules)\n{code}\n"
                          "print(' '.join(sorted(set(sys.modules) - before)))"],
                         capture_output=True, text=True, check=True).stdout.split()
    return {m.split(".")[0] for m in out}


@pytest.mark.parametrize("what,code", [
    ("fast path", "import inclavare.runtime.rune_entry"),
    ("enclave create path", "import inclavare.runtime.rune_cli, inclavare.runtime.enclave_create, "
                            "inclavare.runtime.enclave_prepare, inclavare.runtime.enclave_commands, "
                            "inclavare.runtime.container_commands, "
                            "inclavare.tee.measurement, inclavare.tee.epm, inclavare.services.agent.client"),
])
def test_no_heavy_modules(what: str, code: str) -> None:
    assert imported_by(code) & HEAVY == set()


def test_fast_path_imports_only_builtins() -> None:
    assert imported_by("import inclavare.runtime.rune_entry") <= {"inclavare"}
