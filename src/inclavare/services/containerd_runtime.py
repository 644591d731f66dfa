"""Add and remove rune's runtime handler in a containerd ``config.toml``, reversibly to the byte.

The kata-deploy pattern for containerd < 2.0, whose ``imports`` replace a plugin's whole table
(a drop-in would wipe the node's CRI settings): edit the main file in place. The entry is
appended as one delimited block, so that

* uninstall gives back exactly the bytes that were there before install (the block's first line
  records the one thing appending changed besides itself: a final newline it had to add, or that
  it created the file), even if an administrator edited other parts of the file in between;
* install is idempotent: an existing block is taken out first, so installing twice writes what
  installing once wrote, and an unchanged file is not rewritten (nor containerd restarted);
* the result is checked with a TOML parser before it is written, and a handler of the same name
  that inclavare did not write is refused rather than shadowed.

Version 2 configs (containerd 1.x) use the CRI plugin ``io.containerd.grpc.v1.cri``; version 3
(containerd 2.x) ``io.containerd.cri.v1.runtime``. Version 1 is refused: migrate it first.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any

from inclavare.errors import ConfigError

CRI_PLUGIN = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}
_BEGIN = "# >>> inclavare runtime handler {handler}: written by `inclavare node install`, " \
         "removed by `inclavare node uninstall`{flag} >>>"
_END = "# <<< inclavare runtime handler {handler} <<<"
_FLAG_NEWLINE = " [added final newline]"
_FLAG_CREATED = " [created file]"
_CREATED_HEADER = "version = 2\n"
_HANDLER = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class ContainerdConfigError(ConfigError):
    """The containerd configuration cannot take (or give back) the runtime entry."""


@dataclass(frozen=True)
class RuntimeEntry:
    """What containerd needs to run pods of a RuntimeClass through rune."""

    handler: str
    binary: str  # the rune launcher, as a path on the node
    annotations: tuple[str, ...] = ("enclave.*",)

    def __post_init__(self) -> None:
        if not _HANDLER.fullmatch(self.handler):
            raise ContainerdConfigError(f"runtime handler {self.handler!r} is not a DNS label")
        if not self.binary.startswith("/") or any(c in self.binary for c in '"\\\n'):
            raise ContainerdConfigError(f"rune launcher path must be absolute and plain: {self.binary!r}")


def _parse(text: str, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ContainerdConfigError(f"{what} is not valid TOML: {exc}") from None


def _version(doc: dict[str, Any]) -> int:
    version = doc.get("version", 1)
    if version not in CRI_PLUGIN:
        raise ContainerdConfigError(
            f"containerd config version {version} is not supported (2 or 3; for version 1 run "
            "`containerd config migrate` first)")
    return int(version)


def _runtimes(doc: dict[str, Any], version: int) -> dict[str, Any]:
    node: Any = doc.get("plugins", {}).get(CRI_PLUGIN[version], {})
    for key in ("containerd", "runtimes"):
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _block(entry: RuntimeEntry, version: int, systemd_cgroup: bool | None, flag: str) -> str:
    table = f'plugins."{CRI_PLUGIN[version]}".containerd.runtimes.{entry.handler}'
    annotations = ", ".join(f'"{a}"' for a in entry.annotations)
    lines = [
        _BEGIN.format(handler=entry.handler, flag=flag),
        f"[{table}]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"  pod_annotations = [{annotations}]",
        f"  container_annotations = [{annotations}]",
        f"  [{table}.options]",
        f'    BinaryName = "{entry.binary}"',
    ]
    if systemd_cgroup is not None:  # follow the node's runc entry, so the kubelet's cgroup driver matches
        lines.append(f"    SystemdCgroup = {'true' if systemd_cgroup else 'false'}")
    lines.append(_END.format(handler=entry.handler))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class HandlerStatus:
    """What a containerd config says about a runtime handler (read only, for `inclavare doctor`)."""

    present: bool
    binary: str | None
    annotations: tuple[str, ...]  # pod and container annotations both passed through

    @property
    def passes_enclave_annotations(self) -> bool:
        return any(a in ("enclave.*", "*") for a in self.annotations)


def handler_status(config: bytes, handler: str) -> HandlerStatus:
    """The entry for ``handler`` in a containerd config (ContainerdConfigError if unreadable)."""
    doc = _parse(_decode(config), "the containerd config")
    entry = _runtimes(doc, _version(doc)).get(handler)
    if not isinstance(entry, dict):
        return HandlerStatus(False, None, ())
    options = entry.get("options") if isinstance(entry.get("options"), dict) else {}
    binary = options.get("BinaryName") if isinstance(options.get("BinaryName"), str) else None
    pod = entry.get("pod_annotations") or []
    container = entry.get("container_annotations") or []
    both = tuple(a for a in pod if isinstance(a, str) and a in container)
    return HandlerStatus(True, binary, both)


def remove_runtime(current: bytes, handler: str) -> bytes | None:
    """The config without inclavare's block for ``handler``: the original bytes, or None when
    install created the file (delete it). Unchanged bytes when there is no block."""
    text = _decode(current)
    begin = re.compile(r"^" + re.escape(_BEGIN.format(handler=handler, flag="")[:-4])
                       + r"(?P<flag>.*) >>>\n", re.M)
    m = begin.search(text)
    if m is None:
        return current
    end_line = _END.format(handler=handler) + "\n"
    end = text.find(end_line, m.end())
    if end < 0:
        raise ContainerdConfigError(
            f"inclavare's block for runtime handler {handler} has lost its end marker; "
            "remove it by hand")
    before, after = text[:m.start()], text[end + len(end_line):]
    flag = m.group("flag")
    if flag == _FLAG_CREATED:
        if before == _CREATED_HEADER and not after:
            return None
        flag = ""  # someone added to a file we created: keep their part
    if flag == _FLAG_NEWLINE and not after and before.endswith("\n"):
        before = before[:-1]
    return (before + after).encode()


def add_runtime(original: bytes | None, entry: RuntimeEntry) -> bytes:
    """``original`` (None: no file yet) with rune's runtime entry appended as inclavare's block."""
    if original is not None:
        original = remove_runtime(original, entry.handler)  # idempotent: replace our own block
    if original is None:
        text, flag = _CREATED_HEADER, _FLAG_CREATED
    else:
        text = _decode(original)
        flag = "" if text == "" or text.endswith("\n") else _FLAG_NEWLINE
        if flag:
            text += "\n"
    doc = _parse(text, "the containerd config")
    version = _version(doc)
    disabled = doc.get("disabled_plugins", [])
    if isinstance(disabled, list) and {"cri", CRI_PLUGIN[version]} & set(disabled):
        raise ContainerdConfigError("containerd's CRI plugin is disabled (disabled_plugins); "
                                    "Kubernetes cannot use this containerd")
    runtimes = _runtimes(doc, version)
    if entry.handler in runtimes:
        raise ContainerdConfigError(
            f"the containerd config already defines runtime handler {entry.handler} (not written by "
            "inclavare); remove it or choose another handler")
    runc_options = runtimes.get("runc", {}).get("options", {}) if isinstance(runtimes.get("runc"), dict) else {}
    systemd = runc_options.get("SystemdCgroup") if isinstance(runc_options, dict) else None
    result = text + _block(entry, version, systemd if isinstance(systemd, bool) else None, flag)
    written = _runtimes(_parse(result, "the containerd config with rune's entry"), version)
    if written.get(entry.handler, {}).get("options", {}).get("BinaryName") != entry.binary:
        raise ContainerdConfigError("appending rune's entry did not define it where containerd looks "
                                    "(the file's TOML layout prevents it); add it by hand")
    return result.encode()


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ContainerdConfigError("the containerd config is not UTF-8") from None
