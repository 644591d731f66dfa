"""AMD SEV-SNP report verification: the VCEK (or VLEK) signature over the report, the
VCEK → ASK → ARK chain up to the configured (trusted) ARK, and the VCEK's TCB/chip extensions
against the report — as go-sev-guest's verifier checks them. Raises VerificationError subclasses.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from inclavare.crypto.signatures import verify_p384_sha384
from inclavare.errors import (
    CertificateChainError,
    FormatError,
    SignatureError,
    VerificationError,
)
from inclavare.formats.der import INTEGER, DerReader
from inclavare.formats.rfc3339 import unix_seconds
from inclavare.formats.snp import (
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    VCEK_HWID_OID,
    VCEK_SPL_OIDS,
    SnpReport,
    parse_snp_report,
)


class MalformedSnpReport(VerificationError, FormatError):
    """The evidence is not a well-formed SNP attestation report."""


@dataclass(frozen=True, slots=True)
class VerifiedSnp:
    """A verified SNP report and its claims (byte fields as lowercase hex in ``claims``)."""

    report: SnpReport
    signing_key: str

    @property
    def report_data(self) -> bytes:
        return self.report.report_data

    @property
    def claims(self) -> dict[str, Any]:
        r = self.report
        return {
            "version": r.version, "guest_svn": r.guest_svn, "policy": r.policy,
            "debug": r.debug_allowed, "migrate_ma": r.migrate_ma_allowed, "vmpl": r.vmpl,
            "measurement": r.measurement.hex(), "report_data": r.report_data.hex(),
            "host_data": r.host_data.hex(), "family_id": r.family_id.hex(), "image_id": r.image_id.hex(),
            "id_key_digest": r.id_key_digest.hex(), "author_key_digest": r.author_key_digest.hex(),
            "report_id": r.report_id.hex(), "chip_id": r.chip_id.hex(), "platform_info": r.platform_info,
            "reported_tcb_bootloader": r.reported_tcb.bootloader, "reported_tcb_tee": r.reported_tcb.tee,
            "reported_tcb_snp": r.reported_tcb.snp, "reported_tcb_microcode": r.reported_tcb.microcode,
            "signing_key": self.signing_key,
        }


def _check_validity(cert: x509.Certificate, now: dt.datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateChainError(f"{what} certificate is not valid at {now.isoformat()}")


def _issued_by(child: x509.Certificate, parent: x509.Certificate, what: str) -> None:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateChainError(f"{what} is not signed by its issuer: {exc}") from exc


def _spl(cert: x509.Certificate, oid: str) -> int | None:
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise CertificateChainError(f"unexpected VCEK extension {oid}")
    try:
        reader = DerReader(value.value)
        raw = reader.expect_value(INTEGER, oid)
        reader.finish(oid)
    except FormatError as exc:
        raise CertificateChainError(f"malformed VCEK extension {oid}: {exc}") from exc
    return int.from_bytes(raw, "big", signed=True)


def _check_chain(vcek: x509.Certificate, ask_ark: Sequence[x509.Certificate], now: dt.datetime) -> None:
    arks = [c for c in ask_ark if c.subject == c.issuer]
    if not arks:
        raise CertificateChainError("no ARK (self-signed AMD root key) in the configured chain")
    ask = next((c for c in ask_ark if c.subject == vcek.issuer and c.subject != c.issuer), None)
    if ask is None:
        raise CertificateChainError("no ASK/ASVK issuing the VCEK in the configured chain")
    ark = next((a for a in arks if a.subject == ask.issuer), None)
    if ark is None:
        raise CertificateChainError("the ASK is not issued by a configured ARK")
    _issued_by(ark, ark, "ARK")
    _issued_by(ask, ark, "ASK")
    _issued_by(vcek, ask, "VCEK")
    for cert, what in ((ark, "ARK"), (ask, "ASK"), (vcek, "VCEK")):
        _check_validity(cert, now, what)
    for cert, what in ((ark, "ARK"), (ask, "ASK")):
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            continue
        if not constraints.ca:
            raise CertificateChainError(f"{what} is not a CA certificate")


def _check_signature(report: SnpReport, vcek: x509.Certificate) -> None:
    if report.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        raise SignatureError(f"unsupported SNP signature algorithm {report.signature_algo}")
    r = int.from_bytes(report.signature_r, "little")
    s = int.from_bytes(report.signature_s, "little")
    try:
        verify_p384_sha384(vcek.public_key(), report.signed_bytes, r, s)
    except SignatureError as exc:
        raise SignatureError(f"SNP report signature (by the VCEK) is invalid: {exc}") from None


def _check_vcek_binding(report: SnpReport, vcek: x509.Certificate) -> None:
    tcb = report.reported_tcb
    for name, oid in VCEK_SPL_OIDS.items():
        certified, reported = _spl(vcek, oid), getattr(tcb, name)
        if certified is not None and certified != reported:
            raise VerificationError(f"reported TCB {name} SPL {reported} differs from the VCEK's {certified}")
    try:
        hwid = vcek.extensions.get_extension_for_oid(x509.ObjectIdentifier(VCEK_HWID_OID)).value
    except x509.ExtensionNotFound:
        return
    if isinstance(hwid, x509.UnrecognizedExtension) and report.signer_info & 2 == 0 \
            and hwid.value != report.chip_id:
        raise VerificationError("the report's CHIP_ID differs from the VCEK's hardware id")


def verify_snp_report(
    report: bytes | SnpReport,
    *,
    vcek: x509.Certificate,
    ask_ark: Sequence[x509.Certificate],
    now: dt.datetime | None = None,
) -> VerifiedSnp:
    """Verify an SNP report with its VCEK and the trusted AMD ASK/ARK chain at ``now``
    (default: the current time). Raises VerificationError subclasses."""
    moment = now or dt.datetime.now(dt.timezone.utc)
    unix_seconds(moment)  # rejects naive datetimes
    if isinstance(report, SnpReport):
        parsed = report
    else:
        try:
            parsed = parse_snp_report(report)
        except FormatError as exc:
            raise MalformedSnpReport(f"malformed SNP report: {exc}") from exc
    if parsed.signing_key == "none":
        raise SignatureError("the SNP report is not signed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check_chain(vcek, ask_ark, moment)
        _check_signature(parsed, vcek)
        _check_vcek_binding(parsed, vcek)
    return VerifiedSnp(parsed, parsed.signing_key)
