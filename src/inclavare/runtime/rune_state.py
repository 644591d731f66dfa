"""What rune remembers about the containers it changed: one directory per container.

Layout: ``<state base><runc root>/<id>/record.json`` plus ``bundle/`` (the private bundle).
The directory's existence is the fast path's test for "rune must handle this container".
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from inclavare.atomic_file import write_atomic
from inclavare.runtime.rune_entry import state_path


@dataclass
class ContainerRecord:
    id: str
    root: str
    bundle: str  # the caller's bundle
    private_bundle: str  # what runc was given
    enclave: dict[str, str] | None = None  # EnclaveConfig.as_dict(), None for plain containers
    runtime: str = ""  # resolved enclave runtime ("sim", a plugin name, or a PAL path)
    measurement: str = ""  # hex
    created: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def directory(self) -> str:
        return state_path(self.root, self.id)

    def save(self) -> None:
        write_atomic(os.path.join(self.directory, "record.json"),
                     json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def load(cls, root: str, container_id: str) -> "ContainerRecord | None":
        path = os.path.join(state_path(root, container_id), "record.json")
        try:
            with open(path, "rb") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def record_directory(root: str, container_id: str) -> str:
    return state_path(root, container_id)
