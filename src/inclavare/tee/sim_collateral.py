"""Collateral documents of the simulated SGX authority: TCB Info (id ``SGX``, version 3) and QE
Identity (id ``QE``, version 2) for SGX quotes, TDX TCB Info (id ``TDX``, version 3, with the TDX
module identities) and TD QE Identity (id ``TD_QE``, version 2) for TD quotes, serialised once and
signed exactly as Intel signs them — ECDSA P-256/SHA-256 over the exact JSON text, signature as
hex ``r‖s`` — plus the two CRLs."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from inclavare.crypto.signatures import sign_p256_raw
from inclavare.formats.collateral import Collateral
from inclavare.formats.rfc3339 import format_rfc3339
from inclavare.tee.sim_pki import PlatformFacts, issue_crl

SIM_ADVISORY = "INCLAVARE-SIM-SA-0001"
SIM_TDX_MODULE_SVN = 3
SIM_TDX_MODULE_MAJOR = 1
SIM_TEE_TCB_SVN = bytes([SIM_TDX_MODULE_SVN, SIM_TDX_MODULE_MAJOR, 2] + [0] * 13)
"""TEE_TCB_SVN of the simulated TDX module: byte 0 its ISVSVN, byte 1 its major version (selects
the ``TDX_01`` module identity), as on hardware."""
SIM_TDX_MODULE_SIGNER = bytes(48)  # Intel's TDX modules have an all-zero MRSIGNER_SEAM
_OLD_TCB_DATE = "2020-01-01T00:00:00Z"


@dataclass(frozen=True, slots=True)
class QuotingEnclaveFacts:
    """The simulated QE's identity, as its QE Identity document describes it."""

    mrsigner: bytes
    isv_prod_id: int
    isv_svn: int


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in certs)


def _tcb_date(issue: dt.datetime) -> str:
    return format_rfc3339(issue.replace(hour=0, minute=0, second=0, microsecond=0))


def tcb_info_text(facts: PlatformFacts, issue: dt.datetime, next_update: dt.datetime,
                  evaluation_number: int, *, tdx: bool = False) -> str:
    """The SGX TCB Info, or with ``tdx`` the TDX one (TDX components of the simulated module, its
    ``tdxModule`` and ``TDX_01`` identity): an up-to-date level for this platform and an
    out-of-date all-zero level carrying the simulated advisory."""
    current: dict[str, object] = {"sgxtcbcomponents": [{"svn": svn} for svn in facts.cpu_svn],
                                  "pcesvn": facts.pce_svn}
    old: dict[str, object] = {"sgxtcbcomponents": [{"svn": 0} for _ in facts.cpu_svn], "pcesvn": 0}
    if tdx:
        current["tdxtcbcomponents"] = [{"svn": svn} for svn in SIM_TEE_TCB_SVN]
        old["tdxtcbcomponents"] = [{"svn": 0} for _ in SIM_TEE_TCB_SVN]
    levels = [
        {"tcb": current, "tcbDate": _tcb_date(issue), "tcbStatus": "UpToDate"},
        {"tcb": old, "tcbDate": _OLD_TCB_DATE, "tcbStatus": "OutOfDate", "advisoryIDs": [SIM_ADVISORY]},
    ]
    document: dict[str, object] = {
        "id": "TDX" if tdx else "SGX", "version": 3, "issueDate": format_rfc3339(issue),
        "nextUpdate": format_rfc3339(next_update), "fmspc": facts.fmspc.hex().upper(),
        "pceId": facts.pce_id.hex().upper(), "tcbType": 0,
        "tcbEvaluationDataNumber": evaluation_number,
    }
    if tdx:
        module = {"mrsigner": SIM_TDX_MODULE_SIGNER.hex().upper(), "attributes": "0000000000000000",
                  "attributesMask": "FFFFFFFFFFFFFFFF"}
        document["tdxModule"] = module
        document["tdxModuleIdentities"] = [{
            "id": f"TDX_{SIM_TDX_MODULE_MAJOR:02X}", **module,
            "tcbLevels": [
                {"tcb": {"isvsvn": SIM_TDX_MODULE_SVN}, "tcbDate": _tcb_date(issue), "tcbStatus": "UpToDate"},
                {"tcb": {"isvsvn": 0}, "tcbDate": _OLD_TCB_DATE, "tcbStatus": "OutOfDate",
                 "advisoryIDs": [SIM_ADVISORY]},
            ]}]
    document["tcbLevels"] = levels
    return json.dumps(document, separators=(",", ":"))


def qe_identity_text(qe: QuotingEnclaveFacts, issue: dt.datetime, next_update: dt.datetime,
                     evaluation_number: int, *, tdx: bool = False) -> str:
    """The QE Identity, or with ``tdx`` the TD QE Identity (``qe`` is then the TD QE's)."""
    document = {
        "id": "TD_QE" if tdx else "QE", "version": 2, "issueDate": format_rfc3339(issue),
        "nextUpdate": format_rfc3339(next_update), "tcbEvaluationDataNumber": evaluation_number,
        "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
        "attributes": "11000000000000000000000000000000",
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": qe.mrsigner.hex().upper(), "isvprodid": qe.isv_prod_id,
        "tcbLevels": [
            {"tcb": {"isvsvn": qe.isv_svn}, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": "UpToDate"},
            {"tcb": {"isvsvn": 0}, "tcbDate": "2020-01-01T00:00:00Z", "tcbStatus": "OutOfDate",
             "advisoryIDs": [SIM_ADVISORY]},
        ],
    }
    return json.dumps(document, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class SigningKeys:
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    pck_ca: x509.Certificate
    pck_ca_key: ec.EllipticCurvePrivateKey
    tcb_signing: x509.Certificate
    tcb_signing_key: ec.EllipticCurvePrivateKey


def issue_collateral(keys: SigningKeys, facts: PlatformFacts, qe: QuotingEnclaveFacts,
                     issue: dt.datetime, lifetime: dt.timedelta, evaluation_number: int,
                     *, tdx: bool = False) -> Collateral:
    """Freshly dated and signed collateral: valid from ``issue`` for ``lifetime`` (for TD quotes
    with ``tdx``; ``qe`` is then the TD QE)."""
    next_update = issue + lifetime
    number = int(issue.timestamp())
    tcb_info = tcb_info_text(facts, issue, next_update, evaluation_number, tdx=tdx)
    qe_identity = qe_identity_text(qe, issue, next_update, evaluation_number, tdx=tdx)
    signing_chain = _pem(keys.tcb_signing, keys.root)
    return Collateral(
        pck_crl_issuer_chain=_pem(keys.pck_ca, keys.root),
        root_ca_crl=issue_crl(keys.root, keys.root_key, number, issue, next_update),
        pck_crl=issue_crl(keys.pck_ca, keys.pck_ca_key, number, issue, next_update),
        tcb_info_issuer_chain=signing_chain,
        tcb_info=tcb_info,
        tcb_info_signature=sign_p256_raw(keys.tcb_signing_key, tcb_info.encode()),
        qe_identity_issuer_chain=signing_chain,
        qe_identity=qe_identity,
        qe_identity_signature=sign_p256_raw(keys.tcb_signing_key, qe_identity.encode()),
    )
