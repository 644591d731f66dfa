"""The RA-TLS relays under a network client that holds connections (every listening socket is
bounded: the hardening issue's first deliverable, for ``inclavare ratls serve|connect``).

Before: each connection was accepted and held for the whole 30 s handshake timeout, without a
cap, and a relayed connection that went silent was kept forever. Now connections in all and per
client address are capped before any TLS work, and a silent relayed connection is closed."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from inclavare.tee.sim_authority import SimAuthority
from tests.ratls.conftest import MR_A, authority, echo_port, exchange  # noqa: F401  (fixtures)
from tests.ratls.test_cli import Relay, _sim_args, _trust_args, exported  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(120)
PER_CLIENT = 4


def stalled(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` TCP connections from ``host`` that never send a byte."""
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind((host, 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


def closed_by_server(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_client_holding_connections_gets_its_share_only(
        authority: SimAuthority, exported: Path, echo_port: int, tmp_path: Path) -> None:  # noqa: F811
    serve = Relay(["serve", "--listen", "127.0.0.1:0", "--forward", f"127.0.0.1:{echo_port}",
                   "--max-per-client", str(PER_CLIENT), "--idle-timeout", "1", *_sim_args(authority, MR_A)],
                  tmp_path / "serve.log")
    client = Relay(["connect", "--listen", "127.0.0.1:0", "--connect", f"127.0.0.1:{serve.port}",
                    *_trust_args(exported, MR_A)], tmp_path / "client.log")
    attacker: list[socket.socket] = []
    try:
        attacker = stalled("127.0.0.2", serve.port, 100)
        over_cap = [s for s in attacker[PER_CLIENT + 2:] if closed_by_server(s, 2)]
        held = [s for s in attacker[:PER_CLIENT] if not closed_by_server(s, 0.2)]
        print(f"attacker: {len(over_cap)} of {len(attacker) - PER_CLIENT - 2} over the cap closed at once, "
              f"{len(held)} held (in their TLS handshake)")
        assert len(over_cap) == len(attacker) - PER_CLIENT - 2
        assert len(held) == PER_CLIENT

        payload = os.urandom(100_000)  # another client is served meanwhile
        assert exchange(client.port, payload) == payload

        with socket.create_connection(("127.0.0.1", client.port), timeout=10) as idle:
            idle.sendall(b"ping")
            assert idle.recv(4) == b"ping"
            start = time.monotonic()
            assert idle.recv(1) == b""  # closed by the relay, not by us
            waited = time.monotonic() - start
        print(f"a silent relayed connection was closed after {waited:.1f} s")
        assert 0.5 < waited < 5
    finally:
        for s in attacker:
            s.close()
        codes = [serve.stop(), client.stop()]
    assert codes == [0, 0]
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log
    assert "closed an idle relayed connection" in log
