"""AMD SEV-SNP attestation reports: layout, round trip, must-be-zero rules."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testdata_paths import vector

from inclavare.errors import FormatError
from inclavare.formats.snp import REPORT_SIZE, build_snp_report, parse_snp_report


def _raw() -> bytes:
    return vector("snp", "attestation.bin").read_bytes()


def test_real_report_fields() -> None:
    report = parse_snp_report(_raw())
    assert report.version == 2 and report.policy == 0xB0000
    assert report.report_data == bytes([1, 2, 3, 4, 5]) + bytes(59)
    assert report.signature_algo == 1 and report.signing_key == "vcek"
    assert (report.reported_tcb.bootloader, report.reported_tcb.snp, report.reported_tcb.microcode) == (2, 5, 68)
    assert report.to_bytes() == _raw() and report.signed_bytes == _raw()[:0x2A0]
    assert report.debug_allowed and report.cpuid_fms is None


def test_build_v3_round_trips() -> None:
    report = build_snp_report(report_data=b"\1" * 64, measurement=b"\2" * 48, version=3,
                              cpuid_fms=b"\x19\x01\x01")
    again = parse_snp_report(report.to_bytes())
    assert again == report and again.cpuid_fms == b"\x19\x01\x01"


@pytest.mark.parametrize("offset,value", [
    (0x4C, 1), (0x188, 1), (0x1EB, 1), (0x208, 1), (0x2A0 + 144, 1), (0x0A, 0), (0x48, 0x20),
])
def test_must_be_zero_and_reserved_bits(offset: int, value: int) -> None:
    raw = bytearray(_raw())
    if offset == 0x0A:
        struct.pack_into("<Q", raw, 8, 0x10000)  # policy without the must-be-one bit 17
    else:
        raw[offset] |= value
    with pytest.raises(FormatError):
        parse_snp_report(bytes(raw))


@pytest.mark.parametrize("size", [0, 1183, 1185, 4096])
def test_wrong_size(size: int) -> None:
    with pytest.raises(FormatError, match=str(REPORT_SIZE)):
        parse_snp_report(bytes(size))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
def test_random_reports_only_raise_format_errors(data: bytes) -> None:
    try:
        assert parse_snp_report(data).to_bytes() == data
    except FormatError:
        pass
