"""The Intel SGX extension (OID 1.2.840.113741.1.13.1) of PCK certificates: the platform identity
and TCB the PCK key was issued for. Read the way dcap-qvl reads it: a SEQUENCE of
``SEQUENCE { OID, value }`` entries, first match wins, the TCB entry nested one level."""

from __future__ import annotations

from dataclasses import dataclass

from inclavare.errors import FormatError
from inclavare.formats.der import OID, SEQUENCE, DerError, DerReader, encode_oid

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_BASE = SGX_EXTENSION_OID
OID_PPID = encode_oid(f"{_BASE}.1")
OID_TCB = encode_oid(f"{_BASE}.2")
OID_PCESVN = encode_oid(f"{_BASE}.2.17")
OID_CPUSVN = encode_oid(f"{_BASE}.2.18")
OID_PCEID = encode_oid(f"{_BASE}.3")
OID_FMSPC = encode_oid(f"{_BASE}.4")
OID_SGX_TYPE = encode_oid(f"{_BASE}.5")
OID_PLATFORM_INSTANCE_ID = encode_oid(f"{_BASE}.6")
SGX_EXTENSION_OID_BYTES = encode_oid(SGX_EXTENSION_OID)


def component_oid(index: int) -> bytes:
    """OID of TCB component SVN ``index`` (1..16)."""
    return encode_oid(f"{_BASE}.2.{index}")


@dataclass(frozen=True, slots=True)
class PckExtension:
    ppid: bytes
    cpu_svn: bytes
    pce_svn: int
    pce_id: bytes
    fmspc: bytes
    sgx_type: int
    platform_instance_id: bytes | None


def _entries(value: bytes, what: str) -> list[tuple[bytes, int, bytes]]:
    """(oid, tag, content) of each entry of a SEQUENCE-of-SEQUENCE{OID, value} TLV."""
    reader = DerReader(value)
    seq = reader.nested(SEQUENCE, what, 1 << 32)
    reader.finish(what)
    out = []
    while not seq.at_end():
        entry = seq.nested(SEQUENCE, f"{what} entry")
        oid = entry.expect_value(OID, f"{what} entry id")
        tag, _, start, end = entry.read_tlv()
        entry.finish(f"{what} entry")
        out.append((oid, tag, value[start:end]))
    return out


def _find(entries: list[tuple[bytes, int, bytes]], oid: bytes) -> tuple[int, bytes] | None:
    for entry_oid, tag, content in entries:
        if entry_oid == oid:
            return tag, content
    return None


def _require(entries: list[tuple[bytes, int, bytes]], oid: bytes, name: str) -> bytes:
    found = _find(entries, oid)
    if found is None:
        raise FormatError(f"SGX extension lacks {name}")
    return found[1]


def parse_pck_extension(value: bytes) -> PckExtension:
    """Parse the SGX extension's value (the DER inside the extension's OCTET STRING)."""
    try:
        top = _entries(value, "SGX extension")
        tcb_found = _find(top, OID_TCB)
        if tcb_found is None:
            raise FormatError("SGX extension lacks the TCB entry")
        tcb_tlv = bytes([tcb_found[0]]) + _length(len(tcb_found[1])) + tcb_found[1]
        tcb = _entries(tcb_tlv, "SGX TCB")
    except DerError as exc:
        raise FormatError(f"malformed SGX extension: {exc}") from exc
    cpu_svn = _require(tcb, OID_CPUSVN, "CPUSVN")
    if len(cpu_svn) != 16:
        raise FormatError("SGX extension CPUSVN must be 16 bytes")
    pce_raw = _require(tcb, OID_PCESVN, "PCESVN")
    if len(pce_raw) not in (1, 2):
        raise FormatError("SGX extension PCESVN length mismatch")
    fmspc = _require(top, OID_FMSPC, "FMSPC")
    if len(fmspc) != 6:
        raise FormatError("SGX extension FMSPC must be 6 bytes")
    sgx_type_raw = _require(top, OID_SGX_TYPE, "SGX type")
    if len(sgx_type_raw) not in (1, 2):
        raise FormatError("SGX extension SGX type length mismatch")
    instance = _find(top, OID_PLATFORM_INSTANCE_ID)
    return PckExtension(
        ppid=_require(top, OID_PPID, "PPID"),
        cpu_svn=cpu_svn,
        pce_svn=int.from_bytes(pce_raw, "big"),
        pce_id=_require(top, OID_PCEID, "PCE-ID"),
        fmspc=fmspc,
        sgx_type=int.from_bytes(sgx_type_raw, "big"),
        platform_instance_id=None if instance is None else instance[1],
    )


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw
