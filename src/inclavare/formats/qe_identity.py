"""Intel QE Identity (``enclaveIdentity``, id ``QE``/``TD_QE``, version 2): the expected identity
of the quoting enclave and its TCB levels, parsed from the exact signed JSON text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inclavare.errors import FormatError
from inclavare.formats.hexadecimal import decode_hex
from inclavare.formats.rfc3339 import parse_rfc3339
from inclavare.formats.strict_json import (
    loads_strict,
    require_int,
    require_list,
    require_object,
    require_str,
)
from inclavare.formats.tcb_info import IsvTcbLevel as QeTcbLevel
from inclavare.formats.tcb_info import TcbStatus

_KNOWN = frozenset({
    "id", "version", "issueDate", "nextUpdate", "tcbEvaluationDataNumber", "miscselect",
    "miscselectMask", "attributes", "attributesMask", "mrsigner", "isvprodid", "tcbLevels", "tcb",
    "isvsvn", "tcbDate", "tcbStatus", "advisoryIDs",
})


@dataclass(frozen=True, slots=True)
class QeIdentity:
    id: str
    version: int
    issue_date: int
    next_update: int
    tcb_evaluation_data_number: int
    miscselect: bytes
    miscselect_mask: bytes
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isv_prod_id: int
    tcb_levels: tuple[QeTcbLevel, ...]


def _level(raw: Any) -> QeTcbLevel:
    what = "enclaveIdentity.tcbLevels[]"
    obj = require_object(raw, what)
    if "tcb" not in obj:
        raise FormatError(f"{what}: missing field 'tcb'")
    advisories = require_list(obj, "advisoryIDs", what, optional=True)
    if not all(isinstance(v, str) for v in advisories):
        raise FormatError(f"{what}: advisoryIDs must be strings")
    return QeTcbLevel(
        isv_svn=require_int(require_object(obj["tcb"], what), "isvsvn", 16, what),
        tcb_date=require_str(obj, "tcbDate", what),
        status=TcbStatus.parse(require_str(obj, "tcbStatus", what), what),
        advisory_ids=tuple(advisories),
    )


def parse_qe_identity(text: str) -> QeIdentity:
    """Parse the ``enclaveIdentity`` JSON object text (the signed substring)."""
    what = "enclaveIdentity"
    obj = require_object(loads_strict(text, what, _KNOWN), what)
    return QeIdentity(
        id=require_str(obj, "id", what),
        version=require_int(obj, "version", 8, what),
        issue_date=parse_rfc3339(require_str(obj, "issueDate", what), "enclaveIdentity.issueDate"),
        next_update=parse_rfc3339(require_str(obj, "nextUpdate", what), "enclaveIdentity.nextUpdate"),
        tcb_evaluation_data_number=require_int(obj, "tcbEvaluationDataNumber", 32, what),
        miscselect=decode_hex(require_str(obj, "miscselect", what), "miscselect", 4),
        miscselect_mask=decode_hex(require_str(obj, "miscselectMask", what), "miscselectMask", 4),
        attributes=decode_hex(require_str(obj, "attributes", what), "attributes", 16),
        attributes_mask=decode_hex(require_str(obj, "attributesMask", what), "attributesMask", 16),
        mrsigner=decode_hex(require_str(obj, "mrsigner", what), "mrsigner", 32),
        isv_prod_id=require_int(obj, "isvprodid", 16, what),
        tcb_levels=tuple(_level(x) for x in require_list(obj, "tcbLevels", what)),
    )
