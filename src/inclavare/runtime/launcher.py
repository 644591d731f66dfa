"""The fast ``rune`` launchers.

Container engines call the runtime four or more times per container. Two launchers exist:

* **native** (default when a C compiler is present): ``src/inclavare/native/rune.c``, compiled
  statically with the runc path and the interpreter baked in. It decides without any interpreter
  and execs runc for every call runc can take unchanged; for enclave ``create``/``run`` it asks
  the running node agent to plan the container (``POST /v1/prepare``); only the rest (attest,
  delete/state of enclave containers, ...) starts Python.
* **python**: a script run by the interpreter with ``-I -S`` (no site, no user paths; the pip
  script's ``site`` costs 4-40 ms per call) that puts exactly the package directory and the
  interpreter's site-packages on ``sys.path``.

The runc path is baked in at install time, because container engines do not pass their
environment to runtimes reliably (``INCLAVARE_RUNC`` still overrides it).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig

from inclavare.errors import ConfigError

TEMPLATE = """#!{python} -IS
# rune fast launcher, written by `inclavare install-rune`; -IS skips site (see inclavare.runtime.launcher).
import posix, sys
posix.environ.setdefault(b"INCLAVARE_AGENT_SOCKET", {agent_socket!r})
posix.environ.setdefault(b"INCLAVARE_RUNE_STATE", {state_dir!r})
sys.path.insert(0, {package_parent!r})
sys.path.extend({site_dirs!r})
from inclavare.runtime.rune_entry import main
sys.exit(main(sys.argv[1:], {runc!r}))
"""


def base_interpreter() -> str:
    """The interpreter behind a venv: skipping pyvenv.cfg processing saves start-up time, and
    the launcher puts the venv's site-packages on sys.path itself."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


DEFAULT_AGENT_SOCKET = "/run/inclavare/agent.sock"
DEFAULT_STATE_DIR = "/run/inclavare/rune"


def launcher_text(runc: str, python: str | None = None, agent_socket: str = DEFAULT_AGENT_SOCKET,
                  state_dir: str = DEFAULT_STATE_DIR) -> str:
    python = python or base_interpreter()
    package_parent, site_dirs = _python_paths()
    return TEMPLATE.format(python=python, package_parent=package_parent,
                           agent_socket=agent_socket.encode(), state_dir=state_dir.encode(),
                           site_dirs=site_dirs, runc=runc)


def resolve_runc(runc: str | None, root: str = "/") -> str:
    """The absolute runc path; ``root`` is where the node's filesystem is seen (the node installer
    runs in a container with the host mounted elsewhere, and writes the host's path)."""
    candidate = runc or shutil.which("runc") or "/usr/sbin/runc"
    if root != "/":
        if not os.path.isabs(candidate):
            raise ConfigError(f"runc must be given as an absolute path on the node: {candidate}")
        if not os.access(os.path.join(root, candidate.lstrip("/")), os.X_OK):
            raise ConfigError(f"runc at {candidate} (under {root}) is missing or not executable")
        return candidate
    if not os.path.isabs(candidate):
        found = shutil.which(candidate)
        if not found:
            raise ConfigError(f"runc not found: {candidate}")
        candidate = found
    if not os.access(candidate, os.X_OK):
        raise ConfigError(f"runc at {candidate} is missing or not executable (install runc or pass --runc)")
    return candidate


def _python_paths() -> tuple[str, list[str]]:
    import inclavare

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(inclavare.__file__)))
    paths = sysconfig.get_paths()
    site_dirs = [d for d in dict.fromkeys((paths["purelib"], paths["platlib"])) if d != package_parent]
    return package_parent, site_dirs


def slow_path_code(runc: str) -> str:
    """What the native launcher runs as ``python -I -S -c CODE ARGS``."""
    package_parent, site_dirs = _python_paths()
    return (f"import sys;sys.path.insert(0,{package_parent!r});sys.path.extend({site_dirs!r});"
            f"from inclavare.runtime.rune_entry import main;sys.exit(main(sys.argv[1:],{runc!r}))")


def build_native(output: str, runc: str, agent_socket: str = DEFAULT_AGENT_SOCKET,
                 state_dir: str = DEFAULT_STATE_DIR) -> str:
    """Compile the native launcher to ``output``; ConfigError when it cannot be built."""
    import shutil
    import subprocess

    from inclavare.native.build import source_text

    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise ConfigError("no C compiler for the native rune launcher (apt-get install gcc libc6-dev)")
    constants = {"RUNE_RUNC": runc, "RUNE_PYTHON": base_interpreter(), "RUNE_PYCODE": slow_path_code(runc),
                 "RUNE_AGENT_SOCKET": agent_socket, "RUNE_STATE_DIR": state_dir}
    for name, value in constants.items():
        if any(c in value for c in '"\\\n'):
            raise ConfigError(f"cannot embed {name} in the native launcher: {value!r}")
    src = output + ".tmp.c"
    tmp = output + ".tmp"
    with open(src, "wb") as f:
        f.write(source_text("rune.c"))
    try:
        cmd = [cc, "-O2", "-static", "-Wall", "-o", tmp, src,
               *(f'-D{name}="{value}"' for name, value in constants.items())]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise ConfigError(f"building the native rune launcher failed: {r.stderr.strip()[-400:]}")
    finally:
        os.unlink(src)
    os.chmod(tmp, 0o755)
    os.replace(tmp, output)
    return output


def install_launcher(output: str, runc: str | None = None, kind: str = "auto",
                     agent_socket: str | None = None, state_dir: str | None = None,
                     runc_root: str = "/") -> str:
    """Write the launcher; ``kind`` is "native", "python" or "auto" (native if it builds).
    ``agent_socket``/``state_dir`` become the launcher's defaults for INCLAVARE_AGENT_SOCKET and
    INCLAVARE_RUNE_STATE; ``runc`` is checked under ``runc_root``. Returns the kind written."""
    runc = resolve_runc(runc, runc_root)
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise ConfigError(f"cannot write the launcher to {output}: directory {directory} does not exist")
    if os.path.isdir(output):
        raise ConfigError(f"cannot write the launcher to {output}: it is a directory (give the file's path)")
    agent_socket = os.path.abspath(agent_socket or DEFAULT_AGENT_SOCKET)
    state_dir = os.path.abspath(state_dir or DEFAULT_STATE_DIR)
    if kind in ("native", "auto"):
        try:
            build_native(output, runc, agent_socket, state_dir)
            return "native"
        except ConfigError:
            if kind == "native":
                raise
    text = launcher_text(runc, agent_socket=agent_socket, state_dir=state_dir)
    if len(text.splitlines()[0]) > 250:
        raise ConfigError(f"interpreter path too long for a #! line: {base_interpreter()}")
    tmp = output + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, output)
    return "python"
