"""The host's Python inside a busybox container: bind mounts of the interpreter and its stdlib.

A bind mount is fast and exposes exactly those directories, unchanged and read-only. The rootfs
needs ``lib`` and ``lib64`` links into ``usr`` (as on the host) so the interpreter's dynamic
loader and libraries are found under the mounted library directories.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Iterable

import pytest

from inclavare.sample_images import build_busybox_rootfs

LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64")


def python_mounts(extra: Iterable[str] = ()) -> tuple[str, list[dict[str, object]]]:
    """The interpreter's real path and the OCI mounts it needs: its stdlib, platstdlib and the
    library directories, plus ``extra`` paths (site-packages, a source tree) when wanted."""
    python = os.path.realpath(sys.executable)
    paths = sysconfig.get_paths()
    wanted = [python, paths["stdlib"], paths["platstdlib"], *extra, *LIBRARY_DIRS]
    if os.path.realpath(sys.base_prefix) != "/usr":
        wanted.append(os.path.join(sys.base_prefix, "lib"))
    missing = [p for p in wanted if not os.path.exists(p)]
    if missing:
        pytest.skip(f"this host's layout does not match the bind-mount recipe: {missing[0]} is absent")
    mounts = [{"destination": p, "type": "bind", "source": p, "options": ["rbind", "ro", "nosuid", "nodev"]}
              for p in dict.fromkeys(os.path.realpath(w) for w in wanted)]
    return python, mounts


def python_ready_rootfs(dest: str) -> str:
    """A busybox rootfs in ``dest`` where the mounted host interpreter can start."""
    rootfs = build_busybox_rootfs(dest)
    for link in ("lib", "lib64"):
        os.symlink(f"usr/{link}", os.path.join(rootfs, link))
    return rootfs
