"""OCI bundles: read a bundle's ``config.json`` and write the private copy rune hands to runc.

rune never edits the caller's bundle. When it must change the spec (strip ``ENCLAVE_*``,
inject what the enclave needs) it writes a private bundle whose ``config.json`` refers to the
original rootfs and bind-mount sources by absolute path, so runc sees the same filesystem.
"""

from __future__ import annotations

import os

from inclavare import fastjson
from inclavare.atomic_file import write_atomic
from inclavare.errors import ConfigError
from inclavare.runtime.spec_shape import SpecShapeError, check_spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    Spec: TypeAlias = dict[str, Any]  # a parsed config.json


_CHECKED: dict[bytes, Spec] = {}  # config.json bytes -> checked spec (the agent plans the same bundles again)
_CHECKED_MAX = 32


def load_spec(bundle: str) -> Spec:
    """The bundle's parsed and shape-checked spec (:mod:`~inclavare.runtime.spec_shape`).

    Read-only: the same bytes give the same object again (a long-lived process re-checks nothing),
    so change only the copy :func:`absolutize` makes, never this one.

    Raises :class:`SpecShapeError` when config.json is malformed, plain :class:`ConfigError`
    when it cannot be read at all."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        checked = _CHECKED.get(raw)
        if checked is not None:
            return checked
        spec = fastjson.loads(raw)
    except FileNotFoundError:
        raise ConfigError(f"bundle {bundle}: config.json not found") from None
    except OSError as exc:
        raise ConfigError(f"bundle {bundle}: cannot read config.json: {exc.strerror}") from None
    except ValueError as exc:  # fastjson raises nothing else for malformed text
        raise SpecShapeError(f"bundle {bundle}: config.json is not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise SpecShapeError(f"bundle {bundle}: config.json must hold a JSON object")
    check_spec(spec)
    if len(_CHECKED) >= _CHECKED_MAX:
        del _CHECKED[next(iter(_CHECKED))]
    _CHECKED[raw] = spec
    return spec


def _copy(value: Any) -> Any:  # noqa: ANN401 - parsed JSON
    """Deep copy of parsed JSON (dicts, lists, scalars)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _is_bind(mount: dict[str, Any]) -> bool:
    options = mount.get("options") or []
    return mount.get("type") == "bind" or "bind" in options or "rbind" in options


def absolutize(spec: Spec, bundle: str) -> Spec:
    """A copy of ``spec`` whose rootfs and bind sources no longer depend on the bundle dir."""
    bundle = os.path.abspath(bundle)
    out: Spec = _copy(spec)
    root = out.get("root")
    if isinstance(root, dict) and isinstance(root.get("path"), str):
        root["path"] = os.path.normpath(os.path.join(bundle, root["path"]))
    for mount in out.get("mounts") or []:
        if isinstance(mount, dict) and _is_bind(mount):
            src = mount.get("source")
            if isinstance(src, str) and src and not os.path.isabs(src):
                mount["source"] = os.path.normpath(os.path.join(bundle, src))
    return out


def rootfs_path(spec: Spec, bundle: str) -> str:
    root = spec.get("root")
    path = root.get("path") if isinstance(root, dict) else None
    if not isinstance(path, str) or not path:
        raise ConfigError("config.json has no root.path")
    return os.path.normpath(os.path.join(os.path.abspath(bundle), path))


def write_bundle(directory: str, spec: Spec) -> str:
    """Write ``spec`` as ``directory/config.json`` (atomically); returns the directory.

    The private bundle lives under /run and dies with its container, so no fsync.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    write_atomic(os.path.join(directory, "config.json"), fastjson.dumps(spec).encode(),
                 mode=0o600, durable=False)
    return directory


def process_ids(spec: Spec) -> tuple[int, int]:
    """The container process's uid and gid (inside the container; 0 when unset)."""
    process = spec.get("process")
    user = process.get("user") if isinstance(process, dict) else None
    uid, gid = (user.get("uid", 0), user.get("gid", 0)) if isinstance(user, dict) else (0, 0)
    if not all(type(i) is int and 0 <= i < 2**32 for i in (uid, gid)):
        raise ConfigError("process.user uid/gid in config.json must be integers")
    return uid, gid


def spec_mounts(spec: Spec, reserved: str, owner: str) -> list[Any]:
    """The spec's mount list, refusing any destination at or under ``reserved`` (rune's own)."""
    mounts = spec.setdefault("mounts", [])
    if not isinstance(mounts, list):
        raise ConfigError("mounts in config.json must be a list")
    for m in mounts:
        dest = m.get("destination") if isinstance(m, dict) else None
        norm = os.path.normpath("/" + dest.lstrip("/")) if isinstance(dest, str) else ""
        if norm == reserved or norm.startswith(reserved + "/"):
            raise ConfigError(f"mount destination {dest} is reserved for {owner} ({reserved})")
    return mounts
