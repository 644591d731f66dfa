"""The KBS under abuse (issue 10, observations 3, 4, 8, 9, 10): real broker processes on loopback.

The attacker connects from 127.0.0.2 and the legitimate client from 127.0.0.1 (both loopback), so
per-address limits can tell them apart. Each test is bounded to seconds and a few hundred
connections; the broker runs with a lowered RLIMIT_NOFILE so descriptor exhaustion is reachable.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from inclavare.crypto import jws
from inclavare.services.kbs.admin_auth import make_admin_token
from tests.kbs.kbs_harness import ADMIN_AUDIENCE, KbsProcess, config_text, error_type, write_admin_keys

ATTACKER = "127.0.0.2"
AUTH = {"version": "0.4.0", "tee": "sample", "extra-params": ""}


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    started: list[KbsProcess] = []

    def factory(extra: str = "", nofile: int | None = None, log_level: str = "info") -> KbsProcess:
        d = str(tmp_path / f"kbs{len(started)}")
        Path(d).mkdir()
        key = write_admin_keys(d)
        text = config_text("sqlite:///kbs.db", extra=f'log_level = "{log_level}"\n' + extra)
        server = KbsProcess(d, text, key, nofile=nofile).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


def _addr(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def _stall(url: str, count: int, payload: bytes, source: str = ATTACKER) -> list[socket.socket]:
    """``count`` connections that each send ``payload`` (an incomplete request) and then wait."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(5)
        try:
            sock.connect(_addr(url))
            sock.sendall(payload)
        except OSError:
            pass  # refused or reset at once: that is a closed connection too
        socks.append(sock)
    return socks


def _closed_by(socks: list[socket.socket], deadline: float) -> int:
    """How many of ``socks`` the server has closed (EOF or reset) by ``deadline``."""
    closed = 0
    for sock in socks:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            while sock.recv(4096):
                pass
            closed += 1
        except ConnectionError:
            closed += 1
        except (TimeoutError, OSError):
            pass
        finally:
            sock.close()
    return closed


def _legit_auth(url: str) -> httpx.Response:
    return httpx.post(url + "/kbs/v0/auth", json=AUTH, timeout=5)


PARTIAL_HEADERS = b"POST /kbs/v0/auth HTTP/1.1\r\nHost: kbs\r\nContent-Type: application/json\r\n"
PARTIAL_BODY = (b"POST /kbs/v0/auth HTTP/1.1\r\nHost: kbs\r\nContent-Type: application/json\r\n"
                b"Content-Length: 60\r\n\r\n{\"version\":")


def test_stalled_requests_are_closed_within_the_request_timeout(start) -> None:
    """Obs. 3: partial headers and partial bodies used to be held forever."""
    server = start("[limits]\nrequest_timeout_seconds = 1\nmax_connections_per_client = 1000\n", nofile=512)
    began = time.monotonic()
    socks = _stall(server.url, 150, PARTIAL_HEADERS) + _stall(server.url, 150, PARTIAL_BODY)
    r = _legit_auth(server.url)  # served while 300 stalled connections are open
    assert r.status_code == 200, r.text
    closed = _closed_by(socks, began + 1 + 3)
    assert closed == 300, f"{closed}/300 stalled connections closed within 4 s"
    assert _legit_auth(server.url).status_code == 200


def test_stalled_request_gets_408_before_close(start) -> None:
    server = start("[limits]\nrequest_timeout_seconds = 0.5\n")
    with socket.create_connection(_addr(server.url), timeout=5) as sock:
        sock.sendall(PARTIAL_BODY)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 408 "), data[:80]
    assert json.loads(data.partition(b"\r\n\r\n")[2])["type"].endswith("/RequestTimeout")


def test_one_address_cannot_exhaust_descriptors(start) -> None:
    """Obs. 3: 600 stalled connections against RLIMIT_NOFILE 512 used to reset a legit /auth."""
    server = start("[limits]\nrequest_timeout_seconds = 30\nmax_connections_per_client = 100\n", nofile=512)
    socks = _stall(server.url, 600, PARTIAL_HEADERS)
    try:
        r = _legit_auth(server.url)
        assert r.status_code == 200, r.text
        refused = _closed_by(socks[100:], time.monotonic() + 2)  # beyond the cap: closed at once
        assert refused == 500
    finally:
        for sock in socks:
            sock.close()


def test_auth_flood_from_one_client_gets_429_and_others_still_get_in(start) -> None:
    """Obs. 4: one client filled max_sessions and every client got 503."""
    server = start("max_sessions = 200\n[limits]\nauth_rate_per_second = 2\nauth_burst = 20\n"
                   "max_sessions_per_client = 50\n")
    statuses = []
    with httpx.Client(transport=httpx.HTTPTransport(local_address=ATTACKER), timeout=5) as attacker:
        for _ in range(60):
            statuses.append(attacker.post(server.url + "/kbs/v0/auth", json=AUTH))
    ok = [r for r in statuses if r.status_code == 200]
    limited = [r for r in statuses if r.status_code == 429]
    assert 20 <= len(ok) <= 23 and len(ok) + len(limited) == 60
    assert error_type(limited[0]) == "TooManyRequests"
    assert 1 <= int(limited[0].headers["retry-after"]) <= 2
    assert _legit_auth(server.url).status_code == 200


