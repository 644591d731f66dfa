"""Intel TCB Info (PCS v4, ``tcbInfo`` version 2/3) and the TCB status vocabulary.

The document is parsed from the exact JSON text Intel signed. Field rules follow dcap-qvl's serde
model (required fields, unknown fields ignored, ``advisoryIDs``/``tdxtcbcomponents``/
``tdxModuleIdentities`` optional), so a document one side accepts the other does too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from inclavare.errors import FormatError
from inclavare.formats.rfc3339 import parse_rfc3339
from inclavare.formats.strict_json import (
    loads_strict,
    require_int,
    require_list,
    require_object,
    require_str,
)

_KNOWN = frozenset({
    "id", "version", "issueDate", "nextUpdate", "fmspc", "pceId", "tcbType", "tcbEvaluationDataNumber",
    "tcbLevels", "tdxModule", "tdxModuleIdentities", "tcb", "sgxtcbcomponents", "tdxtcbcomponents",
    "pcesvn", "svn", "tcbDate", "tcbStatus", "advisoryIDs", "mrsigner", "attributes", "attributesMask",
    "isvsvn",
})


class TcbStatus(enum.Enum):
    """TCB status strings as Intel (and dcap-qvl) spell them; ``severity`` orders the merge."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @classmethod
    def parse(cls, value: object, what: str) -> TcbStatus:
        try:
            return cls(value)
        except ValueError:
            raise FormatError(f"{what}: unknown tcbStatus {str(value)[:40]!r}") from None


_SEVERITY = {status: rank for rank, status in enumerate(TcbStatus)}


def _advisories(obj: dict[str, Any], what: str) -> tuple[str, ...]:
    values = require_list(obj, "advisoryIDs", what, optional=True)
    if not all(isinstance(v, str) for v in values):
        raise FormatError(f"{what}: advisoryIDs must be strings")
    return tuple(values)


def _svns(items: list[Any], what: str) -> tuple[int, ...]:
    return tuple(require_int(require_object(c, what), "svn", 8, what) for c in items)


@dataclass(frozen=True, slots=True)
class TcbLevel:
    sgx_components: tuple[int, ...]
    tdx_components: tuple[int, ...]
    pce_svn: int
    tcb_date: str
    status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TdxModule:
    mrsigner: str
    attributes: str
    attributes_mask: str


@dataclass(frozen=True, slots=True)
class IsvTcbLevel:
    """A TCB level keyed by one ISV SVN (QE identity levels, TDX module identity levels)."""

    isv_svn: int
    tcb_date: str
    status: TcbStatus
    advisory_ids: tuple[str, ...]


TdxModuleTcbLevel = IsvTcbLevel


@dataclass(frozen=True, slots=True)
class TdxModuleIdentity:
    id: str
    mrsigner: str
    attributes: str
    attributes_mask: str
    tcb_levels: tuple[TdxModuleTcbLevel, ...]


@dataclass(frozen=True, slots=True)
class TcbInfo:
    id: str
    version: int
    issue_date: int
    next_update: int
    fmspc: str
    pce_id: str
    tcb_type: int
    tcb_evaluation_data_number: int
    tcb_levels: tuple[TcbLevel, ...]
    tdx_module: TdxModule | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...]

    @property
    def is_tdx(self) -> bool:
        return self.version >= 3 and self.id == "TDX"


def _tcb_level(raw: Any) -> TcbLevel:
    what = "tcbInfo.tcbLevels[]"
    obj = require_object(raw, what)
    tcb = require_object(obj.get("tcb"), f"{what}.tcb") if "tcb" in obj else None
    if tcb is None:
        raise FormatError(f"{what}: missing field 'tcb'")
    return TcbLevel(
        sgx_components=_svns(require_list(tcb, "sgxtcbcomponents", what), what),
        tdx_components=_svns(require_list(tcb, "tdxtcbcomponents", what, optional=True), what),
        pce_svn=require_int(tcb, "pcesvn", 16, what),
        tcb_date=require_str(obj, "tcbDate", what),
        status=TcbStatus.parse(require_str(obj, "tcbStatus", what), what),
        advisory_ids=_advisories(obj, what),
    )


def _module_level(raw: Any) -> TdxModuleTcbLevel:
    what = "tdxModuleIdentities[].tcbLevels[]"
    obj = require_object(raw, what)
    if "tcb" not in obj:
        raise FormatError(f"{what}: missing field 'tcb'")
    tcb = require_object(obj["tcb"], what)
    return TdxModuleTcbLevel(
        isv_svn=require_int(tcb, "isvsvn", 8, what),
        tcb_date=require_str(obj, "tcbDate", what),
        status=TcbStatus.parse(require_str(obj, "tcbStatus", what), what),
        advisory_ids=_advisories(obj, what),
    )


def _module_identity(raw: Any) -> TdxModuleIdentity:
    what = "tcbInfo.tdxModuleIdentities[]"
    obj = require_object(raw, what)
    return TdxModuleIdentity(
        id=require_str(obj, "id", what),
        mrsigner=require_str(obj, "mrsigner", what),
        attributes=require_str(obj, "attributes", what),
        attributes_mask=require_str(obj, "attributesMask", what),
        tcb_levels=tuple(_module_level(x) for x in require_list(obj, "tcbLevels", what)),
    )


def parse_tcb_info(text: str) -> TcbInfo:
    """Parse the ``tcbInfo`` JSON object text (the signed substring, not the PCS envelope)."""
    what = "tcbInfo"
    obj = require_object(loads_strict(text, what, _KNOWN), what)
    module_raw = obj.get("tdxModule")
    module = None
    if module_raw is not None:
        m = require_object(module_raw, "tcbInfo.tdxModule")
        module = TdxModule(require_str(m, "mrsigner", what), require_str(m, "attributes", what),
                           require_str(m, "attributesMask", what))
    return TcbInfo(
        id=require_str(obj, "id", what),
        version=require_int(obj, "version", 8, what),
        issue_date=parse_rfc3339(require_str(obj, "issueDate", what), "tcbInfo.issueDate"),
        next_update=parse_rfc3339(require_str(obj, "nextUpdate", what), "tcbInfo.nextUpdate"),
        fmspc=require_str(obj, "fmspc", what),
        pce_id=require_str(obj, "pceId", what),
        tcb_type=require_int(obj, "tcbType", 32, what),
        tcb_evaluation_data_number=require_int(obj, "tcbEvaluationDataNumber", 32, what),
        tcb_levels=tuple(_tcb_level(x) for x in require_list(obj, "tcbLevels", what)),
        tdx_module=module,
        tdx_module_identities=tuple(
            _module_identity(x) for x in require_list(obj, "tdxModuleIdentities", what, optional=True)
        ),
    )
