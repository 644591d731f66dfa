"""DCAP collateral JSON (dcap-qvl QuoteCollateralV3 shape), TCB Info and QE Identity."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testdata_paths import vector

from inclavare.errors import FormatError
from inclavare.formats.collateral import Collateral
from inclavare.formats.qe_identity import parse_qe_identity
from inclavare.formats.rfc3339 import parse_rfc3339
from inclavare.formats.tcb_info import TcbStatus, parse_tcb_info

FILES = ("sgx_quote_collateral.json", "tdx_quote_collateral.json", "tdx_quote_outdated_collateral.json")


def _text(name: str) -> str:
    return vector("dcap", name).read_text()


@pytest.mark.parametrize("name", FILES)
def test_shared_collateral_round_trips(name: str) -> None:
    collateral = Collateral.from_json(_text(name))
    assert Collateral.from_json(collateral.to_json()) == collateral
    assert json.loads(collateral.to_json()).keys() == json.loads(_text(name)).keys()
    assert collateral.tcb_info_signature and len(collateral.qe_identity_signature) == 64


def test_tcb_info_and_qe_identity_models() -> None:
    sgx = Collateral.from_json(_text("sgx_quote_collateral.json"))
    info = parse_tcb_info(sgx.tcb_info)
    assert (info.id, info.version, info.fmspc) == ("SGX", 3, "00A067110000")
    assert info.issue_date == parse_rfc3339("2025-06-19T10:56:11Z", "t")
    assert all(len(level.sgx_components) == 16 for level in info.tcb_levels)
    identity = parse_qe_identity(sgx.qe_identity)
    assert identity.id == "QE" and identity.version == 2 and len(identity.mrsigner) == 32
    tdx = parse_tcb_info(Collateral.from_json(_text("tdx_quote_collateral.json")).tcb_info)
    assert tdx.is_tdx and tdx.tdx_module is not None and len(tdx.tdx_module_identities) == 2


def test_unknown_keys_are_ignored_and_hex_is_case_insensitive() -> None:
    document = json.loads(_text("sgx_quote_collateral.json"))
    document["future_field"] = [1, 2]
    document["pck_crl"] = document["pck_crl"].upper()
    assert Collateral.from_json(json.dumps(document)) == Collateral.from_json(_text("sgx_quote_collateral.json"))


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("tcb_info"),
    lambda d: d.update(root_ca_crl="0x" + d["root_ca_crl"]),
    lambda d: d.update(root_ca_crl=d["root_ca_crl"][:-1]),
    lambda d: d.update(tcb_info_signature=list(range(64))),
    lambda d: d.update(qe_identity=None),
    lambda d: d.update(pck_certificate_chain=5),
])
def test_malformed_collateral_is_a_format_error(mutate: object) -> None:
    document = json.loads(_text("sgx_quote_collateral.json"))
    mutate(document)  # type: ignore[operator]
    with pytest.raises(FormatError):
        Collateral.from_json(json.dumps(document))


def test_json_strictness_matches_serde() -> None:
    text = _text("sgx_quote_collateral.json")
    with pytest.raises(FormatError, match="duplicate"):
        Collateral.from_json(text.replace('"pck_crl":', '"pck_crl": "00", "pck_crl":', 1))
    with pytest.raises(FormatError):
        Collateral.from_json(text.encode() + b"\xff")
    with pytest.raises(FormatError):
        Collateral.from_json(text.replace('{', '{"x": NaN,', 1))
    with pytest.raises(FormatError):
        parse_tcb_info('{"id": "SGX", "version": 3.0}')
    with pytest.raises(FormatError):
        parse_tcb_info('{"id": "\\ud800"}')


def test_unknown_tcb_status_is_refused() -> None:
    info = Collateral.from_json(_text("sgx_quote_collateral.json")).tcb_info
    with pytest.raises(FormatError, match="tcbStatus"):
        parse_tcb_info(info.replace('"tcbStatus":"SWHardeningNeeded"', '"tcbStatus":"Fine"', 1))
    assert TcbStatus.REVOKED.severity > TcbStatus.OUT_OF_DATE.severity > TcbStatus.UP_TO_DATE.severity


@pytest.mark.parametrize("text,expected", [
    ("2025-06-19T10:56:11Z", 1750330571),
    ("2025-06-19t10:56:11.999z", 1750330571),
    ("2025-06-19 12:56:11+02:00", 1750330571),
])
def test_rfc3339(text: str, expected: int) -> None:
    assert parse_rfc3339(text, "t") == expected


@pytest.mark.parametrize("text", ["2025-06-19", "2025-02-30T00:00:00Z", "2025-06-19T10:56:11", "x"])
def test_rfc3339_malformed(text: str) -> None:
    with pytest.raises(FormatError):
        parse_rfc3339(text, "t")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 20_000), st.integers(0, 7))
def test_bit_flipped_collateral_parses_or_fails_typed(position: int, bit: int) -> None:
    raw = bytearray(_text("tdx_quote_collateral.json").encode())
    raw[position % len(raw)] ^= 1 << bit
    try:
        collateral = Collateral.from_json(bytes(raw))
        parse_tcb_info(collateral.tcb_info)
        parse_qe_identity(collateral.qe_identity)
    except FormatError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20))
def test_arbitrary_json_values_only_raise_format_errors(value: object) -> None:
    text = json.dumps(value)
    for parse in (Collateral.from_json, parse_tcb_info, parse_qe_identity):
        try:
            parse(text)  # type: ignore[operator]
        except FormatError:
            pass
