"""DCAP quote parsing and building: real quotes, byte-exact round trips, malformed input."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testdata_paths import vector

from inclavare.errors import FormatError
from inclavare.formats.quote import (
    CERT_TYPE_PCK_CHAIN,
    INTEL_QE_VENDOR_ID,
    MAX_DATA_LENGTH,
    QuoteHeader,
    build_quote,
    parse_quote,
)
from inclavare.formats.report_body import EnclaveReport, TdReport10, TdReport15

QUOTES = ("sgx_quote", "tdx_quote", "tdx_quote_outdated")


def _raw(name: str) -> bytes:
    return vector("dcap", name).read_bytes()


@pytest.mark.parametrize("name", QUOTES)
def test_real_quotes_round_trip_byte_exactly(name: str) -> None:
    raw = _raw(name)
    quote = parse_quote(raw)
    assert quote.to_bytes() == raw
    assert quote.signed_bytes() == raw[:quote.signed_length]


def test_sgx_quote_fields() -> None:
    quote = parse_quote(_raw("sgx_quote"))
    assert quote.header.version == 3 and quote.tee == "sgx"
    assert quote.header.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert isinstance(quote.report, EnclaveReport)
    assert quote.report.mr_enclave.hex().startswith("33d8736d")
    assert quote.report.report_data.startswith(b"Hello, world!")
    assert quote.signed_length == 432
    qe = quote.auth_data.qe
    assert len(qe.qe_auth_data) == 32 and qe.certification_data.cert_type == CERT_TYPE_PCK_CHAIN
    assert quote.pck_chain_pem.count(b"BEGIN CERTIFICATE") == 3
    assert quote.auth_data.wrapper_cert_type is None


def test_tdx_v4_keeps_its_zero_padding() -> None:
    quote = parse_quote(_raw("tdx_quote"))
    assert quote.header.version == 4 and quote.tee == "tdx"
    assert type(quote.report) is TdReport10
    assert quote.trailing == bytes(70)
    assert quote.auth_data.wrapper_cert_type == 6
    assert quote.signed_length == 632


def test_tdx_v5_td15_body() -> None:
    quote = parse_quote(_raw("tdx_quote_outdated"))
    assert quote.header.version == 5 and quote.body_type == 3
    assert isinstance(quote.report, TdReport15)
    assert quote.signed_length == 702


def test_builder_reproduces_a_real_quote() -> None:
    raw = _raw("tdx_quote_outdated")
    quote = parse_quote(raw)
    signature = quote.auth_data.ecdsa_signature
    rebuilt = build_quote(quote.header, quote.report, attestation_key=quote.auth_data.attestation_key,
                          sign=lambda message: signature, qe=quote.auth_data.qe)
    assert rebuilt.to_bytes() == raw


def test_builders_validate_field_sizes() -> None:
    body = parse_quote(_raw("sgx_quote")).report
    assert isinstance(body, EnclaveReport)
    with pytest.raises(FormatError):
        dataclasses.replace(body, mr_enclave=b"short")
    with pytest.raises(FormatError):
        QuoteHeader(3, 2, 0, 0, 0, b"\0" * 15, bytes(20))


@pytest.mark.parametrize("name", QUOTES)
def test_every_truncation_is_a_format_error(name: str) -> None:
    raw = _raw(name)
    end = parse_quote(raw).signed_length + 4 + len(parse_quote(raw).auth_data.to_bytes())
    for length in range(0, end):
        with pytest.raises(FormatError):
            parse_quote(raw[:length])


@pytest.mark.parametrize("version", [0, 1, 2, 6, 0xFFFF])
def test_unsupported_versions_are_refused(version: int) -> None:
    raw = bytearray(_raw("sgx_quote"))
    struct.pack_into("<H", raw, 0, version)
    with pytest.raises(FormatError, match="version"):
        parse_quote(bytes(raw))


def test_huge_declared_lengths_are_refused_before_allocation() -> None:
    raw = bytearray(_raw("sgx_quote"))
    struct.pack_into("<I", raw, 432, 0xFFFFFFFF)
    with pytest.raises(FormatError, match="limit"):
        parse_quote(bytes(raw))
    raw = bytearray(_raw("tdx_quote"))
    struct.pack_into("<I", raw, 632 + 4 + 128 + 2, MAX_DATA_LENGTH + 1)
    with pytest.raises(FormatError, match="limit"):
        parse_quote(bytes(raw))


def test_v5_body_descriptor_is_checked() -> None:
    raw = bytearray(_raw("tdx_quote_outdated"))
    struct.pack_into("<I", raw, 50, 649)
    with pytest.raises(FormatError, match="size"):
        parse_quote(bytes(raw))
    struct.pack_into("<HI", raw, 48, 9, 648)
    with pytest.raises(FormatError, match="body type"):
        parse_quote(bytes(raw))


def test_v3_must_be_sgx_and_v4_needs_a_known_tee() -> None:
    raw = bytearray(_raw("sgx_quote"))
    struct.pack_into("<I", raw, 4, 0x81)
    with pytest.raises(FormatError, match="TEE"):
        parse_quote(bytes(raw))
    raw = bytearray(_raw("tdx_quote"))
    struct.pack_into("<I", raw, 4, 5)
    with pytest.raises(FormatError, match="TEE"):
        parse_quote(bytes(raw))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=6000))
def test_random_bytes_only_raise_format_errors(data: bytes) -> None:
    try:
        quote = parse_quote(data)
    except FormatError:
        return
    assert quote.to_bytes() == data


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(QUOTES), st.data())
def test_mutated_real_quotes_parse_exactly_or_fail_typed(name: str, data: st.DataObject) -> None:
    raw = bytearray(_raw(name))
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    candidate = bytes(raw[:cut])
    try:
        quote = parse_quote(candidate)
    except FormatError:
        return
    assert quote.to_bytes() == candidate
