"""Durability: restart, kill -9 during concurrent admin writes, PostgreSQL shared by replicas."""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest
from kbs_harness import ADMIN_AUDIENCE, ALLOW_ALL, SampleSession, error_type

from inclavare.policy.reference_values import build_message
from inclavare.services.kbs.admin_auth import make_admin_token
from inclavare.services.kbs.store import open_store


def _store_contract(url: str) -> None:
    """What both backends must do (run on SQLite and on PostgreSQL)."""
    from datetime import datetime, timezone

    from inclavare.policy.reference_values import parse_message

    store = open_store(url)
    try:
        g0 = store.generation()
        assert store.get_resource("r/t/x") is None
        store.put_resource("r/t/x", b"\x00\xffdata")
        store.put_resource("r/t/x", b"v2")
        assert store.get_resource("r/t/x") == b"v2"
        assert "r/t/x" in store.list_resources()
        assert store.delete_resource("r/t/x") and not store.delete_resource("r/t/x")
        store.put_policy("resource", "package policy\n")
        assert store.get_policy("resource") == "package policy\n" and store.generation() > g0
        now = datetime.now(timezone.utc)
        store.put_reference_values(parse_message(build_message({"a": [1], "b": ["x"]}), now=now))
        values = {rv.name: rv.value for rv in store.reference_values()}
        assert values["a"] == [1] and values["b"] == ["x"]
    finally:
        store.close()
    reopened = open_store(url)
    try:
        assert reopened.get_policy("resource") == "package policy\n"
    finally:
        reopened.close()


def test_sqlite_store_contract(tmp_path) -> None:
    _store_contract(f"sqlite:///{tmp_path}/s.db")


def test_state_survives_restart(make_kbs, tmp_path) -> None:
    server = make_kbs()
    server.set_resource_policy(ALLOW_ALL)
    assert server.admin("POST", "/resource/default/key/1", b"persisted").status_code == 200
    assert server.admin("POST", "/reference-value", build_message({"svn": ["7"]})).status_code == 200
    server.stop()
    again = make_kbs(directory=str(tmp_path))
    s = SampleSession(again.url)
    s.auth()
    s.attest()
    assert s.decrypt(s.resource("default/key/1")) == b"persisted"  # resource + allow-all policy survived
    assert again.admin("GET", "/reference-value/svn").json()["value"] == ["7"]


@pytest.mark.slow
def test_kill_9_during_concurrent_admin_writes_loses_nothing_acknowledged(make_kbs, tmp_path) -> None:
    server = make_kbs()
    acked: dict[str, bytes] = {}
    acked_rv: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        token = make_admin_token(server.admin_key, ADMIN_AUDIENCE)
        with httpx.Client(timeout=5, headers={"authorization": f"Bearer {token}"}) as http:
            i = 0
            while not stop.is_set():
                path, value = f"default/w{n}/{i}", os.urandom(16) * (i % 5 + 1)
                try:
                    r = http.post(f"{server.url}/kbs/v0/resource/{path}", content=value)
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    with lock:
                        acked[path] = value
                i += 1

    def rv_writer() -> None:
        token = make_admin_token(server.admin_key, ADMIN_AUDIENCE)
        with httpx.Client(timeout=5, headers={"authorization": f"Bearer {token}"}) as http:
            i = 0
            while not stop.is_set():
                try:
                    r = http.post(f"{server.url}/kbs/v0/reference-value", content=build_message({f"rv{i}": [i]}))
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    with lock:
                        acked_rv.append(f"rv{i}")
                i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)] + [threading.Thread(target=rv_writer)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    server.kill9()  # while writes are in flight
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) > 20, "the writers barely ran"
    again = make_kbs(directory=str(tmp_path))
    store = open_store(f"sqlite:///{tmp_path}/kbs.db")
    try:
        missing = [p for p, v in acked.items() if store.get_resource(p) != v]
        names = {rv.name for rv in store.reference_values()}
    finally:
        store.close()
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
    assert set(acked_rv) <= names
    assert again.admin("GET", "/resource-policy").status_code == 200


# --- PostgreSQL -------------------------------------------------------------------------------------


def test_postgres_store_contract(postgres: str) -> None:
    _store_contract(postgres)


def test_two_replicas_share_state_through_postgres(make_kbs, postgres: str, tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "token.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    extra = '[attestation]\ntoken_signing_key = "token.key"\n'
    a = make_kbs(extra, store=postgres)
    b = make_kbs(extra, store=postgres, directory=str(tmp_path))
    a.set_resource_policy(ALLOW_ALL)
    assert a.admin("POST", "/resource/default/shared/1", b"from replica a").status_code == 200
    s = SampleSession(a.url)
    s.auth()
    token = s.attest().json()["token"]
    r = httpx.get(b.url + "/kbs/v0/resource/default/shared/1", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200 and s.decrypt(r) == b"from replica a"
    b.set_resource_policy("package policy\nimport rego.v1\ndefault allow := false\n")
    r = s.resource("default/shared/1")  # replica a picks up the policy written through b
    assert r.status_code == 401 and error_type(r) == "PolicyDeny"
