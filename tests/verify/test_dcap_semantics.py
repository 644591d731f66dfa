"""DCAP rules on inputs only a signing authority can produce (TCB levels, attributes, CRL
revocation, validity boundaries), each checked against dcap-qvl's verdict on the same signed
quote and collateral (its ``verify_with_root_ca`` with the test root)."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from inclavare.errors import CertificateChainError
from inclavare.memo import clear_all
from inclavare.verify.dcap import verify_quote
from verify.dcap_lab import CPU_SVN, NOW, PCE_SVN, Lab

SECOND = dt.timedelta(seconds=1)


@pytest.fixture(scope="module")
def lab() -> Lab:
    return Lab()


def _agree(lab: Lab, quote: bytes, collateral: Any, now: dt.datetime | None = None) -> str:
    mine, reference = lab.compare(quote, collateral, now)
    assert mine == reference
    return mine


def _level(status: str, sgx: list[int] | None = None, pce: int = PCE_SVN, tdx: list[int] | None = None,
           advisories: list[str] | None = None) -> dict[str, Any]:
    tcb: dict[str, Any] = {"sgxtcbcomponents": [{"svn": s} for s in (sgx if sgx is not None else CPU_SVN)],
                           "pcesvn": pce}
    if tdx is not None:
        tcb["tdxtcbcomponents"] = [{"svn": s} for s in tdx]
    level: dict[str, Any] = {"tcb": tcb, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": status}
    if advisories:
        level["advisoryIDs"] = advisories
    return level


def test_baseline_sgx_and_tdx(lab: Lab) -> None:
    assert _agree(lab, lab.sgx_quote(), lab.collateral()) == "accept:UpToDate:"
    assert _agree(lab, lab.tdx_quote(), lab.collateral(tdx=True)) == "accept:UpToDate:"
    for version, td15 in ((5, False), (5, True)):
        assert _agree(lab, lab.tdx_quote(version=version, td15=td15), lab.collateral(tdx=True)) == "accept:UpToDate:"


def test_every_td_attribute_bit(lab: Lab) -> None:
    collateral = lab.collateral(tdx=True)
    verdicts = set()
    for bit in range(64):
        attributes = (int.from_bytes(bytes.fromhex("0000001000000000"), "little") ^ (1 << bit)).to_bytes(8, "little")
        verdicts.add(_agree(lab, lab.tdx_quote(td_attributes=attributes), collateral))
    assert verdicts == {"accept:UpToDate:", "reject"}


def test_debug_enclave_and_service_td(lab: Lab) -> None:
    assert _agree(lab, lab.sgx_quote(attributes=bytes.fromhex("0700000000000000e700000000000000")),
                  lab.collateral()) == "reject"
    assert _agree(lab, lab.tdx_quote(version=5, td15=True, mr_service_td=b"\1" * 48),
                  lab.collateral(tdx=True)) == "reject"


def test_tcb_levels_are_matched_in_canonical_order(lab: Lab) -> None:
    higher = [s + 1 for s in CPU_SVN]
    levels = [_level("OutOfDate", sgx=[0] * 16, pce=0, advisories=["SA-OLD"]),
              _level("SWHardeningNeeded", advisories=["SA-SW"]),
              _level("UpToDate", sgx=higher)]
    result = _agree(lab, lab.sgx_quote(), lab.collateral(tcb_info=lab.tcb_info(levels=levels)))
    assert result == "accept:SWHardeningNeeded:SA-SW"


@pytest.mark.parametrize("levels,expected", [
    ([_level("UpToDate", pce=PCE_SVN + 1), _level("OutOfDate", pce=PCE_SVN - 1)], "accept:OutOfDate:"),
    ([_level("Revoked")], "reject"),
    ([_level("UpToDate", sgx=list(CPU_SVN[:15]))], "reject"),
    ([_level("ConfigurationNeeded", advisories=["SA-1", "SA-2"])], "accept:ConfigurationNeeded:SA-1,SA-2"),
    ([_level("UpToDate", sgx=[s + 1 for s in CPU_SVN])], "reject"),
])
def test_platform_tcb_levels(lab: Lab, levels: list[dict[str, Any]], expected: str) -> None:
    assert _agree(lab, lab.sgx_quote(), lab.collateral(tcb_info=lab.tcb_info(levels=levels))) == expected


def test_qe_tcb_levels_merge_with_the_platform(lab: Lab) -> None:
    qe_levels = [{"tcb": {"isvsvn": 9}, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": "UpToDate"},
                 {"tcb": {"isvsvn": 5}, "tcbDate": "2023-01-01T00:00:00Z", "tcbStatus": "OutOfDate",
                  "advisoryIDs": ["SA-QE", "SA-SW"]}]
    collateral = lab.collateral(tcb_info=lab.tcb_info(levels=[_level("SWHardeningNeeded", advisories=["SA-SW"])]),
                                qe_identity=lab.qe_identity(levels=qe_levels))
    assert _agree(lab, lab.sgx_quote(), collateral) == "accept:OutOfDate:SA-SW,SA-QE"
    too_low = lab.collateral(qe_identity=lab.qe_identity(levels=qe_levels[:1]))
    assert _agree(lab, lab.sgx_quote(), too_low) == "reject"


@pytest.mark.parametrize("change", [
    {"mrsigner": "00" * 32}, {"isvprodid": 2}, {"miscselect": "01000000"},
    {"attributes": "13000000000000000000000000000000"},
    {"id": "TD_QE"}, {"version": 3},
])
def test_qe_identity_must_match(lab: Lab, change: dict[str, Any]) -> None:
    assert _agree(lab, lab.sgx_quote(), lab.collateral(qe_identity=lab.qe_identity(**change))) == "reject"


def test_qe_report_binding(lab: Lab) -> None:
    upper = lab.qe(report_data=__import__("hashlib").sha256(lab.att_xy + bytes(range(32))).digest() + b"\1" * 32)
    assert _agree(lab, lab.sgx_quote(qe=upper), lab.collateral()) == "accept:UpToDate:"
    assert _agree(lab, lab.sgx_quote(qe=lab.qe(auth_data=bytes(16))), lab.collateral()) == "reject"
    assert _agree(lab, lab.sgx_quote(qe=lab.qe(report_data=bytes(64))), lab.collateral()) == "reject"
    debug_qe = lab.qe(attributes=bytes.fromhex("1700000000000000e700000000000000"))
    assert _agree(lab, lab.sgx_quote(qe=debug_qe), lab.collateral()) == "reject"


def test_tdx_components_and_module_identities(lab: Lab) -> None:
    module_identity = {"id": "TDX_03", "mrsigner": "00" * 48, "attributes": "0000000000000000",
                       "attributesMask": "FFFFFFFFFFFFFFFF",
                       "tcbLevels": [{"tcb": {"isvsvn": 5}, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": "UpToDate"},
                                     {"tcb": {"isvsvn": 1}, "tcbDate": "2023-01-01T00:00:00Z",
                                      "tcbStatus": "OutOfDate", "advisoryIDs": ["SA-MOD"]}]}
    collateral = lab.collateral(tcb_info=lab.tcb_info(tdx=True, levels=[_level("UpToDate", tdx=[1] + [0] * 15)],
                                                      tdxModuleIdentities=[module_identity]), tdx=True)
    for svn, expected in ((bytes([6, 3]), "accept:UpToDate:"), (bytes([2, 3]), "accept:OutOfDate:SA-MOD"),
                          (bytes([0, 3]), "reject"), (bytes([2, 4]), "reject"), (bytes([1, 0]), "accept:UpToDate:")):
        assert _agree(lab, lab.tdx_quote(tee_tcb_svn=svn + bytes(14)), collateral) == expected
    assert _agree(lab, lab.tdx_quote(tee_tcb_svn=bytes(16)), collateral) == "reject"
    assert _agree(lab, lab.tdx_quote(seam_attributes=b"\1" + bytes(7)), lab.collateral(tdx=True)) == "reject"
    assert _agree(lab, lab.tdx_quote(mr_signer_seam=b"\1" * 48), lab.collateral(tdx=True)) == "reject"


def test_tee_and_collateral_kind_must_match(lab: Lab) -> None:
    assert _agree(lab, lab.tdx_quote(), lab.collateral()) == "reject"
    assert _agree(lab, lab.sgx_quote(), lab.collateral(tdx=True)) == "reject"


def test_revocation(lab: Lab) -> None:
    assert _agree(lab, lab.sgx_quote(), lab.collateral(revoked_pck=True)) == "reject"
    assert _agree(lab, lab.sgx_quote(), lab.collateral(revoked_ca=True)) == "reject"


def test_pck_chain_from_the_collateral_is_preferred(lab: Lab) -> None:
    collateral = lab.collateral()
    broken_quote = lab.sgx_quote(qe=lab.qe(chain=b"not a chain"))
    assert _agree(lab, broken_quote, collateral) == "reject"
    import dataclasses

    from cryptography.hazmat.primitives.serialization import Encoding

    chain = "".join(c.public_bytes(Encoding.PEM).decode() for c in (lab.pck, lab.ca))
    with_chain = dataclasses.replace(collateral, pck_certificate_chain=chain)
    assert _agree(lab, broken_quote, with_chain) == "accept:UpToDate:"


def test_validity_boundaries(lab: Lab) -> None:
    issue = NOW - dt.timedelta(days=1)
    info_next = issue + dt.timedelta(days=30)
    collateral = lab.collateral(tcb_info=lab.tcb_info(issue=issue, next_update=info_next),
                                crl_issue=issue, crl_next_update=issue + dt.timedelta(days=40))
    quote = lab.sgx_quote()
    assert _agree(lab, quote, collateral, issue) == "accept:UpToDate:"
    assert _agree(lab, quote, collateral, issue - SECOND) == "reject"
    assert _agree(lab, quote, collateral, info_next) == "accept:UpToDate:"
    assert _agree(lab, quote, collateral, info_next + SECOND) == "reject"
    crl_next = NOW + dt.timedelta(days=2)
    short_crl = lab.collateral(crl_issue=issue, crl_next_update=crl_next)
    assert _agree(lab, quote, short_crl, crl_next - SECOND) == "accept:UpToDate:"
    assert _agree(lab, quote, short_crl, crl_next) == "reject"


def test_certificate_expiry_boundary() -> None:
    short = Lab(cert_lifetime=dt.timedelta(days=5))
    not_after = NOW - dt.timedelta(days=1) + dt.timedelta(days=5)
    issue = NOW - dt.timedelta(days=1)
    collateral = short.collateral(tcb_info=short.tcb_info(issue=issue), crl_issue=issue)
    quote = short.sgx_quote()
    assert _agree(short, quote, collateral, not_after) == "accept:UpToDate:"
    assert _agree(short, quote, collateral, not_after + SECOND) == "reject"


def test_the_memo_never_changes_a_verdict(lab: Lab) -> None:
    quote, collateral = lab.sgx_quote(), lab.collateral()
    later = NOW + dt.timedelta(days=60)
    sequence = [NOW, later, NOW, later + dt.timedelta(days=1), NOW]
    warm = [lab.ours(quote, collateral, t) for t in sequence]
    cold = []
    for moment in sequence:
        clear_all()
        cold.append(lab.ours(quote, collateral, moment))
    assert warm == cold == ["accept:UpToDate:", "reject", "accept:UpToDate:", "reject", "accept:UpToDate:"]


def test_the_trust_anchor_is_a_parameter(lab: Lab) -> None:
    quote, collateral = lab.sgx_quote(), lab.collateral()
    with pytest.raises(CertificateChainError):
        verify_quote(quote, collateral, now=NOW)
    other = Lab()
    with pytest.raises(CertificateChainError):
        verify_quote(quote, collateral, now=NOW, trust_anchors=[other.root])
    assert verify_quote(quote, collateral, now=NOW, trust_anchors=[other.root, lab.root]).status == "UpToDate"


def test_unsigned_collateral_changes_are_rejected(lab: Lab) -> None:
    collateral = lab.collateral()
    import dataclasses

    for field, value in (("tcb_info", collateral.tcb_info.replace("UpToDate", "OutOfDate")),
                         ("qe_identity", collateral.qe_identity.replace('"isvprodid":1', '"isvprodid":1 '))):
        tampered = dataclasses.replace(collateral, **{field: value})
        assert _agree(lab, lab.sgx_quote(), tampered) == "reject"
    deep = copy.deepcopy(lab.tcb_info())
    deep["fmspc"] = "00906ED50001"
    assert _agree(lab, lab.sgx_quote(), lab.collateral(tcb_info=deep)) == "reject"


def test_concurrent_verification_gives_sequential_verdicts(lab: Lab) -> None:
    from concurrent.futures import ThreadPoolExecutor

    clear_all()
    jobs = [(lab.sgx_quote(report_data=bytes([i]) * 64), lab.collateral(), NOW + dt.timedelta(days=3 * i))
            for i in range(12)]
    expected = [lab.ours(*job) for job in jobs]
    clear_all()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: lab.ours(*job), jobs * 10))
    assert results == expected * 10
    assert set(expected) == {"accept:UpToDate:", "reject"}
