"""A strict DER reader (single-byte tags, minimal definite lengths), for X.509 parsing with the
same acceptance rules as webpki, which the reference DCAP verifier builds on."""

from __future__ import annotations

from inclavare.errors import FormatError

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
BOOLEAN = 0x01
ENUMERATED = 0x0A
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
CONTEXT_0 = 0xA0
CONTEXT_3 = 0xA3

MAX_DER_SIZE = (1 << 32) - 1
# webpki reads most values with a two-byte length limit (lengths >= 0xFFFF are refused).
TWO_BYTE_DER_SIZE = 0xFFFF


class DerError(FormatError):
    """Malformed DER."""


class DerReader:
    """Reads consecutive TLVs from ``data[start:end]``."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end

    def at_end(self) -> bool:
        return self.pos >= self.end

    def peek_tag(self) -> int | None:
        return self.data[self.pos] if self.pos < self.end else None

    def read_tlv(self, limit: int = TWO_BYTE_DER_SIZE) -> tuple[int, int, int, int]:
        """Returns (tag, tlv_start, value_start, value_end)."""
        data, pos, end = self.data, self.pos, self.end
        tlv_start = pos
        if pos + 2 > end:
            raise DerError("DER: truncated TLV")
        tag = data[pos]
        if tag & 0x1F == 0x1F:
            raise DerError("DER: high tag numbers are not supported")
        first = data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or pos + count > end:
                raise DerError("DER: bad length encoding")
            length = int.from_bytes(data[pos:pos + count], "big")
            if length < (0x80 if count == 1 else 1 << (8 * (count - 1))):
                raise DerError("DER: non-minimal length")
            pos += count
        if length >= limit or pos + length > end:
            raise DerError("DER: length exceeds the enclosing data")
        self.pos = pos + length
        return tag, tlv_start, pos, pos + length

    def expect(self, tag: int, what: str, limit: int = TWO_BYTE_DER_SIZE) -> tuple[int, int]:
        """Read a TLV of the given tag; returns (value_start, value_end)."""
        got, _, start, end = self.read_tlv(limit)
        if got != tag:
            raise DerError(f"DER: expected tag {tag:#04x} for {what}, got {got:#04x}")
        return start, end

    def expect_value(self, tag: int, what: str) -> bytes:
        start, end = self.expect(tag, what)
        return self.data[start:end]

    def nested(self, tag: int, what: str, limit: int = TWO_BYTE_DER_SIZE) -> DerReader:
        start, end = self.expect(tag, what, limit)
        return DerReader(self.data, start, end)

    def finish(self, what: str) -> None:
        if self.pos != self.end:
            raise DerError(f"DER: trailing data after {what}")


def parse_boolean(value: bytes) -> bool:
    if value == b"\xff":
        return True
    if value == b"\x00":
        return False
    raise DerError("DER: invalid BOOLEAN")


def parse_small_uint(value: bytes, what: str) -> int:
    """A non-negative INTEGER in minimal two's-complement encoding."""
    if not value or (len(value) > 1 and value[0] == 0 and value[1] < 0x80) or value[0] >= 0x80:
        raise DerError(f"DER: invalid non-negative INTEGER for {what}")
    return int.from_bytes(value, "big")


def bit_string_no_unused(value: bytes, what: str) -> bytes:
    if not value or value[0] != 0:
        raise DerError(f"DER: {what} must be a BIT STRING without unused bits")
    return value[1:]


def oid_text(encoded: bytes) -> str:
    """Dotted text of an OID's content octets."""
    if not encoded or encoded[-1] & 0x80:
        raise DerError("DER: malformed OID")
    arcs: list[int] = []
    value = 0
    for byte in encoded:
        if value == 0 and byte == 0x80:
            raise DerError("DER: non-minimal OID arc")
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def encode_oid(dotted: str) -> bytes:
    """Content octets of an OID given in dotted form."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1]] + arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def encode_tlv(tag: int, content: bytes) -> bytes:
    """One DER TLV (definite, minimal length)."""
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def encode_sequence(*items: bytes) -> bytes:
    return encode_tlv(SEQUENCE, b"".join(items))


def encode_integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("only non-negative INTEGERs are encoded here")
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return encode_tlv(INTEGER, raw)


def encode_enumerated(value: int) -> bytes:
    return encode_tlv(ENUMERATED, encode_integer(value)[2:])


def encode_boolean(value: bool) -> bytes:
    return encode_tlv(BOOLEAN, b"\xff" if value else b"\x00")


def encode_octets(value: bytes) -> bytes:
    return encode_tlv(OCTET_STRING, value)


def encode_object_identifier(dotted: str) -> bytes:
    return encode_tlv(OID, encode_oid(dotted))
