"""The enclave-side runtime folder: what runs inside a simulated enclave container besides the
workload, and the launch planner rune calls.

The folder is a curated, read-only slice of the host that lets the host's Python run inside an
enclave container whatever the image holds (busybox is enough) — as the runelet (pid 1 of
containers with a PAL enclave runtime) and as the enclave agent (started on demand in simulated
enclaves)::

    ld.so                  the host's dynamic loader (the interpreter's PT_INTERP)
    bin/python             the host interpreter
    lib/<soname>           exactly the shared libraries the interpreter, the extension
                           modules imported inside (ctypes -> libffi, ssl -> libssl,
                           cryptography's bindings, ...) and the configured PAL libraries need,
                           as the host loader resolves them
    lib/pythonX.Y/         the stdlib modules the runelet and the enclave agent import (found
                           by importing them in a clean interpreter), the whole ``encodings``
                           package (codecs are looked up by name at run time), their byte code,
                           this package's enclave-side modules, and the few third-party
                           packages the enclave agent needs (ENCLAVE_PACKAGES)
    tools/enclave-init     static: the first program of a simulated enclave container
    tools/attest           static: the in-container client of the enclave agent
    MANIFEST.json          every file with its host source and SHA-256

Nothing else of the host is exposed: no other site-packages, no other libraries, no tests, tk,
idle or ensurepip. Folders are keyed by the content of all of that (an interpreter, libc or
inclavare upgrade yields a new folder), built in a temporary directory, checked by starting
the interpreter from the folder alone, then renamed into place; concurrent builders
serialise on a lock. A stat index makes the common "nothing changed" case a few stat calls.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import py_compile
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import inclavare
from inclavare.atomic_file import locked, write_atomic
from inclavare.errors import NotSupportedError, RuntimeFailure
from inclavare.runtime.pal import container_layout as layout
from inclavare.runtime.pal.elf_info import ElfError, read_elf
from inclavare.services.enclave_layout import TOOLS_DIR_NAME

LAYOUT_VERSION = 2
# The modules imported inside the container: the runelet's two modes, every built-in Python
# runtime, and the enclave agent with its key broker client.
RUNELET_MODULES = (
    "inclavare.runtime.pal.runelet",
    "inclavare.runtime.pal.runelet_init",
    "inclavare.runtime.pal.runelet_exec",
    "inclavare.runtime.pal.sim",
    "inclavare.runtime.pal.occlum",
    "inclavare.runtime.pal.gramine",
    "inclavare.services.enclave_agent.main",
    "inclavare.services.enclave_agent.agent",
    "inclavare.services.kbs_client",
    "inclavare.secrets.sealed",
    "inclavare.secrets.identity_sealed",
    "inclavare.services.enclave_agent.image_step",  # guest pull (enclave.image)
    "inclavare.images.guest_pull",
    "inclavare.tee.tsm",  # configfs-tsm inside sim TDX/SNP containers, as on a guest
    "zlib",  # tar+gzip layers: tarfile imports it only when it meets one
    "cryptography.hazmat.backends.openssl",  # imported lazily by the sealed-secret crypto (key wrap, ECDSA)
    "inclavare.services.http_transport",
    "ssl",  # an https key broker (imported only then)
    "encodings.idna",  # TLS server names: pulls in stringprep and unicodedata
)
# Third-party top-level modules allowed from site-packages (the enclave agent's crypto,
# canonical JSON and HTTP parser); anything else imported from site-packages is an error.
ENCLAVE_PACKAGES = frozenset({"cryptography", "_cffi_backend", "cffi", "rfc8785", "h11"})
# Static programs placed in tools/: (source name under inclavare/native, file name).
TOOLS = (("enclave_init", "enclave-init"), ("attest", "attest"))
RECHECK_SECONDS = 5.0
_RECENT: dict[tuple[str, ...], tuple[str, float]] = {}  # memo of ensure_runelet_rt
_PROBE = """
import importlib, json, sys
sys.path.insert(0, {parent!r})
sys.path.extend({site!r})
for name in {modules!r}:
    importlib.import_module(name)
