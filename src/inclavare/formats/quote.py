"""Intel DCAP ECDSA quotes: SGX quote v3, TDX quote v4 and v5 (TD report body types 2 and 3).

Parsing follows the wire layout Intel's QVL and dcap-qvl read (``sgx_quote_3/4/5.h``): header,
(v5: body type and size,) report body, ``u32`` signature-data length, then the ECDSA auth data.
Like those verifiers, bytes past a declared length are not interpreted: the quote may carry zero
padding after its signature data, the auth data may carry bytes after its certification data.
They are kept in ``trailing`` fields so :meth:`Quote.to_bytes` reproduces the input byte-exactly;
none of them is covered by a signature or consulted by verification (see docs/verify.md).

The certification data of v4/v5 quotes is the type-6 wrapper (QE report certification data)
around the inner type-5 PEM chain; v3 carries the QE report and the type-5 chain directly.
:class:`AuthData` presents both the same way.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from inclavare.errors import FormatError
from inclavare.tee.registry import SGX, TDX
from inclavare.formats.byte_reader import ByteReader, u16le, u32le
from inclavare.formats.report_body import (
    SGX_REPORT_BODY_SIZE,
    TD_REPORT10_SIZE,
    TD_REPORT15_SIZE,
    EnclaveReport,
    ReportBody,
    TdReport10,
    TdReport15,
)

HEADER_SIZE = 48
BODY_DESCRIPTOR_SIZE = 6
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
ATTESTATION_KEY_TYPE_ECDSA_P256 = 2
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

BODY_TYPE_SGX = 1
BODY_TYPE_TD10 = 2
BODY_TYPE_TD15 = 3

CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6

# Variable-length fields larger than this are refused before any allocation (dcap-qvl uses the
# same bound); real quotes carry a few kilobytes.
MAX_DATA_LENGTH = 1 << 20

_HEADER = struct.Struct("<HHIHH16s20s")
_BODY_SIZES = {BODY_TYPE_SGX: SGX_REPORT_BODY_SIZE, BODY_TYPE_TD10: TD_REPORT10_SIZE,
               BODY_TYPE_TD15: TD_REPORT15_SIZE}


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    """The 48-byte quote header. For v4/v5 bytes 8..12 are reserved; they are kept as the two
    ``u16`` fields the v3 layout names (``qe_svn``, ``pce_svn``) so the header round-trips."""

    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    def __post_init__(self) -> None:
        for name, bits in (("version", 16), ("attestation_key_type", 16), ("tee_type", 32),
                           ("qe_svn", 16), ("pce_svn", 16)):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < (1 << bits):
                raise FormatError(f"QuoteHeader.{name} must be an unsigned {bits}-bit int")
        if len(self.qe_vendor_id) != 16 or len(self.user_data) != 20:
            raise FormatError("QuoteHeader: qe_vendor_id must be 16 bytes and user_data 20")

    @classmethod
    def from_bytes(cls, data: bytes) -> QuoteHeader:
        if len(data) != HEADER_SIZE:
            raise FormatError(f"quote header must be {HEADER_SIZE} bytes")
        return cls(*_HEADER.unpack(data))

    def to_bytes(self) -> bytes:
        return _HEADER.pack(self.version, self.attestation_key_type, self.tee_type, self.qe_svn,
                            self.pce_svn, self.qe_vendor_id, self.user_data)

    @property
    def qe_id(self) -> bytes:
        """The QE's platform-unique id (first 16 bytes of user_data)."""
        return self.user_data[:16]


@dataclass(frozen=True, slots=True)
class CertificationData:
    """``cert_type u16 ‖ size u32 ‖ body``. Type 5 = concatenated PEM PCK chain."""

    cert_type: int
    body: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.cert_type <= 0xFFFF:
            raise FormatError("CertificationData.cert_type must fit in 16 bits")
        if len(self.body) > MAX_DATA_LENGTH:
            raise FormatError("CertificationData.body is too large")

    def to_bytes(self) -> bytes:
        return u16le(self.cert_type) + u32le(len(self.body)) + self.body

    @classmethod
    def read(cls, reader: ByteReader) -> CertificationData:
        cert_type = reader.u16("certification data type")
        size = reader.u32("certification data size")
        if size > MAX_DATA_LENGTH:
            raise FormatError(f"certification data declares {size} bytes (limit {MAX_DATA_LENGTH})")
        return cls(cert_type, reader.take(size, "certification data"))


