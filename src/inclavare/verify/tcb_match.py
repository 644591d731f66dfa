"""TCB evaluation: which TCB level of the (verified) TCB Info and QE Identity a platform and its
quoting enclave are at, and the resulting status and advisories.

Rules follow Intel's QVL as dcap-qvl implements them: TCB levels are ordered canonically (SGX
component SVNs, then PCE SVN, then — for TDX — TDX component SVNs, highest first); the first level
whose every component is ≤ the platform's is the match; for TDX the TDX module identity
(``TDX_<major version>``) must match the quote's MRSIGNER_SEAM / SEAM attributes and contributes
its own TCB level; QE levels are taken in document order; the platform and QE statuses merge to
the worse one with the union of advisories; ``Revoked`` is a failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from inclavare.errors import FormatError, TcbError, VerificationError
from inclavare.formats.hexadecimal import decode_hex
from inclavare.formats.qe_identity import QeIdentity
from inclavare.formats.report_body import EnclaveReport, TdReport10
from inclavare.formats.tcb_info import TcbInfo, TcbLevel, TcbStatus
from inclavare.memo import Memo, memo


@dataclass(frozen=True, slots=True)
class TcbResult:
    status: TcbStatus
    advisory_ids: tuple[str, ...]

    def merge(self, other: TcbResult) -> TcbResult:
        status = other.status if other.status.severity > self.status.severity else self.status
        merged = list(self.advisory_ids)
        for advisory in other.advisory_ids:
            if advisory not in merged:
                merged.append(advisory)
        return TcbResult(status, tuple(merged))


def _level_key(level: TcbLevel, tdx: bool) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
    return (level.sgx_components, level.pce_svn, level.tdx_components if tdx else ())


_SORTED: Memo[int, tuple[TcbInfo, tuple[TcbLevel, ...]]] = memo("sorted-tcb-levels", 128)


def canonical_levels(info: TcbInfo) -> tuple[TcbLevel, ...]:
    """TCB levels in Intel QVL's order (highest first; stable for equal keys)."""
    cached = _SORTED.get(id(info))
    if cached is not None and cached[0] is info:
        return cached[1]
    # sorted(reverse=True) is stable for equal keys, like Rust's sort_by(|a, b| b.cmp(a)).
    levels = tuple(sorted(info.tcb_levels, key=lambda lv: _level_key(lv, info.is_tdx), reverse=True))
    _SORTED.put(id(info), (info, levels))
    return levels


def _module_identity(info: TcbInfo, report: TdReport10) -> TcbResult | None:
    if not info.is_tdx:
        return None
    module = info.tdx_module
    if module is None:
        raise TcbError("TDX TCB Info is missing tdxModule")
    isv_svn, version = report.tee_tcb_svn[0], report.tee_tcb_svn[1]
    try:
        mrsigner = decode_hex(module.mrsigner, "tdxModule.mrsigner", 48)
        attributes = decode_hex(module.attributes, "tdxModule.attributes", 8)
        mask = decode_hex(module.attributes_mask, "tdxModule.attributesMask", 8)
        levels = None
        if version > 0 and info.tdx_module_identities:
            wanted = f"TDX_{version:02X}"
            identity = next((i for i in info.tdx_module_identities if i.id.upper() == wanted), None)
            if identity is None:
                raise TcbError(f"no TDX module identity {wanted} in TCB Info")
            mrsigner = decode_hex(identity.mrsigner, "tdxModuleIdentity.mrsigner", 48)
            attributes = decode_hex(identity.attributes, "tdxModuleIdentity.attributes", 8)
            mask = decode_hex(identity.attributes_mask, "tdxModuleIdentity.attributesMask", 8)
            levels = identity.tcb_levels
    except FormatError as exc:
        raise TcbError(f"malformed TDX module identity: {exc}") from exc
    if report.mr_signer_seam != mrsigner:
        raise TcbError("TDX module MRSIGNER_SEAM does not match the TCB Info")
    for expected, m, actual in zip(attributes, mask, report.seam_attributes, strict=True):
        if expected & m != actual & m:
            raise TcbError("TDX module SEAM attributes do not match the TCB Info")
        if actual & ~m & 0xFF:
            raise TcbError("TDX module SEAM attributes have bits outside the mask")
    if levels is None:
        return None
    for level in levels:
        if isv_svn >= level.isv_svn:
            return TcbResult(level.status, level.advisory_ids)
    raise TcbError(f"TDX module ISVSVN {isv_svn} is below every TDX module TCB level")


