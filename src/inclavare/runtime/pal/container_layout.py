"""Where the runelet's pieces appear inside an enclave container (fixed paths).

``/.inclavare`` is a small tmpfs the launch planner mounts over the container's root; under
it, read-only binds of the runelet runtime folder and the PAL library, the runelet
configuration, and a private tmpfs holding the exec socket.
"""

from __future__ import annotations

from inclavare.services.enclave_layout import INTERPRETER_FLAGS, interpreter_command

ROOT = "/.inclavare"
RT = f"{ROOT}/rt"
LOADER = f"{RT}/ld.so"
LIBDIR = f"{RT}/lib"
PYTHON = f"{RT}/bin/python"
PAL = f"{ROOT}/pal.so"
CONFIG = f"{ROOT}/runelet.json"
RUN = f"{ROOT}/run"
SOCKET = f"{RUN}/runelet.sock"

BOOT = "from inclavare.runtime.pal.runelet import main; main()"
INTERPRETER_ARGS = (*INTERPRETER_FLAGS, "-c", BOOT)


def runelet_command(*args: str) -> list[str]:
    """The process args that start the runelet through the bundled dynamic loader."""
    return [*interpreter_command(RT, BOOT), *args]
