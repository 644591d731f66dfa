"""Shared fixtures: real runc, a busybox root filesystem, bundles, the installed rune launcher."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inclavare.sample_images import build_busybox_rootfs, make_bundle

REPO = Path(__file__).resolve().parent.parent


def _venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="session")
def runc_bin() -> str:
    path = shutil.which("runc") or "/usr/sbin/runc"
    if not os.access(path, os.X_OK):
        pytest.skip("runc is not installed (make setup installs it)")
    if os.geteuid() != 0:
        pytest.skip("runc containers need root")
    return path


@pytest.fixture(scope="session")
def rune_bin(runc_bin: str) -> str:
    """The launcher `make setup` installs (native when a C compiler is present)."""
    path = _venv_bin("rune")
    with open(path, "rb") as f:
        head = f.read(64)
    if not (head.startswith(b"\x7fELF") or b"-IS" in head.split(b"\n", 1)[0]):
        pytest.fail(f"{path} is not a rune launcher; run `make setup`")
    return path


@pytest.fixture(scope="session")
def launchers(tmp_path_factory: pytest.TempPathFactory, runc_bin: str) -> dict[str, str]:
    """Both rune launchers, freshly built: the native one and the Python (-I -S) one."""
    from inclavare.runtime.launcher import install_launcher

    out = tmp_path_factory.mktemp("launchers")
    built = {}
    for kind in ("native", "python"):
        path = str(out / f"rune-{kind}")
        assert install_launcher(path, runc_bin, kind) == kind
        built[kind] = path
    return built


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_busybox_rootfs(str(tmp_path_factory.mktemp("busybox") / "rootfs"))


BundleFactory = Callable[..., str]


@pytest.fixture
def bundle_factory(tmp_path: Path, busybox_rootfs: str) -> BundleFactory:
    counter = iter(range(1000))

    def make(args: list[str], **kw: object) -> str:
        kw.setdefault("rootfs", busybox_rootfs)
        return make_bundle(str(tmp_path / f"bundle{next(counter)}"), args, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture
def runc_root(tmp_path: Path, runc_bin: str) -> Iterator[str]:
    """A private runc --root; every container left in it is force-deleted afterwards."""
    root = str(tmp_path / "runc-root")
    os.makedirs(root)
    yield root
    out = subprocess.run([runc_bin, "--root", root, "list", "-q"], capture_output=True, text=True)
    for cid in out.stdout.split():
        subprocess.run([runc_bin, "--root", root, "delete", "--force", cid], capture_output=True)


@pytest.fixture
def rune_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """rune's own state directory, private to the test (INCLAVARE_RUNE_STATE)."""
    path = str(tmp_path / "rune-state")
    monkeypatch.setenv("INCLAVARE_RUNE_STATE", path)
    return path