print(json.dumps({{n: m.__file__ for n, m in list(sys.modules.items())
                  if isinstance(getattr(m, "__file__", None), str)}}))
"""


class RuntimeFolderError(RuntimeFailure):
    """The runelet runtime folder cannot be built from this host."""


@dataclass(frozen=True)
class RtFile:
    dest: str    # path relative to the folder
    source: str  # host path
    executable: bool = False


@functools.cache
def _python() -> str:
    return os.path.realpath(sys.executable)  # fixed for this process; asked on every create


def _package_parent() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(inclavare.__file__)))


def _site_dirs() -> list[str]:
    """Where the allowed third-party packages are installed: this interpreter's site-packages
    and those on ``sys.path`` (rune's launcher runs the base interpreter with the venv's
    site-packages added to ``sys.path``; sysconfig knows only the base's)."""
    paths = sysconfig.get_paths()
    dirs = [paths["purelib"], paths["platlib"],
            *(p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages"))]
    return list(dict.fromkeys(os.path.realpath(d) for d in dirs))


def _stdlib_version_dir() -> str:
    return f"lib/python{sys.version_info.major}.{sys.version_info.minor}"


def _clean_env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


def _probe_modules() -> dict[str, str]:
    script = _PROBE.format(parent=_package_parent(), site=_site_dirs(), modules=RUNELET_MODULES)
    proc = subprocess.run([_python(), "-I", "-S", "-c", script], capture_output=True,
                          env=_clean_env(), timeout=60)
    if proc.returncode != 0:
        raise RuntimeFolderError("importing the runelet modules failed: "
                                 + proc.stderr.decode(errors="replace").strip()[-500:])
    result: dict[str, str] = json.loads(proc.stdout)
    return result


def _python_files() -> list[RtFile]:
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    platstdlib = os.path.realpath(sysconfig.get_paths()["platstdlib"])
    package_parent = os.path.realpath(_package_parent())
    pyver = _stdlib_version_dir()
    site_dirs = _site_dirs()
    files: dict[str, RtFile] = {}
    for name, path in sorted(_probe_modules().items()):
        real = os.path.realpath(path)
        top = name.split(".", 1)[0]
        roots = [package_parent] if top == "inclavare" else [*site_dirs, platstdlib, stdlib]
        root = next((r for r in roots if real.startswith(r + os.sep)), None)
        if root is None:
            raise NotSupportedError(
                f"the enclave side imports {name} from {path}, outside the standard library, "
                "this package and the allowed third-party packages")
        if root in site_dirs and top not in ENCLAVE_PACKAGES:
            raise NotSupportedError(
                f"the enclave side imports {name} from site-packages ({path}); only "
                f"{', '.join(sorted(ENCLAVE_PACKAGES))} may come from there")
        rel = os.path.relpath(real, root)
        files[rel] = RtFile(f"{pyver}/{rel}", real)
    encodings = os.path.join(stdlib, "encodings")
    for entry in sorted(os.listdir(encodings)):
        if entry.endswith(".py"):
            rel = f"encodings/{entry}"
            files.setdefault(rel, RtFile(f"{pyver}/{rel}", os.path.join(encodings, entry)))
    return list(files.values())


def _resolve_libraries(loader: str, objects: Sequence[str]) -> dict[str, str]:
    """soname -> host path for everything ``objects`` need, as the host loader resolves it."""
    found: dict[str, str] = {}
    for obj in objects:
        proc = subprocess.run([loader, "--list", obj], capture_output=True, env=_clean_env(),
                              timeout=60)
        if proc.returncode != 0:
            raise RuntimeFolderError(f"the dynamic loader cannot resolve {obj}: "
                                     + proc.stderr.decode(errors="replace").strip()[-300:])
        for line in proc.stdout.decode(errors="replace").splitlines():
            name, arrow, rest = line.strip().partition(" => ")
            if not arrow:
                continue
            target = rest.rsplit(" (", 1)[0].strip()
            if target == "not found" or not target.startswith("/"):
                raise RuntimeFolderError(f"{obj} needs {name}, which the host cannot find")
            found.setdefault(name, os.path.realpath(target))
    return found


def build_tools(native_dir: str) -> list[RtFile]:
    """The static programs of tools/, compiled with the host's C compiler (cached by source)."""
    from inclavare.native.build import build_static

    return [RtFile(f"{TOOLS_DIR_NAME}/{dest}", build_static(source, native_dir), True) for source, dest in TOOLS]


def _tools_digest() -> str:
    from inclavare.native.build import source_text

    return hashlib.sha256(b"".join(source_text(f"{source}.c") for source, _ in TOOLS)).hexdigest()


def collect_sources(pal_libraries: Sequence[str] = (), native_dir: str | None = None) -> list[RtFile]:
    """Every file of the folder, with where on the host it comes from (tools/ only with a
    ``native_dir`` to build them in)."""
    python = _python()
    try:
        interp = read_elf(python).interpreter
    except ElfError as exc:
        raise RuntimeFolderError(f"cannot read the interpreter binary: {exc}") from None
    if not interp:
        raise RuntimeFolderError(f"{python} is not dynamically linked; the runelet needs a "
                                 "dynamically linked interpreter")
    loader = os.path.realpath(interp)
    py_files = _python_files()
    extensions = [f.source for f in py_files if f.source.endswith(".so")]
    libs = _resolve_libraries(loader, [python, *extensions, *pal_libraries])
    files = [RtFile("ld.so", loader, True), RtFile("bin/python", python, True)]
    files += [RtFile(f"lib/{name}", path) for name, path in sorted(libs.items())
              if os.path.realpath(path) != loader]
    files += py_files
    if native_dir is not None:
        files += build_tools(native_dir)
    return sorted(files, key=lambda f: f.dest)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stat_key(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


def _fingerprint(pal_libraries: Sequence[str]) -> str:
    key = [LAYOUT_VERSION, _python(), sys.version, _package_parent(), _tools_digest(),
           sorted(os.path.realpath(p) for p in pal_libraries)]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:24]


def _from_index(cache_dir: str, fingerprint: str) -> str | None:
    try:
        with open(os.path.join(cache_dir, f"index-{fingerprint}.json"), "rb") as f:
            index = json.load(f)
        for path, key in index["sources"]:
            if _stat_key(path) != key:
                return None
        folder = os.path.join(cache_dir, index["rt"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder if os.path.isfile(os.path.join(folder, "MANIFEST.json")) else None


def _populate(tmp: str, files: Sequence[RtFile], digests: dict[str, str]) -> None:
    for f in files:
        dest = os.path.join(tmp, f.dest)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(f.source, dest)
        os.chmod(dest, 0o555 if f.executable else 0o444)
        if dest.endswith(".py"):
            py_compile.compile(dest, cfile=_cache_path(dest), dfile=f.dest, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    manifest = {"layout": LAYOUT_VERSION, "python": sys.version,
                "files": [{"path": f.dest, "source": f.source, "sha256": digests[f.dest]}
                          for f in files]}
    write_atomic(os.path.join(tmp, "MANIFEST.json"), json.dumps(manifest, indent=1).encode(), 0o444)
    for top, dirs, names in os.walk(tmp):
        for name in names:
            if name.endswith(".pyc"):
                os.chmod(os.path.join(top, name), 0o444)
    for top, dirs, _ in os.walk(tmp, topdown=False):
        for d in dirs:
            os.chmod(os.path.join(top, d), 0o555)
    os.chmod(tmp, 0o555)


def _cache_path(source: str) -> str:
    import importlib.util

    return importlib.util.cache_from_source(source)


def _smoke_test(folder: str) -> None:
    """Start the interpreter from the folder alone and import the runelet."""
    imports = "; ".join(f"import {m}" for m in RUNELET_MODULES)
    cmd = [os.path.join(folder, "ld.so"), "--library-path", os.path.join(folder, "lib"),
           os.path.join(folder, "bin/python"), *layout.INTERPRETER_ARGS[:-2], "-c",
           f"import sys; {imports}; assert all(p.startswith({folder!r}) for p in sys.path if p)"]
    proc = subprocess.run(cmd, capture_output=True, env={}, timeout=60, cwd=folder)
    if proc.returncode != 0:
        raise RuntimeFolderError("the runelet runtime folder does not work on its own: "
                                 + proc.stderr.decode(errors="replace").strip()[-500:])


def _remove_tree(path: str) -> None:
    for top, dirs, _ in os.walk(path):
        for d in dirs:
            try:
                os.chmod(os.path.join(top, d), 0o700)
            except OSError:
                pass
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    shutil.rmtree(path, ignore_errors=True)


def ensure_runelet_rt(cache_dir: str, *, pal_libraries: Sequence[str] = ()) -> str:
    """The runtime folder for this host (and these PAL libraries), built if needed.

    Returns its absolute path, ``<cache_dir>/rt-<content digest>``. Idempotent and safe
    against concurrent callers.
    """
    cache_dir = os.path.abspath(cache_dir)
    pal_libraries = [os.path.abspath(p) for p in pal_libraries]
    memo_key = (cache_dir, _package_parent(), _python(), *pal_libraries)
    recent = _RECENT.get(memo_key)
    if recent is not None and time.monotonic() - recent[1] < RECHECK_SECONDS and os.path.isdir(recent[0]):
        return recent[0]  # a long-lived caller (the node agent) re-validates every few seconds
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    fingerprint = _fingerprint(pal_libraries)
    folder = _from_index(cache_dir, fingerprint)
    if folder:
        _RECENT[memo_key] = (folder, time.monotonic())
        return folder
    with locked(os.path.join(cache_dir, ".lock")):
        folder = _from_index(cache_dir, fingerprint)
        if folder:
            return folder
        files = collect_sources(pal_libraries, native_dir=os.path.join(cache_dir, "native"))
        digests = {f.dest: _sha256(f.source) for f in files}
        content = hashlib.sha256(json.dumps(
            [LAYOUT_VERSION, sys.version, [[f.dest, f.executable, digests[f.dest]] for f in files]]
        ).encode()).hexdigest()
        folder = os.path.join(cache_dir, f"rt-{content[:32]}")
        if not os.path.isfile(os.path.join(folder, "MANIFEST.json")):
            tmp = tempfile.mkdtemp(prefix=".build-", dir=cache_dir)
            try:
                _populate(tmp, files, digests)
                _smoke_test(tmp)
                if os.path.exists(folder):
                    _remove_tree(folder)  # an interrupted older build without its manifest
                os.rename(tmp, folder)
            except BaseException:
                _remove_tree(tmp)
                raise
        sources = sorted({f.source for f in files} | {_python()})
        index = {"rt": os.path.basename(folder),
                 "sources": [[p, _stat_key(p)] for p in sources]}
        write_atomic(os.path.join(cache_dir, f"index-{fingerprint}.json"),
                     json.dumps(index).encode(), 0o600)
    _RECENT[memo_key] = (folder, time.monotonic())
    return folder


# The launch planner lives in its own module; rune imports it from here.
from inclavare.runtime.pal.runelet_launch import plan_runelet_launch, runelet_exec_args  # noqa: E402

__all__ = ["RtFile", "RuntimeFolderError", "collect_sources", "ensure_runelet_rt",
           "plan_runelet_launch", "runelet_exec_args"]
