"""A test PKI that signs arbitrary DCAP quotes and collateral, so the verifier can be compared with
dcap-qvl (``verify_with_root_ca``) on inputs real quotes cannot reach without breaking a
signature: TDX attribute bits, TCB level orderings, revoked serials, validity boundaries…"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from inclavare.crypto.signatures import sign_p256_raw as sign_raw
from inclavare.errors import InclavareError
from inclavare.formats.collateral import Collateral
from inclavare.formats.quote import (
    CERT_TYPE_PCK_CHAIN,
    CertificationData,
    QeReportCertificationData,
    build_sgx_quote,
    build_tdx_quote,
)
from inclavare.formats.report_body import EnclaveReport, TdReport10, TdReport15
from inclavare.formats.rfc3339 import format_rfc3339
from inclavare.tee.sim_pki import (
    PlatformFacts,
    issue_ca,
    issue_crl,
    issue_pck,
    issue_root,
    issue_tcb_signing,
)
from inclavare.verify.dcap import verify_quote

NOW = dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.timezone.utc)
CPU_SVN = bytes([3, 3, 2, 2, 4, 1, 0, 5] + [0] * 8)
PCE_SVN = 11
QE_MRSIGNER = hashlib.sha256(b"lab qe signer").digest()


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


class Lab:
    """One test authority. ``issue``/``lifetime`` control collateral dates."""

    def __init__(self, now: dt.datetime = NOW, cert_lifetime: dt.timedelta = dt.timedelta(days=3650)) -> None:
        self.now = now
        start = now - dt.timedelta(days=1)
        end = start + cert_lifetime
        self.root_key, self.ca_key, self.pck_key, self.tcb_key, self.att_key = (_key() for _ in range(5))
        self.facts = PlatformFacts(ppid=b"\x01" * 16, cpu_svn=CPU_SVN, pce_svn=PCE_SVN, pce_id=bytes(2),
                                   fmspc=bytes.fromhex("00906ED50000"), platform_instance_id=b"\x02" * 16)
        self.root = issue_root(self.root_key, start, start + dt.timedelta(days=7300))
        self.ca = issue_ca(self.ca_key.public_key(), self.root, self.root_key, start, end)
        self.pck = issue_pck(self.pck_key.public_key(), self.facts, self.ca, self.ca_key, start, end)
        self.tcb = issue_tcb_signing(self.tcb_key.public_key(), self.root, self.root_key, start, end)
        self.att_xy = self.att_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]
        self.root_der = self.root.public_bytes(Encoding.DER)

    # -- quoting enclave ---------------------------------------------------------------------

    def qe(self, *, isv_svn: int = 8, attributes: bytes = bytes.fromhex("1500000000000000e700000000000000"),
           auth_data: bytes = bytes(range(32)), report_data: bytes | None = None,
           chain: bytes | None = None, mr_signer: bytes = QE_MRSIGNER) -> QeReportCertificationData:
        rd = report_data if report_data is not None else hashlib.sha256(self.att_xy + auth_data).digest() + bytes(32)
        report = EnclaveReport.build(mr_enclave=b"\x07" * 32, mr_signer=mr_signer, report_data=rd,
                                     isv_prod_id=1, isv_svn=isv_svn, attributes=attributes, cpu_svn=CPU_SVN)
        pem = chain if chain is not None else (_pem(self.pck, self.ca, self.root).encode() + b"\0")
        return QeReportCertificationData(report, sign_raw(self.pck_key, report.to_bytes()), auth_data,
                                         CertificationData(CERT_TYPE_PCK_CHAIN, pem))

    def sgx_quote(self, *, qe: QeReportCertificationData | None = None, **body: Any) -> bytes:
        fields: dict[str, Any] = {"mr_enclave": b"\x11" * 32, "mr_signer": b"\x22" * 32,
                                  "report_data": b"\x33" * 64,
                                  "attributes": bytes.fromhex("0500000000000000e700000000000000")}
        fields.update(body)
        report = EnclaveReport.build(**fields)
        return build_sgx_quote(report, attestation_key=self.att_xy, sign=lambda m: sign_raw(self.att_key, m),
                               qe=qe or self.qe(), qe_svn=8, pce_svn=PCE_SVN).to_bytes()

    def tdx_quote(self, *, version: int = 4, td15: bool = False, qe: QeReportCertificationData | None = None,
                  **fields: Any) -> bytes:
        values: dict[str, Any] = dict(
            tee_tcb_svn=bytes(16), mr_seam=b"\1" * 48, mr_signer_seam=bytes(48), seam_attributes=bytes(8),
            td_attributes=bytes.fromhex("0000001000000000"), xfam=bytes(8), mr_td=b"\2" * 48,
            mr_config_id=bytes(48), mr_owner=bytes(48), mr_owner_config=bytes(48), rt_mr0=bytes(48),
            rt_mr1=bytes(48), rt_mr2=bytes(48), rt_mr3=bytes(48), report_data=b"\3" * 64)
        extra = {k: fields.pop(k) for k in ("tee_tcb_svn2", "mr_service_td") if k in fields}
        values.update(fields)
        body: TdReport10 = TdReport15(**values, **extra) if td15 else TdReport10(**values)
        return build_tdx_quote(body, attestation_key=self.att_xy, sign=lambda m: sign_raw(self.att_key, m),
                               qe=qe or self.qe(), version=version).to_bytes()

    # -- collateral --------------------------------------------------------------------------

    def tcb_info(self, *, tdx: bool = False, levels: list[dict[str, Any]] | None = None,
                 issue: dt.datetime | None = None, next_update: dt.datetime | None = None,
                 **extra: Any) -> dict[str, Any]:
        issue = issue or self.now - dt.timedelta(days=1)
        next_update = next_update or issue + dt.timedelta(days=30)
        if levels is None:
            level: dict[str, Any] = {"tcb": {"sgxtcbcomponents": [{"svn": s} for s in CPU_SVN], "pcesvn": PCE_SVN},
                                     "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": "UpToDate"}
            if tdx:
                level["tcb"]["tdxtcbcomponents"] = [{"svn": 0}] * 16
            levels = [level]
        doc: dict[str, Any] = {"id": "TDX" if tdx else "SGX", "version": 3, "issueDate": format_rfc3339(issue),
                               "nextUpdate": format_rfc3339(next_update), "fmspc": self.facts.fmspc.hex().upper(),
                               "pceId": "0000", "tcbType": 0, "tcbEvaluationDataNumber": 17, "tcbLevels": levels}
        if tdx:
            doc["tdxModule"] = {"mrsigner": "00" * 48, "attributes": "0000000000000000",
                                "attributesMask": "FFFFFFFFFFFFFFFF"}
        doc.update(extra)
        return doc

    def qe_identity(self, *, tdx: bool = False, levels: list[dict[str, Any]] | None = None,
                    issue: dt.datetime | None = None, next_update: dt.datetime | None = None,
                    **extra: Any) -> dict[str, Any]:
        issue = issue or self.now - dt.timedelta(days=1)
        next_update = next_update or issue + dt.timedelta(days=30)
        doc: dict[str, Any] = {
            "id": "TD_QE" if tdx else "QE", "version": 2, "issueDate": format_rfc3339(issue),
            "nextUpdate": format_rfc3339(next_update), "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000", "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": QE_MRSIGNER.hex().upper(), "isvprodid": 1,
            "tcbLevels": levels or [{"tcb": {"isvsvn": 8}, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": "UpToDate"}]}
        doc.update(extra)
        return doc

    def collateral(self, *, tcb_info: dict[str, Any] | None = None, qe_identity: dict[str, Any] | None = None,
                   tdx: bool = False, crl_issue: dt.datetime | None = None,
                   crl_next_update: dt.datetime | None = None, revoked_pck: bool = False,
                   revoked_ca: bool = False, root_crl_next_update: dt.datetime | None = None) -> Collateral:
        info = json.dumps(tcb_info or self.tcb_info(tdx=tdx), separators=(",", ":"))
        ident = json.dumps(qe_identity or self.qe_identity(tdx=tdx), separators=(",", ":"))
        crl_issue = crl_issue or self.now - dt.timedelta(days=1)
        crl_next = crl_next_update or crl_issue + dt.timedelta(days=30)
        root_crl = issue_crl(self.root, self.root_key, 1, crl_issue, root_crl_next_update or crl_next,
                             (self.ca.serial_number,) if revoked_ca else ())
        pck_crl = issue_crl(self.ca, self.ca_key, 1, crl_issue, crl_next,
                            (self.pck.serial_number,) if revoked_pck else ())
        chain = _pem(self.tcb, self.root)
        return Collateral(_pem(self.ca, self.root), root_crl, pck_crl, chain, info,
                          sign_raw(self.tcb_key, info.encode()), chain, ident, sign_raw(self.tcb_key, ident.encode()))

    # -- the two verifiers -------------------------------------------------------------------

    def ours(self, quote: bytes, collateral: Collateral, now: dt.datetime | None = None) -> str:
        try:
            result = verify_quote(quote, collateral, now=now or self.now, trust_anchors=[self.root])
            return "accept:" + result.status + ":" + ",".join(result.advisory_ids)
        except InclavareError:
            return "reject"

    def theirs(self, quote: bytes, collateral: Collateral, now: dt.datetime | None = None) -> str:
        moment = now or self.now
        try:
            reference = dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json())
            result = dcap_qvl.verify_with_root_ca(quote, reference, self.root_der, int(moment.timestamp()))
            return "accept:" + result.status + ":" + ",".join(result.advisory_ids)
        except ValueError:
            return "reject"

    def compare(self, quote: bytes, collateral: Collateral, now: dt.datetime | None = None) -> tuple[str, str]:
        return self.ours(quote, collateral, now), self.theirs(quote, collateral, now)


def replace_level(level: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(level))
    out.update(changes)
    return out



