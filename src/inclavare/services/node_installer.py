"""Install rune on a Kubernetes node, and take it off again (the kata-deploy pattern).

Run on the node itself or, as the node DaemonSet does, in a container that sees the node's
filesystem under ``host_root``. Every path in :class:`NodeLayout` is a path *on the node*
(what containerd and rune will read); files are reached through ``host_root``.

Install, each step idempotent:

1. optionally copy this image's relocatable Python prefix (``<prefix>/python``, ``<prefix>/venv``)
   to the same path on the node, so the launcher's interpreter and packages exist there;
2. build the static in-enclave tools into the node's runelet cache (nodes need no C compiler);
3. write the rune launcher (native when a compiler is here: a static binary with the node's runc
   path baked in, so it runs whatever the node's libc);
4. add the runtime handler to containerd's config (:mod:`inclavare.services.containerd_runtime`)
   and, only if the file changed, run the restart command.

Uninstall reverses 4 byte for byte, removes the launcher and, if install copied it, the prefix;
the node's state (``/var/lib/inclavare``: the simulated TEE authority, the enclave pool) stays.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass

from inclavare.atomic_file import write_atomic
from inclavare.errors import ConfigError, RuntimeFailure
from inclavare.services.containerd_runtime import RuntimeEntry, add_runtime, remove_runtime

RUNC_CANDIDATES = ("/usr/local/sbin/runc", "/usr/local/bin/runc", "/usr/sbin/runc", "/usr/bin/runc",
                   "/sbin/runc", "/bin/runc")
PAYLOAD_PARTS = ("python", "venv")
PAYLOAD_MARKER = ".copied-by-inclavare-node-install"
RESTART_TIMEOUT_S = 180


class NodeInstallError(RuntimeFailure):
    """A node install or uninstall step failed; the message names the step."""


@dataclass(frozen=True)
class NodeLayout:
    """Where things go on the node (node paths), and where the node is seen from here."""

    host_root: str = "/"
    containerd_config: str = "/etc/containerd/config.toml"
    prefix: str = "/opt/inclavare"
    handler: str = "rune"
    runc: str | None = None  # None: the first of RUNC_CANDIDATES present on the node
    agent_socket: str = "/run/inclavare/agent.sock"
    rune_state_dir: str = "/run/inclavare/rune"
    runelet_dir: str = "/var/lib/inclavare/runelet"

    def __post_init__(self) -> None:
        for name in ("host_root", "containerd_config", "prefix", "agent_socket", "rune_state_dir",
                     "runelet_dir"):
            if not os.path.isabs(getattr(self, name)):
                raise ConfigError(f"{name.replace('_', '-')} must be an absolute path: {getattr(self, name)}")

    def here(self, node_path: str) -> str:
        """The node path as this process reaches it."""
        return os.path.join(self.host_root, node_path.lstrip("/"))

    @property
    def launcher(self) -> str:
        return os.path.join(self.prefix, "bin", self.handler)


@dataclass(frozen=True)
class Outcome:
    launcher: str
    config_changed: bool
    restarted: bool


def find_runc(layout: NodeLayout) -> str:
    if layout.runc:
        return layout.runc
    for candidate in RUNC_CANDIDATES:
        if os.access(layout.here(candidate), os.X_OK):
            return candidate
    raise NodeInstallError(f"no runc on the node (looked for {', '.join(RUNC_CANDIDATES)}); pass --runc")


def copy_payload(layout: NodeLayout) -> None:
    """Copy this interpreter's prefix to the node, at the path it runs from here."""
    base = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    for part, inside in (("python", base), ("venv", sys.prefix)):
        if not os.path.realpath(inside).startswith(os.path.join(layout.prefix, part) + os.sep) \
                and os.path.realpath(inside) != os.path.join(layout.prefix, part):
            raise NodeInstallError(
                f"--copy-payload: this interpreter ({inside}) is not under {layout.prefix}/{part}; "
                "run the installer from the project image (or drop --copy-payload)")
    target = layout.here(layout.prefix)
    os.makedirs(target, mode=0o755, exist_ok=True)
    for part in PAYLOAD_PARTS:
        dest = os.path.join(target, part)
        staging, old = dest + ".new", dest + ".old"
        for leftover in (staging, old):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.copytree(os.path.join(layout.prefix, part), staging, symlinks=True)
        if os.path.lexists(dest):
            os.rename(dest, old)  # rune processes running the old files keep them open
        os.rename(staging, dest)
        shutil.rmtree(old, ignore_errors=True)
    write_atomic(os.path.join(target, PAYLOAD_MARKER), b"", mode=0o644)


def prebuild_enclave_tools(layout: NodeLayout) -> None:
    """The static programs rune puts into simulated enclaves, where rune looks for them."""
    from inclavare.native.build import build_static
    from inclavare.runtime.pal.runelet_rt import TOOLS

    native = os.path.join(layout.here(layout.runelet_dir), "native")
    try:
        for source, _ in TOOLS:
            build_static(source, native)
    except ConfigError as exc:
        print(f"inclavare node: enclave tools not prebuilt ({exc}); rune builds them on first use",
              file=sys.stderr)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NodeInstallError(f"cannot read {path}: {exc.strerror}") from None


def _write_config(path: str, old: bytes | None, new: bytes | None) -> bool:
    if new == old:
        return False
    if new is None:
        os.unlink(path)
        return True
    mode = os.stat(path).st_mode & 0o7777 if old is not None else 0o644
    write_atomic(path, new, mode=mode)
    return True


def restart(command: str | None) -> bool:
    if not command:
        return False
    argv = shlex.split(command)
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=RESTART_TIMEOUT_S,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NodeInstallError(f"restarting containerd ({command}) failed: {exc}") from None
    if r.returncode != 0:
        raise NodeInstallError(f"restarting containerd ({command}) exited {r.returncode}: "
                               f"{(r.stderr or r.stdout).strip()[-300:]}")
    return True


def install(layout: NodeLayout, *, copy: bool = False, restart_command: str | None = None,
            kind: str = "auto") -> Outcome:
    from inclavare.runtime.launcher import install_launcher

    runc = find_runc(layout)
    entry = RuntimeEntry(layout.handler, layout.launcher)
    config = layout.here(layout.containerd_config)
    old = _read(config)
    new = add_runtime(old, entry)  # checked before anything on the node changes
    if copy:
        copy_payload(layout)
    prebuild_enclave_tools(layout)
    launcher = layout.here(layout.launcher)
    os.makedirs(os.path.dirname(launcher), mode=0o755, exist_ok=True)
    install_launcher(launcher, runc, kind, layout.agent_socket, layout.rune_state_dir,
                     runc_root=layout.host_root)
    os.makedirs(os.path.dirname(config), mode=0o755, exist_ok=True)
    changed = _write_config(config, old, new)
    return Outcome(layout.launcher, changed, changed and restart(restart_command))


def uninstall(layout: NodeLayout, *, restart_command: str | None = None) -> Outcome:
    config = layout.here(layout.containerd_config)
    old = _read(config)
    changed = old is not None and _write_config(config, old, remove_runtime(old, layout.handler))
    restarted = changed and restart(restart_command)  # containerd stops using rune before it goes
    try:
        os.unlink(layout.here(layout.launcher))
    except FileNotFoundError:
        pass
    target = layout.here(layout.prefix)
    if os.path.exists(os.path.join(target, PAYLOAD_MARKER)):
        for part in PAYLOAD_PARTS:
            shutil.rmtree(os.path.join(target, part), ignore_errors=True)
        os.unlink(os.path.join(target, PAYLOAD_MARKER))
    return Outcome(layout.launcher, changed, restarted)
