"""Evidence auto-detection: binary, hex (optional 0x) and CoCo evidence JSON."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testdata_paths import vector

from inclavare.errors import FormatError
from inclavare.formats.evidence import load_evidence


@pytest.mark.parametrize("name,tee", [("sgx_quote", "sgx"), ("tdx_quote", "tdx"), ("tdx_quote_outdated", "tdx")])
def test_quote_encodings(name: str, tee: str) -> None:
    raw = vector("dcap", name).read_bytes()
    encodings = {
        "binary": raw,
        "hex": raw.hex().encode(),
        "hex0x": b"0x" + raw.hex().upper().encode() + b"\n",
        "json": json.dumps({"quote": base64.b64encode(raw).decode(), "cc_eventlog": None}).encode(),
    }
    for kind, data in encodings.items():
        loaded = load_evidence(data)
        assert loaded.tee == tee and loaded.raw == raw and loaded.quote is not None, kind
    assert load_evidence(encodings["json"]).extra == {"cc_eventlog": None}


def test_snp_report_encodings() -> None:
    raw = vector("snp", "attestation.bin").read_bytes()
    for data in (raw, raw.hex().encode(),
                 json.dumps({"attestation_report": base64.b64encode(raw).decode(), "cert_chain": None}).encode(),
                 json.dumps({"attestation_report": list(raw)}).encode()):
        loaded = load_evidence(data)
        assert loaded.tee == "snp" and loaded.snp_report is not None and loaded.raw == raw


@pytest.mark.parametrize("data", [
    b"", b"{}", b"[]", b"0xzz", b'{"quote": "not base64!"}', b'{"quote": "AAAA"}',
    b'{"attestation_report": {"version": 2}}', b"\x03\x00\x02\x00" + bytes(60),
])
def test_unrecognised_evidence_is_a_format_error(data: bytes) -> None:
    with pytest.raises(FormatError):
        load_evidence(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000) | st.text(max_size=300).map(str.encode))
def test_arbitrary_input_only_raises_format_errors(data: bytes) -> None:
    try:
        load_evidence(data)
    except FormatError:
        pass
