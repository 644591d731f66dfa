"""The enclave side of a simulated enclave container, written into its OCI spec.

In the simulated TEE the enclave boundary is the container: what would run inside the enclave
on hardware — the LibOS's attestation agent, key generation, the key broker protocol, JWE
decryption — runs in the container's own processes. rune arranges three mounts and one
wrapper (paths in :mod:`inclavare.services.enclave_layout`):

* a tmpfs at ``/run/inclavare``, private to the container and owned by its user, where
  enclave-init creates the enclave agent's socket (so no other container and no host file
  system holds it);
* the enclave-side runtime folder, read-only, at ``/run/inclavare/rt`` (interpreter, enclave
  agent, enclave-init and the attest client);
* the node agent's channel for this one container, read-only, at ``/run/inclavare/host``
  (quotes, collateral, the opaque relay — the host's roles only);
* ``process.args`` run through enclave-init, which execs the workload as pid 1 and starts the
  enclave agent only when something connects to it.

Hardware enclave types (``intelSgx`` with Occlum or Gramine) get none of this: there the LibOS
attests from inside the enclave itself, and a helper process beside it would be outside.
"""

from __future__ import annotations

from inclavare.errors import ConfigError
from inclavare.runtime.bundle import process_ids, spec_mounts
from inclavare.services import enclave_layout as layout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.runtime.bundle import Spec

_RO = ["rbind", "ro", "nosuid", "nodev"]


def add_private_dir(spec: Spec) -> None:
    """The container-private tmpfs at /run/inclavare (its destination is never measured)."""
    uid, gid = process_ids(spec)
    mounts = spec_mounts(spec, layout.DIR, "the enclave side")
    mounts.append({"destination": layout.DIR, "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "noexec", "mode=0755", "size=1m", f"uid={uid}", f"gid={gid}"]})


def add_runtime(spec: Spec, rt_dir: str, channel_dir: str) -> None:
    """The runtime folder and this container's node agent channel, both read-only, and the
    process run through enclave-init."""
    mounts = spec.setdefault("mounts", [])
    mounts.append({"destination": layout.RT, "type": "bind", "source": rt_dir, "options": list(_RO)})
    mounts.append({"destination": layout.HOST_DIR, "type": "bind", "source": channel_dir,
                   "options": [*_RO, "noexec"]})
    process = spec.get("process")
    args = process.get("args") if isinstance(process, dict) else None
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise ConfigError("process.args in config.json must be a non-empty list of strings")
    if any("\0" in a for a in args):
        raise ConfigError("process.args in config.json must not contain NUL characters")
    process["args"] = layout.enclave_init_command(args)  # type: ignore[index]
