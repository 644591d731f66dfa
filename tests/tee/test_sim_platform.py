"""Which TEE a simulated enclave container gets, and the simulated platform's attester for it."""

from __future__ import annotations

import pytest

from inclavare.errors import ConfigError, EnclaveConfigError
from inclavare.runtime.enclave_config import RUNTIME_SIM, read_enclave_request
from inclavare.tee.simulated import simulated_tee
from inclavare.tee.registry import SAMPLE, SGX, SNP, TDX
from inclavare.tee.sim_platform import register_value, sim_attester


def config(**annotations: str):  # type: ignore[no-untyped-def]
    return read_enclave_request({"process": {"env": []}, "annotations": annotations}).config


def test_vm_tee_types_run_only_as_their_simulation() -> None:
    for tee in (TDX, SNP):
        c = config(**{"enclave.type": tee.name, "enclave.runtime.path": RUNTIME_SIM})
        assert c is not None and c.simulated and simulated_tee(c.type, c.runtime_path) == tee.name
        with pytest.raises(EnclaveConfigError, match="runtime path is not configured"):
            config(**{"enclave.type": tee.name})
        with pytest.raises(EnclaveConfigError, match="confidential VM"):
            config(**{"enclave.type": tee.name, "enclave.runtime.path": "/opt/occlum/libpal.so"})
    sim = config(**{"enclave.type": "sim"})
    assert sim is not None and simulated_tee(sim.type, sim.runtime_path) == SGX.name
    assert simulated_tee("intelSgx", RUNTIME_SIM) == "" and not config(**{
        "enclave.type": "intelSgx", "enclave.runtime.path": "/x/libpal.so"}).simulated
    with pytest.raises(EnclaveConfigError, match="must be one of: .*tdx, snp"):
        config(**{"enclave.type": "tdx2", "enclave.runtime.path": RUNTIME_SIM})
    with pytest.raises(EnclaveConfigError, match="is not supported"):
        config(**{"enclave.type": SAMPLE.name, "enclave.runtime.path": RUNTIME_SIM})


def test_register_value_and_attester_choice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mr = bytes(range(32))
    assert register_value(mr) == mr + bytes(16)
    with pytest.raises(ConfigError):
        register_value(bytes(48))

    def no_authority() -> None:
        raise AssertionError("not loaded for an unsimulated TEE")

    with pytest.raises(ConfigError, match="has no sample"):
        sim_attester(SAMPLE, mr, no_authority, no_authority)


def test_the_channel_quotes_for_the_registered_tee_and_keeps_rtmrs_per_container(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The node agent's channel routes (in process, real registry and authorities): each
    registration gets its TEE's evidence; RTMRs extend per container and reach its TD quotes only."""
    import base64
    import datetime as dt
    import hashlib
    import json

    from inclavare.services.agent.channel import Channels, Quoter
    from inclavare.services.agent.registry import Registry, registration_from
    from inclavare.services.unix_http import HttpError, Request
    from inclavare.tee.sim_authority import SimAuthority
    from inclavare.verify.evidence import TrustConfig, verify_evidence

    intel = SimAuthority.load_or_create(str(tmp_path / "sim"))
    registry = Registry(str(tmp_path / "registry"))
    channels = Channels(registry, Quoter(lambda: intel, amd_dir=str(tmp_path / "amd")), None)
    keys = {}
    for name, enclave in (("sgx", {"type": "sim"}), ("td1", {"type": TDX.name, "path": RUNTIME_SIM}),
                          ("td2", {"type": TDX.name, "path": RUNTIME_SIM}), ("hw", {"type": "intelSgx", "path": "/p"})):
        keys[name] = registry.register(registration_from({
            "id": name, "root": "/run/x", "runc": "/usr/sbin/runc", "bundle": "/b", "measurement": "ab" * 32,
            "enclave": enclave, "runtime": "sim"})).key

    def call(name: str, method: str, path: str, body: object = None) -> dict:  # type: ignore[type-arg]
        raw = json.dumps(body).encode() if body is not None else b""
        answer = channels.handle(keys[name], Request(method, path, {}, raw, None, None))  # type: ignore[arg-type]
        return json.loads(answer.body)  # type: ignore[union-attr, no-any-return]

    assert call("td1", "GET", "/v1/info")["tee"] == TDX.name and call("sgx", "GET", "/v1/info")["tee"] == SGX.name
    assert call("hw", "GET", "/v1/info")["tee"] is None
    digest = hashlib.sha384(b"event").digest()
    value = call("td1", "POST", "/v1/rtmr", {"index": 3, "digest": base64.b64encode(digest).decode()})["value"]
    assert value == hashlib.sha384(bytes(48) + digest).hexdigest()
    trust = TrustConfig(sgx_root_cas=(intel.root_ca,), collateral=(intel.collateral(), intel.tdx_collateral()))
    now = dt.datetime.now(dt.timezone.utc)
    rtmr3 = {}
    for name in ("td1", "td2"):
        doc = call(name, "POST", "/v1/quote", {"report_data": base64.b64encode(b"rd").decode()})
        assert (doc["tee"], doc["simulated"]) == (TDX.name, True)
        claims = verify_evidence(TDX.name, doc["evidence"], report_data=b"rd".ljust(64, b"\0"), trust=trust, now=now).claims
        assert claims["mr_td"] == "ab" * 32 + "00" * 16
        rtmr3[name] = claims["rtmr3"]
    assert rtmr3 == {"td1": value, "td2": "00" * 48}  # another container's registers are its own
    sgx = call("sgx", "POST", "/v1/quote", {"report_data": ""})
    assert sgx["tee"] == SGX.name and verify_evidence(SGX.name, sgx["evidence"], report_data=None, trust=trust,
                                                      now=now).claims["mr_enclave"] == "ab" * 32
    for name, body, message in (
            ("sgx", {"index": 3, "digest": base64.b64encode(digest).decode()}, "RTMRs are TDX registers"),
            ("td1", {"index": 1, "digest": base64.b64encode(digest).decode()}, "cannot be extended"),
            ("td1", {"index": 3, "digest": base64.b64encode(b"short").decode()}, "48 bytes"),
            ("td1", {"index": 3, "digest": "%%"}, "not base64"),
            ("td1", {"index": True, "digest": base64.b64encode(digest).decode()}, "RTMR number")):
        with pytest.raises(HttpError, match=message):
            call(name, "POST", "/v1/rtmr", body)
    from inclavare.errors import NotSupportedError

    with pytest.raises(NotSupportedError, match="platform's quoting service"):
        call("hw", "POST", "/v1/quote", {"report_data": ""})
    # the same container id registered again is a new TD: its registers start at zero
    from dataclasses import replace

    registry.register(replace(registry.by_key(keys["td1"]), registered_at=1.0))  # type: ignore[type-var]
    again = call("td1", "POST", "/v1/quote", {"report_data": ""})["evidence"]
    assert verify_evidence(TDX.name, again, report_data=None, trust=trust, now=now).claims["rtmr3"] == "00" * 48
    channels.forget(keys["td1"])
    assert keys["td1"] not in channels.quoter.rtmrs