@dataclass(frozen=True, slots=True)
class QeReportCertificationData:
    """What the quoting enclave contributes: its REPORT (signed by the PCK key), that signature,
    the QE authentication data and the certification data (PCK chain) vouching for the PCK key.

    In v4/v5 quotes this is the body of certification data type 6; ``trailing`` holds any bytes
    of that body after the inner certification data."""

    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data: CertificationData
    trailing: bytes = b""

    def __post_init__(self) -> None:
        if len(self.qe_report_signature) != 64:
            raise FormatError("QE report signature must be 64 bytes (r‖s)")
        if len(self.qe_auth_data) > 0xFFFF:
            raise FormatError("QE authentication data must fit a u16 length")

    @classmethod
    def read(cls, reader: ByteReader) -> QeReportCertificationData:
        qe_report = EnclaveReport.from_bytes(reader.take(SGX_REPORT_BODY_SIZE, "QE report"))
        signature = reader.take(64, "QE report signature")
        auth_len = reader.u16("QE authentication data size")
        auth = reader.take(auth_len, "QE authentication data")
        cert = CertificationData.read(reader)
        return cls(qe_report, signature, auth, cert)

    def to_bytes(self) -> bytes:
        return (self.qe_report.to_bytes() + self.qe_report_signature + u16le(len(self.qe_auth_data))
                + self.qe_auth_data + self.certification_data.to_bytes() + self.trailing)


@dataclass(frozen=True, slots=True)
class AuthData:
    """ECDSA signature data: the quote signature, the attestation public key (x‖y) and the QE's
    certification. ``wrapper_cert_type`` is the type of the v4/v5 outer certification data
    (6; not consulted by verifiers) and ``None`` for v3. ``trailing``: bytes after the
    certification data inside the declared signature-data length."""

    ecdsa_signature: bytes
    attestation_key: bytes
    qe: QeReportCertificationData
    wrapper_cert_type: int | None = None
    trailing: bytes = b""

    def __post_init__(self) -> None:
        if len(self.ecdsa_signature) != 64 or len(self.attestation_key) != 64:
            raise FormatError("quote signature and attestation key must be 64 bytes each")

    @classmethod
    def read(cls, data: bytes, *, wrapped: bool) -> AuthData:
        reader = ByteReader(data, "quote signature data")
        signature = reader.take(64, "quote signature")
        key = reader.take(64, "attestation key")
        if wrapped:
            outer = CertificationData.read(reader)
            inner_reader = ByteReader(outer.body, "QE report certification data")
            qe = QeReportCertificationData.read(inner_reader)
            qe = QeReportCertificationData(qe.qe_report, qe.qe_report_signature, qe.qe_auth_data,
                                           qe.certification_data, inner_reader.rest())
            return cls(signature, key, qe, outer.cert_type, reader.rest())
        qe = QeReportCertificationData.read(reader)
        return cls(signature, key, qe, None, reader.rest())

    def to_bytes(self) -> bytes:
        if self.wrapper_cert_type is None:
            return self.ecdsa_signature + self.attestation_key + self.qe.to_bytes() + self.trailing
        wrapper = CertificationData(self.wrapper_cert_type, self.qe.to_bytes())
        return self.ecdsa_signature + self.attestation_key + wrapper.to_bytes() + self.trailing


@dataclass(frozen=True, slots=True)
class Quote:
    """A parsed DCAP quote. ``trailing``: bytes after the declared signature data (real TDX
    quotes carry zero padding there)."""

    header: QuoteHeader
    report: ReportBody
    auth_data: AuthData
    trailing: bytes = b""

    SUPPORTED_VERSIONS: ClassVar[tuple[int, ...]] = (3, 4, 5)

    def __post_init__(self) -> None:
        version = self.header.version
        if version not in self.SUPPORTED_VERSIONS:
            raise FormatError(f"unsupported quote version {version}")
        wrapped = self.auth_data.wrapper_cert_type is not None
        if version == 3 and (not isinstance(self.report, EnclaveReport) or wrapped):
            raise FormatError("quote v3 carries an SGX report body and unwrapped QE certification data")
        if version != 3 and not wrapped:
            raise FormatError(f"quote v{version} wraps the QE certification data (type 6)")
        if version == 4 and isinstance(self.report, TdReport15):
            raise FormatError("quote v4 cannot carry a TD 1.5 report body")

    @property
    def tee(self) -> str:
        """The registry name of the quote's TEE (by its report body)."""
        return SGX.name if isinstance(self.report, EnclaveReport) else TDX.name

    @property
    def body_type(self) -> int:
        if isinstance(self.report, EnclaveReport):
            return BODY_TYPE_SGX
        return BODY_TYPE_TD15 if isinstance(self.report, TdReport15) else BODY_TYPE_TD10

    @property
    def signed_length(self) -> int:
        """Length of the prefix the attestation key signs: header (+ v5 body descriptor) + body."""
        extra = BODY_DESCRIPTOR_SIZE if self.header.version == 5 else 0
        return HEADER_SIZE + extra + _BODY_SIZES[self.body_type]

    def signed_bytes(self) -> bytes:
        head = self.header.to_bytes()
        if self.header.version == 5:
            head += u16le(self.body_type) + u32le(_BODY_SIZES[self.body_type])
        return head + self.report.to_bytes()

    def to_bytes(self) -> bytes:
        auth = self.auth_data.to_bytes()
        return self.signed_bytes() + u32le(len(auth)) + auth + self.trailing

    @property
    def pck_chain_pem(self) -> bytes:
        """The type-5 certification data body, or FormatError for other certification types."""
        cert = self.auth_data.qe.certification_data
        if cert.cert_type != CERT_TYPE_PCK_CHAIN:
            raise FormatError(f"unsupported certification data type {cert.cert_type} (need 5, PEM chain)")
        return cert.body


