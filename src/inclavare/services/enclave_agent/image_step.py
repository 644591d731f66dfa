"""The enclave agent's start-up step for ``enclave.image``: pull the workload image inside.

enclave-init runs this (the runtime folder's interpreter, in the container: the enclave
boundary) before any workload code, with the image reference rune wrote from the measured
configuration. It reaches the registry and the key broker through the node agent's opaque relay,
obtains layer keys with this enclave's own evidence (sending init-data that names the image, which
the quote's CONFIGID binds), and leaves in ``/run/inclavare/image``:

* ``rootfs/`` — the unpacked image, plus a hard link to the enclave agent's socket and a copy of
  the attest client at their usual paths, so the workload still reaches its agent;
* ``exec`` — what enclave-init runs after ``chroot(rootfs)`` (:class:`ExecPlan`).

One progress line per step on the container's stderr; on any failure one line why and exit 1
(the workload does not run).
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import NoReturn

from inclavare.services import enclave_layout as layout

PREFIX = "guest-pull: "


def _say(line: str) -> None:
    sys.stderr.write(PREFIX + line + "\n")
    sys.stderr.flush()


def _registry_url(registries: object, name: str) -> str:
    if not isinstance(registries, dict):
        registries = {}
    for candidate in (name, f"{name}:443", f"{name}:80"):
        url = registries.get(candidate)
        if isinstance(url, str):
            return url
    known = ", ".join(sorted(str(k) for k in registries)) or "none"
    raise LookupError(f"the node agent relays to no registry {name} (configured: {known}; start it with "
                      f"--registry URL)")


def _expose_agent(rootfs: str) -> None:
    """The workload keeps its agent: the socket hard-linked (same tmpfs), attest copied, both
    at their usual paths as the chrooted workload resolves them."""
    from inclavare.images.unpack import ensure_dir

    inner = ensure_dir(rootfs, layout.BIN)
    sock = os.path.join(os.path.dirname(inner), "agent.sock")
    for path in (sock, os.path.join(inner, "attest")):
        if os.path.lexists(path):
            os.unlink(path)
    os.link(layout.AGENT_SOCKET, sock)
    shutil.copy2(os.path.join(layout.RT, layout.TOOLS_DIR_NAME, "attest"), os.path.join(inner, "attest"))


def run(image: str, target: str = layout.IMAGE_DIR) -> None:
    from inclavare.images.guest_pull import RegistryClient, pull
    from inclavare.images.reference import parse_image_ref
    from inclavare.services.enclave_agent.agent import EnclaveAgent
    from inclavare.services.enclave_agent.host_channel import HostChannel
    from inclavare.services.http_transport import HttpTransport

    ref = parse_image_ref(image)
    host = HostChannel()
    url = _registry_url(host.info().get("registries"), ref.registry)
    agent = EnclaveAgent(host, image=str(ref))
    authority = url.split("://", 1)[1].split("/", 1)[0]
    transport = HttpTransport(url, connect=lambda timeout: host.tunnel(timeout, _authority(authority, url)),
                              timeout=60.0)
    plan = pull(ref, RegistryClient(transport, ref.repository), agent.fetch_key, target, _say)
    transport.close()
    _expose_agent(os.path.join(target, "rootfs"))
    tmp = os.path.join(target, ".exec")
    with open(tmp, "wb") as f:
        f.write(plan.encode())
    os.replace(tmp, os.path.join(target, "exec"))


def _authority(authority: str, url: str) -> str:
    """``host:port`` with the port explicit, as the node agent keys its registries."""
    if authority.rsplit(":", 1)[-1].isdigit() and not authority.endswith("]"):
        return authority
    return f"{authority}:{443 if url.startswith('https:') else 80}"


def main() -> NoReturn:
    from inclavare.errors import InclavareError

    if len(sys.argv) != 2:
        sys.stderr.write(f"{PREFIX}usage: … -c BOOT IMAGE (run by enclave-init)\n")
        os._exit(2)
    try:
        run(sys.argv[1])
    except (InclavareError, OSError, LookupError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        _say(f"{detail}; the workload is not started")
        os._exit(1)
    os._exit(0)
