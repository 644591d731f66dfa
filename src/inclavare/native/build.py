"""Compile the project's small C programs with the host's C compiler, cached by source digest."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib import resources

from inclavare.errors import ConfigError


def source_text(name: str) -> bytes:
    return resources.files("inclavare.native").joinpath(name).read_bytes()


def build_static(name: str, cache_dir: str) -> str:
    """Build ``<name>.c`` as a static executable in ``cache_dir`` (reused while the source is unchanged)."""
    src = source_text(name + ".c")
    digest = hashlib.sha256(src).hexdigest()[:16]
    out = os.path.join(cache_dir, f"{name}-{digest}")
    if os.access(out, os.X_OK):
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise ConfigError(f"cannot build the {name} client: no C compiler (apt-get install gcc libc6-dev)")
    os.makedirs(cache_dir, mode=0o755, exist_ok=True)
    src_path = os.path.join(cache_dir, f"{name}-{digest}.c")
    with open(src_path, "wb") as f:
        f.write(src)
    tmp = out + f".tmp{os.getpid()}"
    r = subprocess.run([cc, "-static", "-Os", "-s", "-o", tmp, src_path], capture_output=True, text=True)
    if r.returncode != 0:
        raise ConfigError(f"building {name} failed ({cc}): {r.stderr.strip()[-500:]}"
                          " (static linking needs libc6-dev)")
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    return out
