"""Enclave configuration is read exactly as upstream rune reads it (table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from inclavare.errors import EnclaveConfigError
from inclavare.runtime.enclave_config import (
    EnclaveConfig,
    read_enclave_request,
    validate_runtime_path,
)


def spec(env: list[str] | None = None, **annotations: str) -> dict[str, Any]:
    s: dict[str, Any] = {"process": {"args": ["/bin/true"], "env": env if env is not None else ["PATH=/bin"]}}
    if annotations:
        s["annotations"] = {k.replace("__", "."): v for k, v in annotations.items()}
    return s


# (case name, spec, expected config fields or None, expected env after stripping)
CASES = [
    ("nothing configured", spec(), None, ["PATH=/bin"]),
    ("annotation only", spec(enclave__type="sim"),
     {"type": "sim", "runtime_path": "", "log_level": "info"}, ["PATH=/bin"]),
    ("env wins over annotation and is stripped",
     spec(["PATH=/bin", "ENCLAVE_TYPE=intelSgx", "ENCLAVE_RUNTIME_PATH=/p.so"], enclave__type="sim"),
     {"type": "intelSgx", "runtime_path": "/p.so"}, ["PATH=/bin"]),
    ("one-character env value is ignored but still stripped",
     spec(["ENCLAVE_TYPE=x", "A=1"], enclave__type="sim"), {"type": "sim"}, ["A=1"]),
    ("empty ENCLAVE_TYPE: plain runc, variable stripped", spec(["ENCLAVE_TYPE=", "A=1"]), None, ["A=1"]),
    ("variable without '=' counts as empty", spec(["ENCLAVE_TYPE", "A=1"], enclave__type="sim"),
     {"type": "sim"}, ["A=1"]),
    ("only the first duplicate is stripped",
     spec(["ENCLAVE_TYPE=sim", "ENCLAVE_TYPE=intelSgx"]), {"type": "sim"}, ["ENCLAVE_TYPE=intelSgx"]),
    ("no type: other ENCLAVE_* variables are left alone",
     spec(["ENCLAVE_RUNTIME_PATH=/p.so", "ENCLAVE_RUNTIME_ARGS=a,b"]), None,
     ["ENCLAVE_RUNTIME_PATH=/p.so", "ENCLAVE_RUNTIME_ARGS=a,b"]),
    ("args: commas become spaces", spec(enclave__type="sim", enclave__runtime__args="debug,no-epm,,x"),
     {"runtime_args": "debug no-epm  x"}, ["PATH=/bin"]),
    ("args: env wins", spec(["ENCLAVE_RUNTIME_ARGS=e1,e2"], enclave__type="sim", enclave__runtime__args="a"),
     {"runtime_args": "e1 e2"}, []),
    ("loglevel kept when valid", spec(enclave__type="sim", enclave__runtime__loglevel="debug"),
     {"log_level": "debug"}, ["PATH=/bin"]),
    ("loglevel: unknown falls back to info", spec(enclave__type="sim", enclave__runtime__loglevel="verbose"),
     {"log_level": "info"}, ["PATH=/bin"]),
    ("loglevel: match is case-sensitive", spec(enclave__type="sim", enclave__runtime__loglevel="DEBUG"),
     {"log_level": "info"}, ["PATH=/bin"]),
    ("ra_type matched case-insensitively", spec(enclave__type="sim", enclave__attestation__ra_type="ECDSA"),
     {"ra_type": "ecdsa"}, ["PATH=/bin"]),
    ("EPID with spid and key", spec(["ENCLAVE_RA_TYPE=epidLinkable", "ENCLAVE_RA_EPID_SPID=ab",
                                     "ENCLAVE_RA_EPID_SUB_KEY=cd"], enclave__type="sim"),
     {"ra_type": "epidLinkable", "ra_epid_spid": "ab", "ra_epid_subscription_key": "cd"}, []),
    ("all seven variables stripped, order of the rest kept",
     spec(["Z=1", "ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=sim", "ENCLAVE_RUNTIME_ARGS=aa",
           "ENCLAVE_RUNTIME_LOGLEVEL=debug", "ENCLAVE_RA_TYPE=ecdsa", "ENCLAVE_RA_EPID_SPID=xx",
           "ENCLAVE_RA_EPID_SUB_KEY=yy", "A=2"]),
     {"type": "sim", "runtime_path": "sim", "runtime_args": "aa", "log_level": "debug",
      "ra_type": "ecdsa", "ra_epid_spid": "xx", "ra_epid_subscription_key": "yy"}, ["Z=1", "A=2"]),
    ("process without env", {"process": {"args": ["x"]}, "annotations": {"enclave.type": "sim"}},
     {"type": "sim"}, []),
]


@pytest.mark.parametrize("name,the_spec,expected,env", CASES, ids=[c[0] for c in CASES])
def test_reads_like_upstream(name: str, the_spec: dict[str, Any], expected: dict[str, str] | None,
                             env: list[str]) -> None:
    request = read_enclave_request(the_spec)
    assert list(request.env) == env
    if expected is None:
        assert request.config is None
    else:
        assert isinstance(request.config, EnclaveConfig)
        for key, value in expected.items():
            assert getattr(request.config, key) == value, key


BAD = [
    ("unknown type", spec(enclave__type="sgx"), "enclave type sgx is not supported"),
    ("type is case-sensitive", spec(enclave__type="IntelSGX"), "is not supported"),
    ("intelSgx needs a runtime path", spec(enclave__type="intelSgx"), "enclave runtime path is not configured"),
    ("nitro needs a runtime path", spec(enclave__type="AwsNitroEnclaves"), "not configured"),
    ("unknown attestation type", spec(enclave__type="sim", enclave__attestation__ra_type="dcap2"),
     "attestation type dcap2 is not supported"),
    ("EPID without spid", spec(enclave__type="sim", enclave__attestation__ra_type="epidUnlinkable"),
     "ra_epid_spid is required"),
    ("EPID without subscription key", spec(["ENCLAVE_RA_EPID_SPID=ab"], enclave__type="sim",
                                           enclave__attestation__ra_type="epidLinkable"),
     "ra_epid_subscription_key is required"),
    ("NUL in the runtime path", spec(enclave__type="intelSgx", enclave__runtime__path="/a\x00b"), "NUL"),
    ("env is not a list", {"process": {"env": "A=1"}, "annotations": {"enclave.type": "sim"}}, "list of strings"),
    ("env entry not a string", {"process": {"env": [1]}}, "list of strings"),
    ("annotations not an object", {"process": {"env": []}, "annotations": ["enclave.type=sim"]}, "must be an object"),
    ("annotation value not a string", {"annotations": {"enclave.type": 1}}, "must be a string"),
    ("control characters are shown escaped", spec(enclave__type="sim\nX"), "'sim\\nX'"),
]


@pytest.mark.parametrize("name,the_spec,message", BAD, ids=[c[0] for c in BAD])
def test_rejects_bad_values(name: str, the_spec: dict[str, Any], message: str) -> None:
    with pytest.raises(EnclaveConfigError) as err:
        read_enclave_request(the_spec)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_runtime_path_must_exist(tmp_path: Any) -> None:
    lib = tmp_path / "liberpal-x.so"
    cfg = EnclaveConfig(type="intelSgx", runtime_path=str(lib))
    with pytest.raises(EnclaveConfigError, match="does not exist"):
        validate_runtime_path(cfg)
    lib.write_bytes(b"\x7fELF")
    validate_runtime_path(cfg)


def test_runtime_name_must_be_registered() -> None:
    with pytest.raises(EnclaveConfigError, match="not installed"):
        validate_runtime_path(EnclaveConfig(type="intelSgx", runtime_path="occlum"), plugin_names=["sim"])
    validate_runtime_path(EnclaveConfig(type="intelSgx", runtime_path="sim"), plugin_names=["sim"])


def test_config_as_upstream_json() -> None:
    request = read_enclave_request(spec(enclave__type="sim", enclave__runtime__args="a,b"))
    assert request.config is not None
    assert request.config.as_dict() == {
        "type": "sim", "path": "", "args": "a b", "loglevel": "info", "ra_type": "",
        "ra_epid_spid": "", "ra_epid_subscription_key": ""}