def test_live_sessions_are_capped_per_client(start) -> None:
    server = start("session_timeout_seconds = 120\n[limits]\nauth_burst = 1000\nmax_sessions_per_client = 10\n")
    with httpx.Client(transport=httpx.HTTPTransport(local_address=ATTACKER), timeout=5) as attacker:
        statuses = [attacker.post(server.url + "/kbs/v0/auth", json=AUTH).status_code for _ in range(10)]
        assert statuses == [200] * 10
        r = attacker.post(server.url + "/kbs/v0/auth", json=AUTH)
    assert r.status_code == 429 and error_type(r) == "TooManyRequests"
    assert 100 <= int(r.headers["retry-after"]) <= 120  # when its oldest session expires
    assert _legit_auth(server.url).status_code == 200


def test_client_disconnect_mid_body_is_one_line(start) -> None:
    """Obs. 8: used to be `ERROR internal error` and a ClientDisconnect traceback."""
    server = start()
    with socket.create_connection(_addr(server.url), timeout=5) as sock:
        sock.sendall(PARTIAL_BODY)
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while "went away" not in server.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.stderr()
    assert "Traceback" not in log and "internal error" not in log, log
    assert [ln for ln in log.splitlines() if "went away" in ln] == [
        ln for ln in log.splitlines() if " kbs INFO POST /kbs/v0/auth: client went away" in ln
    ] and log.count("went away") == 1


@pytest.mark.parametrize("claims,accepted", [
    ({"aud": ADMIN_AUDIENCE}, True),
    ({"aud": [ADMIN_AUDIENCE, "other"]}, True),
    ({"aud": "https://other-kbs.example"}, False),
    ({}, False),
    ({"aud": None}, False),
    ({"aud": 1}, False),
])
def test_admin_token_must_name_this_broker(start, claims: dict, accepted: bool) -> None:
    """Obs. 9: a token for another broker (or for none) used to pass every admin route."""
    server = start()
    assert server.admin_key is not None
    now = int(time.time())
    token = jws.sign({"iat": now, "exp": now + 60, **claims}, server.admin_key)
    r = httpx.post(server.url + "/kbs/v0/resource/a/b/c", content=b"x",
                   headers={"authorization": f"Bearer {token}"}, timeout=5)
    if accepted:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 401 and error_type(r) == "AdminAuthAccess"
        assert "'aud'" in r.json()["detail"]


def test_admin_issuer_is_checked_when_configured(start) -> None:
    server = start('admin_issuer = "ops-team"\n')
    assert server.admin_key is not None
    wrong = make_admin_token(server.admin_key, ADMIN_AUDIENCE)  # iss "inclavare-admin"
    right = make_admin_token(server.admin_key, ADMIN_AUDIENCE, issuer="ops-team")
    url = server.url + "/kbs/v0/resource/a/b/c"
    r = httpx.post(url, content=b"x", headers={"authorization": f"Bearer {wrong}"}, timeout=5)
    assert r.status_code == 401 and "'iss'" in r.json()["detail"]
    r = httpx.post(url, content=b"x", headers={"authorization": f"Bearer {right}"}, timeout=5)
    assert r.status_code == 200, r.text


def test_admin_token_signed_by_another_key_still_refused(start) -> None:
    server = start()
    token = make_admin_token(ed25519.Ed25519PrivateKey.generate(), ADMIN_AUDIENCE)
    r = httpx.get(server.url + "/kbs/v0/resource-policy", headers={"authorization": f"Bearer {token}"}, timeout=5)
    assert r.status_code == 401 and error_type(r) == "AdminAuthAccess"


NOT_SERDE_JSON = [
    pytest.param(json.dumps(AUTH).encode("utf-16"), id="utf-16"),
    pytest.param(json.dumps(AUTH).encode("utf-16-le"), id="utf-16-le"),
    pytest.param(b'{"version":"0.4.0","tee":"sample","extra-params":NaN}', id="NaN"),
    pytest.param(b'{"version":"0.4.0","tee":"sample","extra-params":{"x":-Infinity}}', id="Infinity"),
    pytest.param(b'{"version":"0.4.0","tee":"sample","tee":"sample","extra-params":""}', id="duplicate-key"),
]


@pytest.mark.parametrize("body", NOT_SERDE_JSON)
def test_auth_refuses_what_serde_json_refuses(start, body: bytes) -> None:
    """Obs. 10: UTF-16 and NaN used to open a session."""
    server = start()
    r = httpx.post(server.url + "/kbs/v0/auth", content=body, headers={"content-type": "application/json"}, timeout=5)
    assert r.status_code == 401 and error_type(r) == "AttestationError", r.text
    assert "\n" not in r.json()["detail"]
    assert "Traceback" not in server.stderr()


def test_attest_refuses_what_serde_json_refuses(start) -> None:
    server = start()
    with httpx.Client(timeout=5) as http:
        assert http.post(server.url + "/kbs/v0/auth", json=AUTH).status_code == 200
        body = b'{"runtime-data":{"nonce":"x","tee-pubkey":{}},"runtime-data":{},"tee-evidence":{}}'
        r = http.post(server.url + "/kbs/v0/attest", content=body)
    assert r.status_code == 401 and error_type(r) == "AttestationError"
    assert "duplicate JSON key" in r.json()["detail"]


@pytest.mark.parametrize("route,body", [
    ("/attestation-policy", b'{"type":"rego","type":"rego","policy_id":"default_cpu","policy":"eA"}'),
    ("/resource-policy", b'{"policy":"eA","policy":"eA"}'),
    ("/resource-policy", '{"policy":"eA"}'.encode("utf-16")),
    ("/reference-value", b'{"version":"0.1.0","type":"sample","payload":"e30","x":NaN}'),
])
def test_admin_bodies_are_strict_json(start, route: str, body: bytes) -> None:
    server = start()
    r = server.admin("POST", route, body)
    assert r.status_code == 401, r.text
    detail = r.json()["detail"]
    assert any(w in detail for w in ("duplicate JSON key", "not valid UTF-8", "NaN")), detail
