"""The registry's recipe, followed by a TEE defined only here: one attester, one verifier, one
registry entry — and the key broker attests it end to end (in process, real HTTP on loopback,
real store, real policy engine, real EAR tokens), with no other change to the project."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import uvicorn

from inclavare.errors import KbsError, ReportDataMismatch, SignatureError
from inclavare.services.kbs.app import create_app
from inclavare.services.kbs.config import parse_config
from inclavare.services.kbs.resource_policy import POLICY_ID
from inclavare.services.kbs.server import build_service
from inclavare.services.kbs_client import KbsClient
from inclavare.tee.registry import Tee, UnknownTee, pad_report_data, register_tee, tee_named, unregister_tee
from inclavare.verify.evidence import TrustConfig, UnsupportedTee, Verdict, expect_report_data, verify_evidence
from inclavare.verify.table import VerifierEntry, register_verifier, unregister_verifier

TOY = Tee("toy-tee")
TOY_KEY = os.urandom(32)  # the toy "hardware" key: what a real TEE's signing chain stands for
GOOD = "11" * 32
OTHER = "22" * 32


class ToyAttester:
    """Step 1 of the recipe: an attester (report data in, the TEE's evidence JSON out)."""

    tee = TOY

    def __init__(self, measurement: str, key: bytes = TOY_KEY) -> None:
        self.measurement, self.key = measurement, key

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        body = bytes.fromhex(self.measurement) + pad_report_data(report_data)
        return {"measurement": self.measurement, "report_data": pad_report_data(report_data).hex(),
                "mac": hmac.new(self.key, body, hashlib.sha256).hexdigest()}


def verify_toy(tee: Tee, evidence: Mapping[str, Any], report_data: bytes | None, trust: TrustConfig,
               now: dt.datetime) -> Verdict:
    """Step 2: a verifier (evidence JSON -> Verdict, or a VerificationError)."""
    body = bytes.fromhex(evidence["measurement"]) + bytes.fromhex(evidence["report_data"])
    if not hmac.compare_digest(hmac.new(TOY_KEY, body, hashlib.sha256).hexdigest(), evidence["mac"]):
        raise SignatureError("toy evidence is not signed by the toy key")
    expect_report_data(bytes.fromhex(evidence["report_data"]), report_data)
    return Verdict(tee.name, "UpToDate", (), {"measurement": evidence["measurement"]})


@pytest.fixture
def toy_tee() -> Iterator[Tee]:
    """Step 3: the registry entry (and its verifier in the table), removed afterwards."""
    register_tee(TOY)
    register_verifier(TOY, VerifierEntry(verify_toy, lambda trust: True))
    yield TOY
    unregister_verifier(TOY)
    unregister_tee(TOY.name)


@pytest.fixture
def broker(toy_tee: Tee, tmp_path: Any) -> Iterator[tuple[str, Any]]:
    """A key broker in this process (so it sees the toy entry), serving HTTP on loopback."""
    config = parse_config({"listen": "127.0.0.1:0", "store": "sqlite:///kbs.db"}, str(tmp_path))
    service = build_service(config)
    service.store.put_resource("default/key/toy", b"toy secret")
    service.store.put_policy(POLICY_ID, (
        'package policy\nimport rego.v1\ndefault allow := false\n'
        f'allow if input.submods.cpu0["ear.veraison.annotated-evidence"]["{TOY.name}"].measurement == "{GOOD}"\n'))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", lifespan="off",
                                           timeout_keep_alive=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", service
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        service.store.close()


def test_toy_tee_through_the_verifier_table(toy_tee: Tee) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    evidence = ToyAttester(GOOD).evidence(b"rd")
    verdict = verify_evidence(toy_tee.name, evidence, report_data=b"rd", trust=TrustConfig(), now=now)
    assert verdict.to_dict() == {"tee": toy_tee.name, "status": "UpToDate", "advisory_ids": [],
                                 "claims": {"measurement": GOOD}}
    with pytest.raises(ReportDataMismatch):
        verify_evidence(toy_tee.name, evidence, report_data=b"other", trust=TrustConfig(), now=now)


def test_toy_tee_gets_a_secret_from_the_key_broker_and_a_changed_one_does_not(
        broker: tuple[str, Any]) -> None:
    url, _ = broker
    with KbsClient(url, ToyAttester(GOOD)) as client:
        assert client.get_resource("kbs:///default/key/toy") == b"toy secret"
    with KbsClient(url, ToyAttester(OTHER)) as client, pytest.raises(KbsError) as denied:
        client.get_resource("kbs:///default/key/toy")
    assert denied.value.kind == "PolicyDeny"
    with KbsClient(url, ToyAttester(GOOD, key=os.urandom(32))) as client, pytest.raises(KbsError) as forged:
        client.get_resource("kbs:///default/key/toy")
    assert forged.value.kind == "AttestationError" and "toy key" in str(forged.value)


def test_without_its_entry_the_toy_tee_is_unknown() -> None:
    with pytest.raises(UnknownTee, match="unknown TEE"):
        tee_named(TOY.name)
    with pytest.raises(UnsupportedTee, match="unsupported TEE"):
        verify_evidence(TOY.name, {}, report_data=None, trust=TrustConfig(), now=dt.datetime.now(dt.timezone.utc))
