"""The fast ``rune`` launcher.

The script pip generates starts the interpreter with ``site``, which costs 4-40 ms on every
runtime call (a container lifecycle makes four or more). The launcher written here runs the
interpreter with ``-I -S`` (no site, no user paths) and puts exactly the two directories rune
needs on ``sys.path``: the one holding the ``inclavare`` package and the interpreter's
site-packages (for the slow path's dependencies). The runc path is baked in at install time,
because container engines do not pass their environment to runtimes reliably.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig

from inclavare.errors import ConfigError

TEMPLATE = """#!{python} -IS
# rune fast launcher, written by `inclavare install-rune`; -IS skips site (see inclavare.runtime.launcher).
import sys
sys.path.insert(0, {package_parent!r})
sys.path.extend({site_dirs!r})
from inclavare.runtime.rune_entry import main
sys.exit(main(sys.argv[1:], {runc!r}))
"""


def base_interpreter() -> str:
    """The interpreter behind a venv: skipping pyvenv.cfg processing saves start-up time, and
    the launcher puts the venv's site-packages on sys.path itself."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def launcher_text(runc: str, python: str | None = None) -> str:
    import inclavare

    python = python or base_interpreter()
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(inclavare.__file__)))
    paths = sysconfig.get_paths()
    site_dirs = []
    for key in ("purelib", "platlib"):
        d = paths[key]
        if d not in site_dirs and d != package_parent:
            site_dirs.append(d)
    return TEMPLATE.format(python=python, package_parent=package_parent,
                           site_dirs=site_dirs, runc=runc)


def resolve_runc(runc: str | None) -> str:
    candidate = runc or shutil.which("runc") or "/usr/sbin/runc"
    if not os.path.isabs(candidate):
        found = shutil.which(candidate)
        if not found:
            raise ConfigError(f"runc not found: {candidate}")
        candidate = found
    if not os.access(candidate, os.X_OK):
        raise ConfigError(f"runc at {candidate} is missing or not executable (install runc or pass --runc)")
    return candidate


def install_launcher(output: str, runc: str | None = None) -> str:
    text = launcher_text(resolve_runc(runc))
    if len(text.splitlines()[0]) > 250:
        raise ConfigError(f"interpreter path too long for a #! line: {base_interpreter()}")
    tmp = output + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, output)
    return output
