"""Collateral documents of the simulated SGX authority: TCB Info (id ``SGX``, version 3) and QE
Identity (id ``QE``, version 2), serialised once and signed exactly as Intel signs them — ECDSA
P-256/SHA-256 over the exact JSON text, signature as hex ``r‖s`` — plus the two CRLs."""

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


@dataclass(frozen=True, slots=True)
class QuotingEnclaveFacts:
    """The simulated QE's identity, as its QE Identity document describes it."""

    mrsigner: bytes
    isv_prod_id: int
    isv_svn: int


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in certs)


def tcb_info_text(facts: PlatformFacts, issue: dt.datetime, next_update: dt.datetime,
                  evaluation_number: int) -> str:
    tcb_date = format_rfc3339(issue.replace(hour=0, minute=0, second=0, microsecond=0))
    levels = [
        {"tcb": {"sgxtcbcomponents": [{"svn": svn} for svn in facts.cpu_svn], "pcesvn": facts.pce_svn},
         "tcbDate": tcb_date, "tcbStatus": "UpToDate"},
        {"tcb": {"sgxtcbcomponents": [{"svn": 0} for _ in facts.cpu_svn], "pcesvn": 0},
         "tcbDate": "2020-01-01T00:00:00Z", "tcbStatus": "OutOfDate", "advisoryIDs": [SIM_ADVISORY]},
    ]
    document = {
        "id": "SGX", "version": 3, "issueDate": format_rfc3339(issue),
        "nextUpdate": format_rfc3339(next_update), "fmspc": facts.fmspc.hex().upper(),
        "pceId": facts.pce_id.hex().upper(), "tcbType": 0,
        "tcbEvaluationDataNumber": evaluation_number, "tcbLevels": levels,
    }
    return json.dumps(document, separators=(",", ":"))


def qe_identity_text(qe: QuotingEnclaveFacts, issue: dt.datetime, next_update: dt.datetime,
                     evaluation_number: int) -> str:
    document = {
        "id": "QE", "version": 2, "issueDate": format_rfc3339(issue),
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
                     issue: dt.datetime, lifetime: dt.timedelta, evaluation_number: int) -> Collateral:
    """Freshly dated and signed collateral: valid from ``issue`` for ``lifetime``."""
    next_update = issue + lifetime
    number = int(issue.timestamp())
    tcb_info = tcb_info_text(facts, issue, next_update, evaluation_number)
    qe_identity = qe_identity_text(qe, issue, next_update, evaluation_number)
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
