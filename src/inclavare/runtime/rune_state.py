"""What rune remembers about the containers it changed: one directory per container.

Layout: ``<state base><runc root>/<id>/record.json`` plus ``bundle/`` (the private bundle) and,
when rune's native launcher started runc before the agent answered, ``early/`` (runc's view of it).
The directory's existence is the fast path's test for "rune must handle this container"; a
``runelet`` marker file inside says ``exec`` must be rewritten too.
"""

from __future__ import annotations

import os
import time

from inclavare import fastjson
from inclavare.atomic_file import write_atomic
from inclavare.runtime.host_settings import RUNELET_MARKER, state_path

# Beside ``bundle/``: the bundle rune's native launcher gives a runc it starts before the agent
# has answered (its config.json leads to the private bundle's; see rune.c, early_start).
EARLY_BUNDLE = "early"

FIELDS = ("id", "root", "bundle", "private_bundle", "enclave", "runtime", "measurement", "created", "extra",
          "state_base")


class ContainerRecord:
    """Mutable while rune prepares the container, then saved once."""

    __slots__ = (*FIELDS, "directory")

    def __init__(self, id: str, root: str, bundle: str, private_bundle: str,  # noqa: A002
                 enclave: dict[str, str] | None = None, runtime: str = "", measurement: str = "",
                 created: float | None = None, extra: dict[str, object] | None = None,
                 state_base: str = "") -> None:
        self.id = id
        self.root = root
        self.bundle = bundle  # the caller's bundle
        self.private_bundle = private_bundle  # what runc was given
        self.enclave = enclave  # EnclaveConfig.as_dict(); None for plain containers
        self.runtime = runtime  # resolved enclave runtime ("sim", a plugin name, a PAL path)
        self.measurement = measurement  # hex
        self.created = time.time() if created is None else created
        self.extra = extra or {}
        self.state_base = state_base  # "" = rune's default (environment)
        self.directory = state_path(root, id, state_base)  # id, root and state base never change

    def save(self, runelet: bool = False) -> None:
        doc = {k: getattr(self, k) for k in FIELDS}
        write_atomic(os.path.join(self.directory, "record.json"), fastjson.dumps(doc).encode(), durable=False)
        if runelet:
            write_atomic(os.path.join(self.directory, RUNELET_MARKER), b"", durable=False)

    @classmethod
    def load(cls, root: str, container_id: str, state_base: str = "") -> "ContainerRecord | None":
        path = os.path.join(state_path(root, container_id, state_base), "record.json")
        try:
            with open(path, "rb") as f:
                data = fastjson.loads(f.read())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{k: data[k] for k in FIELDS if k in data})
        except TypeError:
            return None

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.directory, ignore_errors=True)

    def discard_plan(self) -> None:
        """Undo a create that failed before runc ran: all of the directory but the early bundle,
        which rune's native launcher made and removes itself (its runc may still be starting and
        must not find its bundle gone: it would report that before the launcher stops it)."""
        import shutil

        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            if name == EARLY_BUNDLE:
                continue
            path = os.path.join(self.directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        try:
            os.rmdir(self.directory)
        except OSError:
            pass  # the early bundle is still there: the launcher removes both
