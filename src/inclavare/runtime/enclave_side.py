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
* for simulated TDX/SNP, the node agent's configfs-tsm for this container at
  ``/sys/kernel/config/tsm/report`` (over a small tmpfs at ``/sys/kernel``; see :func:`add_tsm`);
* ``process.args`` run through enclave-init, which execs the workload as pid 1 and starts the
  enclave agent only when something connects to it.

Hardware enclave types (``intelSgx`` with Occlum or Gramine) get none of this: there the LibOS
attests from inside the enclave itself, and a helper process beside it would be outside.
"""

from __future__ import annotations

from inclavare.errors import ConfigError
from inclavare.runtime.bundle import process_ids, spec_mounts
from inclavare.services import enclave_layout as layout
from inclavare.tee.tsm import TSM_REPORT_DIR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from inclavare.runtime.bundle import Spec

_RO = ["rbind", "ro", "nosuid", "nodev"]


# enclave-private storage of a pulled image (tmpfs: memory of the container's cgroup)
IMAGE_TMPFS_SIZE = "2g"


def add_private_dir(spec: Spec, image: str = "") -> None:
    """The container-private tmpfs at /run/inclavare (its destination is never measured).

    With a pulled image the workload's files live there too, so it is executable and larger;
    the agent's socket must share its file system (it is hard-linked into the image's tree)."""
    uid, gid = process_ids(spec)
    mounts = spec_mounts(spec, layout.DIR, "the enclave side")
    sized = [f"size={IMAGE_TMPFS_SIZE}"] if image else ["noexec", "size=1m"]
    mounts.append({"destination": layout.DIR, "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", *sized, "mode=0755", f"uid={uid}", f"gid={gid}"]})


def add_runtime(spec: Spec, rt_dir: str, channel_dir: str, image: str = "", tsm_dir: str = "") -> None:
    """The runtime folder and this container's node agent channel, both read-only, configfs-tsm
    when the agent serves it (``tsm_dir``), and the process run through enclave-init."""
    mounts = spec.setdefault("mounts", [])
    mounts.append({"destination": layout.RT, "type": "bind", "source": rt_dir, "options": list(_RO)})
    mounts.append({"destination": layout.HOST_DIR, "type": "bind", "source": channel_dir,
                   "options": [*_RO, "noexec"]})
    if tsm_dir:
        add_tsm(spec, tsm_dir)
    process = spec.get("process")
    args = process.get("args") if isinstance(process, dict) else None
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise ConfigError("process.args in config.json must be a non-empty list of strings")
    if any("\0" in a for a in args):
        raise ConfigError("process.args in config.json must not contain NUL characters")
    drop: list[str] = []
    if image:
        replicate_mounts(spec)
        _check_chroot_possible(spec, process)  # type: ignore[arg-type]
        drop = _grant_chroot(process)  # type: ignore[arg-type]
        _allow_chroot_syscall(spec, granted=bool(drop))
    process["args"] = layout.enclave_init_command(args, image, drop_caps=drop)  # type: ignore[index]


TSM_PARENT = "/sys/kernel"


def add_tsm(spec: Spec, tsm_dir: str) -> None:
    """The node agent's configfs-tsm directory for this container at the kernel's path.

    A container's /sys is read-only sysfs and this host mounts no configfs, so the mount point
    cannot be made there: a small tmpfs replaces /sys/kernel (hiding the host kernel's tunables,
    which a TD's workload would not see either) and holds the path down to ``report``."""
    if not any(isinstance(m, dict) and m.get("destination") == "/sys" for m in spec.get("mounts") or []):
        raise ConfigError("configfs-tsm needs the container's /sys mount (config.json has none)")
    mounts = spec_mounts(spec, TSM_PARENT, "configfs-tsm")
    mounts.append({"destination": TSM_PARENT, "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "noexec", "size=64k", "mode=0755"]})
    mounts.append({"destination": TSM_REPORT_DIR, "type": "bind", "source": tsm_dir,
                   "options": ["bind", "nosuid", "nodev", "noexec"]})


CHROOT_CAP = "CAP_SYS_CHROOT"
SETPCAP_CAP = "CAP_SETPCAP"
IMAGE_ROOT = f"{layout.IMAGE_DIR}/rootfs"
# the devices runc creates in every container's /dev, bound from the host into the image's
# /dev as runc itself does in user namespaces (same nodes; the device cgroup still applies)
DEFAULT_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def _grant_chroot(process: dict[str, object]) -> list[str]:
    """enclave-init chroots into the pulled image: give it CAP_SYS_CHROOT when the spec lists
    capabilities without it, and CAP_SETPCAP so it can take CAP_SYS_CHROOT out of the bounding
    set again (else a root workload would regain it at its next execve). enclave-init drops what
    was added, from every set, before the workload runs. Returns the added names. Without a
    capabilities list runc leaves root's capabilities alone."""
    caps = process.get("capabilities")
    if not isinstance(caps, dict):
        return []
    bounding = caps.get("bounding") or []
    added = [c for c in (CHROOT_CAP, SETPCAP_CAP) if c not in bounding]
    if CHROOT_CAP not in added:
        return []
    for kind in ("bounding", "effective", "permitted"):
        current = caps.get(kind)
        caps[kind] = [*(current if isinstance(current, list) else []), *added]
    return added


def _check_chroot_possible(spec: Spec, process: dict[str, object]) -> None:
    """Refuse in one line what cannot chroot: a non-root user keeps no capability across
    enclave-init's execve unless it is ambient (engines set the user from `--user` or
    `runAsUser`; they never make CAP_SYS_CHROOT ambient)."""
    uid, _gid = process_ids(spec)
    caps = process.get("capabilities")
    ambient = caps.get("ambient") if isinstance(caps, dict) else None
    if uid != 0 and not (isinstance(ambient, list) and CHROOT_CAP in ambient):
        raise ConfigError(f"enclave.image needs the container to start as root (it runs as uid {uid}): "
                          "enclave-init chroots into the pulled image, then runs the workload as the "
                          "image's own User; set the user in the image, not in the engine")


def _allow_chroot_syscall(spec: Spec, granted: bool) -> None:
    """Engines' seccomp profiles deny chroot(2) to a container without CAP_SYS_CHROOT (podman
    --cap-drop, a pod dropping it). When rune granted the capability for enclave-init it lets
    the syscall through as well: the workload, which holds the capability in no set, is still
    refused by the kernel. A profile denying chroot to a container that holds the capability
    is the operator's word: refused in one line."""
    linux = spec.get("linux")
    seccomp = linux.get("seccomp") if isinstance(linux, dict) else None
    if not isinstance(seccomp, dict) or seccomp.get("defaultAction") == "SCMP_ACT_ALLOW":
        return
    rules = seccomp.setdefault("syscalls", [])
    if not isinstance(rules, list):
        raise ConfigError("linux.seccomp.syscalls in config.json must be a list")
    naming = [r for r in rules if isinstance(r, dict) and isinstance(r.get("names"), list) and "chroot" in r["names"]]
    if any(r.get("action") == "SCMP_ACT_ALLOW" and not r.get("args") for r in naming):
        return
    if not granted:
        raise ConfigError("enclave.image needs chroot(2), which the container's seccomp profile denies")
    for rule in naming:
        rule["names"] = [n for n in rule["names"] if n != "chroot"]
    rules[:] = [r for r in rules if not (isinstance(r, dict) and r.get("names") == [])]
    rules.append({"names": ["chroot"], "action": "SCMP_ACT_ALLOW"})


def replicate_mounts(spec: Spec) -> None:
    """The pulled image becomes the workload's root (enclave-init chroots into it), so it gets
    the container's mounts at the same places — /proc, /dev, /sys, volumes, /etc/hosts — plus
    the default device nodes, and the masked and read-only paths again (the unpacker skips
    anything the image holds under a mount point).

    Not copied: /run/inclavare and what lies under it, and a mount above it (containerd's
    default spec puts a tmpfs on /run): the image's /run stays on the enclave tmpfs, where the
    pull step links the agent's socket (a hard link cannot cross into another file system)."""
    mounts = spec.setdefault("mounts", [])
    copies = [{**m, "destination": IMAGE_ROOT + m["destination"]} for m in list(mounts)
              if isinstance(m, dict) and isinstance(m.get("destination"), str)
              and m["destination"].startswith("/") and m["destination"] != "/"
              and not (m["destination"] + "/").startswith(layout.DIR + "/")
              and not layout.DIR.startswith(m["destination"].rstrip("/") + "/")]
    mounts.extend(copies)
    if any(m["destination"] == IMAGE_ROOT + "/dev" for m in copies):
        for name in DEFAULT_DEVICES:
            mounts.append({"destination": f"{IMAGE_ROOT}/dev/{name}", "type": "bind", "source": f"/dev/{name}",
                           "options": ["bind", "nosuid", "noexec"]})
    linux = spec.get("linux")
    if isinstance(linux, dict):
        for key in ("maskedPaths", "readonlyPaths"):
            paths = linux.get(key)
            if isinstance(paths, list):
                linux[key] = [*paths, *(IMAGE_ROOT + p for p in paths if isinstance(p, str) and p.startswith("/"))]
