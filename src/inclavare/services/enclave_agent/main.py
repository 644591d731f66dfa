"""Start of the enclave agent process: serve the listening socket enclave-init hands over.

enclave-init creates ``/run/inclavare/agent.sock`` and starts this process (with the runtime
folder's interpreter) on the first connection, passing the socket as ``$INCLAVARE_LISTEN_FD``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from typing import NoReturn

from inclavare.services.enclave_layout import LISTEN_FD_ENV


def main() -> NoReturn:
    logging.basicConfig(level=logging.WARNING, format="enclave-agent: %(message)s", stream=sys.stderr)
    try:
        fd = int(os.environ.get(LISTEN_FD_ENV, ""))
        listener = socket.socket(fileno=fd)
        if listener.family != socket.AF_UNIX:
            raise OSError("not a unix socket")
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"enclave-agent: no listening socket in ${LISTEN_FD_ENV} ({exc}); "
                         "it is started by enclave-init\n")
        os._exit(2)
    from inclavare.services.enclave_agent.agent import EnclaveAgent
    from inclavare.services.enclave_agent.host_channel import HostChannel
    from inclavare.services.unix_http import Limits, UnixHttpServer

    # argv[1], when rune gave one: the container's pulled image (enclave.image)
    agent = EnclaveAgent(HostChannel(), image=sys.argv[1] if len(sys.argv) > 1 else "")
    server = UnixHttpServer(Limits(workers=4, max_connections=64, per_listener=64),
                            logging.getLogger("inclavare.enclave_agent"))
    server.adopt(listener, agent.handle, name="enclave agent", admit=agent.admit)
    server.start()
    threading.Event().wait()
    os._exit(0)