_MATCHES: Memo[tuple[object, ...], tuple[TcbInfo, TcbResult | TcbError]] = memo("tcb-matches", 1024)


def match_platform(
    info: TcbInfo,
    *,
    is_tdx_quote: bool,
    fmspc: bytes,
    cpu_svn: bytes,
    pce_svn: int,
    td_report: TdReport10 | None,
) -> TcbResult:
    """The platform's TCB status from the PCK certificate's TCB (and, for TDX, the TD report).
    Memoised on everything it reads (the TCB Info by identity, the platform values by content)."""
    key: tuple[object, ...] = (id(info), is_tdx_quote, fmspc, cpu_svn, pce_svn)
    if td_report is not None:
        key += (td_report.tee_tcb_svn, td_report.mr_signer_seam, td_report.seam_attributes)
    cached = _MATCHES.get(key)
    if cached is None or cached[0] is not info:
        try:
            outcome: TcbResult | TcbError = _match_platform(info, is_tdx_quote, fmspc, cpu_svn, pce_svn, td_report)
        except TcbError as exc:
            outcome = exc
        cached = _MATCHES.put(key, (info, outcome))
    if isinstance(cached[1], TcbError):
        raise cached[1]
    return cached[1]


def _match_platform(info: TcbInfo, is_tdx_quote: bool, fmspc: bytes, cpu_svn: bytes, pce_svn: int,
                    td_report: TdReport10 | None) -> TcbResult:
    try:
        expected_fmspc = decode_hex(info.fmspc, "tcbInfo.fmspc")
    except FormatError as exc:
        raise TcbError(f"malformed TCB Info FMSPC: {exc}") from exc
    if expected_fmspc != fmspc:
        raise TcbError("the PCK certificate's FMSPC does not match the TCB Info")
    if is_tdx_quote:
        if info.version < 3 or info.id != "TDX":
            raise TcbError("TDX quote with non-TDX TCB Info")
    elif info.version < 2 or info.id != "SGX":
        raise TcbError("SGX quote with non-SGX TCB Info")
    for level in canonical_levels(info):
        if pce_svn < level.pce_svn:
            continue
        if len(level.sgx_components) != len(cpu_svn):
            raise TcbError("TCB level has the wrong number of SGX components")
        if any(a < b for a, b in zip(cpu_svn, level.sgx_components, strict=True)):
            continue
        if is_tdx_quote:
            if td_report is None:
                raise TcbError("TDX quote without a TD report body")
            if len(level.tdx_components) != len(td_report.tee_tcb_svn):
                raise TcbError("TCB level has the wrong number of TDX components")
            if any(a < b for a, b in zip(td_report.tee_tcb_svn, level.tdx_components, strict=True)):
                continue
        result = TcbResult(level.status, level.advisory_ids)
        if is_tdx_quote and td_report is not None:
            module = _module_identity(info, td_report)
            if module is not None:
                result = result.merge(module)
        return result
    raise TcbError("no matching TCB level found")


def match_quoting_enclave(qe_report: EnclaveReport, identity: QeIdentity) -> TcbResult:
    """Check the QE report against the QE Identity and return the QE's TCB status."""
    if qe_report.mr_signer != identity.mrsigner:
        raise VerificationError("QE MRSIGNER does not match the QE Identity")
    if qe_report.debug:
        raise VerificationError("the quoting enclave runs in debug mode")
    if qe_report.isv_prod_id != identity.isv_prod_id:
        raise VerificationError("QE ISVPRODID does not match the QE Identity")
    mask = int.from_bytes(identity.miscselect_mask, "little")
    if qe_report.misc_select & mask != int.from_bytes(identity.miscselect, "little") & mask:
        raise VerificationError("QE MISCSELECT does not match the QE Identity")
    for expected, m, actual in zip(identity.attributes, identity.attributes_mask, qe_report.attributes, strict=True):
        if expected & m != actual & m:
            raise VerificationError("QE ATTRIBUTES do not match the QE Identity")
    for level in identity.tcb_levels:
        if qe_report.isv_svn >= level.isv_svn:
            return TcbResult(level.status, level.advisory_ids)
    if identity.tcb_levels:
        raise TcbError(f"QE ISVSVN {qe_report.isv_svn} is below every QE Identity TCB level")
    raise TcbError("QE Identity has no TCB levels")
