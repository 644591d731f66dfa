"""``delete`` and ``state`` of a container rune holds a record for (enclave or not).

runc does the work; rune keeps its record in step (removed once runc no longer knows the
container) and keeps its private bundle out of what the caller sees. Used by the slow path's
dispatcher for plain containers and by :mod:`inclavare.runtime.enclave_commands` for enclave
containers.
"""

from __future__ import annotations

from inclavare.runtime.runc_process import runc_knows, spawn, wait_child

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.runtime.invocation import Invocation
    from inclavare.runtime.rune_state import ContainerRecord


def delete(inv: Invocation, runc: str, record: ContainerRecord) -> int:
    rc = wait_child(spawn(runc, inv.argv), forward_signals=True)
    if rc == 0 or not runc_knows(inv.root, runc, record.id):
        record.remove()
    return rc


def state(inv: Invocation, runc: str, record: ContainerRecord) -> int:
    """runc's state, with the caller's bundle path instead of rune's private one."""
    import json
    import subprocess
    import sys

    from inclavare.runtime.rune_state import EARLY_BUNDLE

    proc = subprocess.run([runc, *inv.argv], stdout=subprocess.PIPE)
    out = proc.stdout
    if proc.returncode == 0:
        original = b'"bundle": ' + json.dumps(record.bundle).encode()
        for private in (record.private_bundle, record.directory + "/" + EARLY_BUNDLE):
            out = out.replace(b'"bundle": ' + json.dumps(private).encode(), original)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return proc.returncode
