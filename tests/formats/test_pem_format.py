"""PEM chains read exactly as the reference DCAP verifier reads them."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inclavare.errors import FormatError
from inclavare.formats.pem import decode_canonical_base64, encode_pem, parse_pem_blocks

DER = bytes(range(200))


def test_round_trip_and_order() -> None:
    text = encode_pem("CERTIFICATE", DER) + "junk between blocks\n" + encode_pem("OTHER", b"x")
    blocks = parse_pem_blocks(text)
    assert [(b.label, b.contents) for b in blocks] == [("CERTIFICATE", DER), ("OTHER", b"x")]


def test_incomplete_trailing_block_is_dropped_not_fatal() -> None:
    text = encode_pem("CERTIFICATE", DER) + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERT"
    assert len(parse_pem_blocks(text)) == 1
    assert parse_pem_blocks(encode_pem("CERTIFICATE", DER) + "\0") == parse_pem_blocks(encode_pem("CERTIFICATE", DER))


def test_a_malformed_complete_block_fails_the_chain() -> None:
    good = encode_pem("CERTIFICATE", DER)
    with pytest.raises(FormatError, match="label"):
        parse_pem_blocks(good + good.replace("END CERTIFICATE", "END CERTIFICATF"))
    with pytest.raises(FormatError, match="base64"):
        parse_pem_blocks(good + good.replace("AAEC", "AA!C", 1))


@pytest.mark.parametrize("space", ["\x0b", "\x0c", "\r", "\t", " ", "\u2028", "\xa0"])
def test_unicode_whitespace_inside_base64_is_ignored(space: str) -> None:
    lines = encode_pem("CERTIFICATE", DER).split("\n")
    text = lines[0] + "\n" + lines[1][:10] + space + lines[1][10:] + "\n" + "\n".join(lines[2:])
    assert parse_pem_blocks(text)[0].contents == DER


@pytest.mark.parametrize("separator", ["\x1c", "\x1d", "\x1e", "\x1f"])
def test_python_only_whitespace_is_not_whitespace(separator: str) -> None:
    lines = encode_pem("CERTIFICATE", DER).split("\n")
    text = lines[0] + "\n" + lines[1] + separator + "\n" + "\n".join(lines[2:])
    with pytest.raises(FormatError):
        parse_pem_blocks(text)


def test_base64_must_be_canonical() -> None:
    assert decode_canonical_base64("QQ==") == b"A"
    for bad in ("QR==", "QUJ=", "QQ=", "QQ", "Q===", "QQ==QQ==", "Q Q=="):
        with pytest.raises(FormatError):
            decode_canonical_base64(bad)


def test_reference_scanner_quirk_six_dashes() -> None:
    # The reference scanner does not backtrack: "------BEGIN " is not found.
    text = "-" + encode_pem("CERTIFICATE", DER)
    assert parse_pem_blocks(text) == ()


def test_headers_are_accepted_when_well_formed() -> None:
    body = base64.b64encode(DER).decode()
    text = f"-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\n{body}\n-----END CERTIFICATE-----\n"
    block = parse_pem_blocks(text)[0]
    assert block.contents == DER and block.headers == ("Proc-Type: 4,ENCRYPTED",)
    with pytest.raises(FormatError, match="header"):
        parse_pem_blocks(text.replace("Proc-Type: 4", "ProcType 4"))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_only_raise_format_errors(data: bytes) -> None:
    try:
        parse_pem_blocks(data)
    except FormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 7))
def test_single_bit_flips_of_a_chain_parse_or_fail_typed(position: int, bit: int) -> None:
    text = bytearray((encode_pem("CERTIFICATE", DER) * 3).encode())
    text[position % len(text)] ^= 1 << bit
    try:
        parse_pem_blocks(bytes(text))
    except FormatError:
        pass
