"""Fixtures for the enclave runtime tests (see runc_harness)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .runc_harness import RUNC, Containers, Skeletons


@pytest.fixture(scope="session")
def skeletons(tmp_path_factory: pytest.TempPathFactory) -> Skeletons:
    return Skeletons(tmp_path_factory.mktemp("skeleton"))


@pytest.fixture(scope="session")
def rt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rtcache")


@pytest.fixture(scope="session")
def rt_dir(rt_cache: Path) -> str:
    from inclavare.runtime.pal.runelet_rt import ensure_runelet_rt

    return ensure_runelet_rt(str(rt_cache))


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> str:
    from inclavare.sample_images import build_busybox_rootfs, find_busybox
    from inclavare.errors import ConfigError

    try:
        find_busybox()
    except ConfigError as exc:
        pytest.skip(str(exc))
    return build_busybox_rootfs(str(tmp_path_factory.mktemp("busybox") / "rootfs"))


@pytest.fixture
def containers(tmp_path: Path, rootfs: str, rt_dir: str) -> Iterator[Containers]:
    if os.geteuid() != 0:
        pytest.skip("needs root to run runc")
    if not os.access(RUNC, os.X_OK):
        pytest.skip(f"runc not found at {RUNC} (apt-get install runc)")
    c = Containers(tmp_path, rootfs, rt_dir)
    try:
        yield c
    finally:
        c.cleanup()
