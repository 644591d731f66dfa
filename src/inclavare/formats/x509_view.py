"""X.509 certificates and CRLs read with webpki's acceptance rules.

The reference DCAP verifier validates PCK and collateral chains with (a fork of) webpki, which is
stricter than a general X.509 library in specific ways: version 3 only, signature algorithm
inside and outside the TBS identical, unknown *critical* extensions fatal, a CRL must be v2 with
``nextUpdate`` and extensions, times only as ``…Z``. Reading certificates the same way keeps the
verdicts identical. Names are kept as raw DER (webpki compares them byte-for-byte).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass

from inclavare.formats.der import (
    BIT_STRING,
    BOOLEAN,
    CONTEXT_0,
    CONTEXT_3,
    GENERALIZED_TIME,
    INTEGER,
    MAX_DER_SIZE,
    OCTET_STRING,
    OID,
    SEQUENCE,
    UTC_TIME,
    DerError,
    DerReader,
    bit_string_no_unused,
    parse_boolean,
    parse_small_uint,
)

_ID_CE = b"\x55\x1d"


def _read_time(reader: DerReader) -> int:
    tag = reader.peek_tag()
    utc = tag == UTC_TIME
    text = reader.expect_value(UTC_TIME if utc else GENERALIZED_TIME, "time")
    digits = text[:-1]
    if not text.endswith(b"Z") or len(digits) != (12 if utc else 14) or not digits.isdigit():
        raise DerError("DER: malformed time")
    pos = 0
    if utc:
        year = int(digits[0:2])
        year += 1900 if year >= 50 else 2000
        pos = 2
    else:
        year = int(digits[0:4])
        pos = 4
    month, day, hour, minute, second = (int(digits[pos + 2 * i:pos + 2 * i + 2]) for i in range(5))
    if year < 1970 or not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1] \
            or hour > 23 or minute > 59 or second > 59:
        raise DerError("DER: invalid time value")
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


@dataclass(frozen=True, slots=True)
class Extension:
    oid: bytes
    critical: bool
    value: bytes


def _read_extension(reader: DerReader) -> Extension:
    ext = reader.nested(SEQUENCE, "extension")
    oid = ext.expect_value(OID, "extension id")
    critical = False
    if ext.peek_tag() == BOOLEAN:
        critical = parse_boolean(ext.expect_value(BOOLEAN, "critical"))
    value = ext.expect_value(OCTET_STRING, "extension value")
    ext.finish("extension")
    return Extension(oid, critical, value)


@dataclass(frozen=True, slots=True)
class SignedData:
    """What a signature covers (the full TBS TLV), its algorithm (AlgorithmIdentifier contents)
    and the signature bits."""

    data: bytes
    algorithm: bytes
    signature: bytes


def _read_signed(der: bytes, limit: int, what: str) -> tuple[SignedData, DerReader]:
    outer = DerReader(der)
    body = outer.nested(SEQUENCE, what, limit)
    outer.finish(what)
    tag, tlv_start, start, end = body.read_tlv(limit)
    if tag != SEQUENCE:
        raise DerError(f"DER: {what} TBS is not a SEQUENCE")
    algorithm = body.expect_value(SEQUENCE, "signature algorithm")
    signature = bit_string_no_unused(body.expect_value(BIT_STRING, "signature"), "signature")
    body.finish(what)
    return SignedData(der[tlv_start:end], algorithm, signature), DerReader(der, start, end)


@dataclass(frozen=True, slots=True)
class CertificateView:
    """A certificate's fields as path validation needs them. ``extensions`` keeps every
    extension (for the SGX PCK and AMD VCEK extensions); the id-ce ones webpki interprets are
    split out and were checked for duplicates."""

    der: bytes
    signed: SignedData
    serial: bytes
    issuer: bytes
    subject: bytes
    spki: bytes
    not_before: int
    not_after: int
    basic_constraints: bytes | None
    key_usage: bytes | None
    extended_key_usage: bytes | None
    name_constraints: bytes | None
    subject_alt_name: bytes | None
    crl_distribution_points: bytes | None
    extensions: tuple[Extension, ...]

    @classmethod
    def parse(cls, der: bytes) -> CertificateView:
        signed, tbs = _read_signed(der, 0xFFFF, "certificate")
        version = tbs.nested(CONTEXT_0, "version")
        if parse_small_uint(version.expect_value(INTEGER, "version"), "version") != 2:
            raise DerError("certificate is not X.509 v3")
        version.finish("version")
        serial = tbs.expect_value(INTEGER, "serial number")
        if tbs.expect_value(SEQUENCE, "TBS signature algorithm") != signed.algorithm:
            raise DerError("certificate signature algorithm differs inside and outside the TBS")
        issuer = tbs.expect_value(SEQUENCE, "issuer")
        validity = tbs.nested(SEQUENCE, "validity")
        not_before = _read_time(validity)
        not_after = _read_time(validity)
        validity.finish("validity")
        subject = tbs.expect_value(SEQUENCE, "subject")
        spki = tbs.expect_value(SEQUENCE, "subject public key info")
        known: dict[int, bytes] = {}
        extensions: list[Extension] = []
        if not tbs.at_end():
            wrapper = tbs.nested(CONTEXT_3, "extensions")
            seq = wrapper.nested(SEQUENCE, "extensions")
            wrapper.finish("extensions")
            while not seq.at_end():
                ext = _read_extension(seq)
                extensions.append(ext)
                if len(ext.oid) == 3 and ext.oid.startswith(_ID_CE) and ext.oid[2] in (15, 17, 19, 30, 31, 37):
                    number = ext.oid[2]
                    if number in known:
                        raise DerError("duplicate certificate extension")
                    if number == 15:
                        known[number] = ext.value
                    else:
                        inner = DerReader(ext.value)
                        known[number] = inner.expect_value(SEQUENCE, "extension value")
                        inner.finish("extension value")
                elif ext.critical:
                    raise DerError("unsupported critical certificate extension")
        tbs.finish("TBS certificate")
        if not_before > not_after:
            raise DerError("certificate notBefore is after notAfter")
        return cls(der, signed, serial, issuer, subject, spki, not_before, not_after,
                   known.get(19), known.get(15), known.get(37), known.get(30), known.get(17),
                   known.get(31), tuple(extensions))

    def extension(self, oid: bytes) -> Extension | None:
        """The extension with this OID (content octets); DerError if it appears twice."""
        found = [e for e in self.extensions if e.oid == oid]
        if len(found) > 1:
            raise DerError("extension appears more than once")
        return found[0] if found else None


@dataclass(frozen=True, slots=True)
class CrlView:
    """A v2 CRL as webpki accepts it: issuer (raw), nextUpdate, the revoked serials."""

    der: bytes
    signed: SignedData
    issuer: bytes
    this_update: int
    next_update: int
    revoked_serials: frozenset[bytes]
    crl_number: int | None

    @classmethod
    def parse(cls, der: bytes) -> CrlView:
        signed, tbs = _read_signed(der, MAX_DER_SIZE, "CRL")
        if parse_small_uint(tbs.expect_value(INTEGER, "CRL version"), "CRL version") != 1:
            raise DerError("CRL is not version 2")
        if tbs.expect_value(SEQUENCE, "CRL TBS signature algorithm") != signed.algorithm:
            raise DerError("CRL signature algorithm differs inside and outside the TBS")
        issuer = tbs.expect_value(SEQUENCE, "CRL issuer")
        this_update = _read_time(tbs)
        next_update = _read_time(tbs)
        serials: set[bytes] = set()
        if tbs.peek_tag() == SEQUENCE:
            revoked = tbs.nested(SEQUENCE, "revoked certificates", MAX_DER_SIZE)
            while not revoked.at_end():
                entry = revoked.nested(SEQUENCE, "revoked certificate")
                serials.add(entry.expect_value(INTEGER, "revoked serial"))
                _read_time(entry)
                if not entry.at_end():
                    entry_exts = entry.nested(SEQUENCE, "CRL entry extensions")
                    while not entry_exts.at_end():
                        ext = _read_extension(entry_exts)
                        is_ce = len(ext.oid) == 3 and ext.oid.startswith(_ID_CE)
                        if is_ce and ext.oid[2] == 29:
                            raise DerError("indirect CRLs (certificate issuer entries) are not supported")
                        if ext.critical and not (is_ce and ext.oid[2] in (21, 24)):
                            raise DerError("unsupported critical CRL entry extension")
                entry.finish("revoked certificate")
        wrapper = tbs.nested(CONTEXT_0, "CRL extensions")
        exts = wrapper.nested(SEQUENCE, "CRL extensions")
        wrapper.finish("CRL extensions")
        if exts.at_end():
            raise DerError("CRL extensions are empty")
        crl_number: int | None = None
        seen: set[int] = set()
        while not exts.at_end():
            ext = _read_extension(exts)
            if len(ext.oid) == 3 and ext.oid.startswith(_ID_CE):
                number = ext.oid[2]
                if number == 20:
                    inner = DerReader(ext.value)
                    raw = inner.expect_value(INTEGER, "CRL number")
                    inner.finish("CRL number")
                    value = parse_small_uint(raw, "CRL number")
                    if len(raw.lstrip(b"\x00") or b"\x00") > 20:
                        raise DerError("CRL number is longer than 20 octets")
                    crl_number = value
                    continue
                if number == 27:
                    raise DerError("delta CRLs are not supported")
                if number == 28:
                    # Issuing distribution points narrow a CRL's scope; Intel's and the
                    # simulated CRLs carry none, and scoped CRLs are refused (fail closed).
                    if 28 in seen:
                        raise DerError("duplicate issuing distribution point")
                    seen.add(28)
                    raise DerError("CRLs with an issuing distribution point are not supported")
                if number == 35:
                    continue
            if ext.critical:
                raise DerError("unsupported critical CRL extension")
        tbs.finish("TBS CRL")
        return cls(der, signed, issuer, this_update, next_update, frozenset(serials), crl_number)
