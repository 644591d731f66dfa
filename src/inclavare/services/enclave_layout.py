"""Where the enclave-side pieces appear inside a simulated enclave container (fixed paths).

::

    /run/inclavare               tmpfs private to the container (owned by the container's user)
    /run/inclavare/agent.sock    the enclave agent: CoCo's AA/CDH REST API (made by enclave-init)
    /run/inclavare/bin           -> rt/tools: the static attest client (made by enclave-init)
    /run/inclavare/rt            the enclave-side runtime folder, read-only: interpreter, the
                                 enclave agent's code, enclave-init and attest
    /run/inclavare/host          the node agent's channel for this one container, read-only:
                                 host.sock (quote, collateral, the opaque relay)
    /run/inclavare/image         with enclave.image: the pulled workload image (rootfs/ and the
                                 exec plan enclave-init chroots into and runs)

rune mounts them (runtime layer), enclave-init and the enclave agent use them (inside).
"""

from __future__ import annotations

DIR = "/run/inclavare"
AGENT_SOCKET = f"{DIR}/agent.sock"
BIN = f"{DIR}/bin"
ATTEST = f"{BIN}/attest"
RT = f"{DIR}/rt"
TOOLS_DIR_NAME = "tools"  # inside the runtime folder: the static enclave-init and attest
ENCLAVE_INIT = f"{RT}/{TOOLS_DIR_NAME}/enclave-init"
HOST_DIR = f"{DIR}/host"
HOST_SOCKET_NAME = "host.sock"
HOST_SOCKET = f"{HOST_DIR}/{HOST_SOCKET_NAME}"
LISTEN_FD_ENV = "INCLAVARE_LISTEN_FD"  # set by enclave-init for the agent it starts

# -I: isolated (no user site, no PYTHON* variables, no script dir on sys.path); -S: no site
# import (the folder has no site-packages); -B: the folder is read-only; -X utf8: file names
# and JSON are UTF-8 whatever the container's locale.
INTERPRETER_FLAGS = ("-I", "-S", "-B", "-X", "utf8")
AGENT_BOOT = "from inclavare.services.enclave_agent.main import main; main()"
IMAGE_DIR = f"{DIR}/image"
PULL_BOOT = "from inclavare.services.enclave_agent.image_step import main; main()"


def interpreter_command(rt: str, boot: str) -> list[str]:
    """Start the runtime folder's interpreter at ``rt`` through its own dynamic loader."""
    return [f"{rt}/ld.so", "--library-path", f"{rt}/lib", f"{rt}/bin/python", *INTERPRETER_FLAGS, "-c", boot]


def enclave_init_command(args: list[str], image: str = "", drop_caps: list[str] | None = None) -> list[str]:
    """The process args that run ``args`` as pid 1 with the enclave agent started on demand.

    With ``image`` the bundle's args are not run: enclave-init runs the agent's pull step (which
    pulls, verifies, decrypts and unpacks the image into ``IMAGE_DIR``), then chroots into the
    unpacked tree and execs the image's own entrypoint (``drop_caps``: the capabilities rune
    granted for the chroot alone, CAP_SYS_CHROOT and CAP_SETPCAP; enclave-init drops them from
    every set before the workload runs)."""
    if image:
        flags = [f"--drop-{c[4:].lower().replace('_', '-')}" for c in drop_caps or ()]
        return [ENCLAVE_INIT, "--image", IMAGE_DIR, *flags, AGENT_SOCKET, *interpreter_command(RT, AGENT_BOOT), image,
                "--", *interpreter_command(RT, PULL_BOOT), image]
    return [ENCLAVE_INIT, AGENT_SOCKET, *interpreter_command(RT, AGENT_BOOT), "--", *args]