def parse_quote(data: bytes) -> Quote:
    """Parse a raw DCAP quote (binary; see ``inclavare.formats.evidence`` for hex/base64)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError("a quote is bytes")
    data = bytes(data)
    reader = ByteReader(data, "quote")
    header = QuoteHeader.from_bytes(reader.take(HEADER_SIZE, "header"))
    version = header.version
    report: ReportBody
    if version == 3:
        if header.tee_type != TEE_TYPE_SGX:
            raise FormatError(f"quote v3 with TEE type {header.tee_type:#x} (expected SGX)")
        report = EnclaveReport.from_bytes(reader.take(SGX_REPORT_BODY_SIZE, "SGX report body"))
    elif version == 4:
        if header.tee_type == TEE_TYPE_SGX:
            report = EnclaveReport.from_bytes(reader.take(SGX_REPORT_BODY_SIZE, "SGX report body"))
        elif header.tee_type == TEE_TYPE_TDX:
            report = TdReport10.from_bytes(reader.take(TD_REPORT10_SIZE, "TD report body"))
        else:
            raise FormatError(f"quote v4 with unknown TEE type {header.tee_type:#x}")
    elif version == 5:
        body_type = reader.u16("body type")
        body_size = reader.u32("body size")
        expected = _BODY_SIZES.get(body_type)
        if expected is None:
            raise FormatError(f"unsupported quote v5 body type {body_type}")
        if body_size != expected:
            raise FormatError(f"quote v5 body type {body_type} declares size {body_size}, expected {expected}")
        raw_body = reader.take(body_size, "report body")
        report = (EnclaveReport.from_bytes(raw_body) if body_type == BODY_TYPE_SGX
                  else TdReport15.from_bytes(raw_body) if body_type == BODY_TYPE_TD15
                  else TdReport10.from_bytes(raw_body))
    else:
        raise FormatError(f"unsupported quote version {version}")
    sig_len = reader.u32("signature data length")
    if sig_len > MAX_DATA_LENGTH:
        raise FormatError(f"signature data declares {sig_len} bytes (limit {MAX_DATA_LENGTH})")
    auth = AuthData.read(reader.take(sig_len, "signature data"), wrapped=version != 3)
    return Quote(header, report, auth, reader.rest())


Signer = Callable[[bytes], bytes]
"""Signs a message, returning the 64-byte raw ``r‖s`` ECDSA-P256/SHA-256 signature."""


def build_quote(
    header: QuoteHeader,
    report: ReportBody,
    *,
    attestation_key: bytes,
    sign: Signer,
    qe: QeReportCertificationData,
) -> Quote:
    """Assemble and sign a quote: ``sign`` is the attestation key's signer over the signed prefix
    (header [+ v5 body descriptor] + report body). v3 for SGX bodies, v4/v5 wrap ``qe`` in
    certification data type 6."""
    unsigned = Quote(header, report,
                     AuthData(bytes(64), attestation_key, qe,
                              None if header.version == 3 else CERT_TYPE_QE_REPORT))
    signature = sign(unsigned.signed_bytes())
    return Quote(header, report, AuthData(signature, attestation_key, qe, unsigned.auth_data.wrapper_cert_type))


def build_sgx_quote(
    report: EnclaveReport,
    *,
    attestation_key: bytes,
    sign: Signer,
    qe: QeReportCertificationData,
    qe_svn: int = 0,
    pce_svn: int = 0,
    user_data: bytes = bytes(20),
) -> Quote:
    """An SGX ECDSA quote v3 (attestation key type 2, Intel QE vendor id)."""
    header = QuoteHeader(3, ATTESTATION_KEY_TYPE_ECDSA_P256, TEE_TYPE_SGX, qe_svn, pce_svn,
                         INTEL_QE_VENDOR_ID, user_data)
    return build_quote(header, report, attestation_key=attestation_key, sign=sign, qe=qe)


def build_tdx_quote(
    report: TdReport10,
    *,
    attestation_key: bytes,
    sign: Signer,
    qe: QeReportCertificationData,
    version: int = 4,
    user_data: bytes = bytes(20),
) -> Quote:
    """A TDX quote: v4 with a TD 1.0 body, or v5 (body type 2 or 3 by the body's class)."""
    if version not in (4, 5):
        raise FormatError("TDX quotes are version 4 or 5")
    header = QuoteHeader(version, ATTESTATION_KEY_TYPE_ECDSA_P256, TEE_TYPE_TDX, 0, 0,
                         INTEL_QE_VENDOR_ID, user_data)
    return build_quote(header, report, attestation_key=attestation_key, sign=sign, qe=qe)
