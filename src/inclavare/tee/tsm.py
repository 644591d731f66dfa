"""The configfs-tsm attester: TDX and SEV-SNP evidence through the Linux ABI (kernel ≥ 6.7).

``/sys/kernel/config/tsm/report`` (Documentation/ABI/testing/configfs-tsm-report): ``mkdir``
an entry, read ``provider`` (``tdx_guest``/``sev_guest``), optionally write ``privlevel`` (SNP
VMPL), read ``generation``, write ``inblob`` (the ≤ 64 bytes of report data), read ``outblob``
(TDX: the quote; SNP: the 1184-byte report) and ``auxblob`` (SNP: the certificate table), re-read
``generation`` (exactly one more than before, or another writer raced this report), ``rmdir``.
This is the flow of CoCo's attester (``tsm_report/mod.rs``), with nothing simulation-specific:
on a TDX or SNP guest it runs against the kernel.

Evidence in Trustee's JSON for the provider's TEE: ``{"quote": "<base64>"}`` for TDX (no CCEL
event log), ``{"attestation_report": "<base64>", "cert_chain": [...]}`` for SNP with the
certificates ``auxblob`` carries.
"""

from __future__ import annotations

import base64
import os
import secrets
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inclavare.errors import InclavareError, NotSupportedError
from inclavare.tee.registry import SNP, TDX, Tee, pad_report_data

TSM_REPORT_DIR = "/sys/kernel/config/tsm/report"
MAX_BLOB = 1 << 20
PROVIDERS: dict[str, Tee] = {"tdx_guest": TDX, "sev_guest": SNP}
# The SNP certificate table's GUIDs (AMD GHCB specification, "SNP Extended Guest Request").
CERT_GUIDS = {uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "VCEK",
              uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "VLEK",
              uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ASK",
              uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ARK"}


class TsmError(InclavareError):
    """configfs-tsm could not produce a report."""


@dataclass(frozen=True, slots=True)
class TsmReport:
    provider: str
    outblob: bytes
    auxblob: bytes
    generation: int


def _read(entry: str, name: str, missing_ok: bool = False) -> bytes:
    try:
        with open(os.path.join(entry, name), "rb") as handle:
            data = handle.read(MAX_BLOB + 1)
    except FileNotFoundError:
        if missing_ok:
            return b""
        raise
    if len(data) > MAX_BLOB:
        raise TsmError(f"configfs-tsm: {name} is larger than {MAX_BLOB} bytes")
    return data


def tsm_report(report_data: bytes, report_dir: str = TSM_REPORT_DIR, privlevel: int | None = None,
               mkdir: Callable[[str], None] = os.mkdir) -> TsmReport:
    """One report through configfs-tsm (the ABI flow above). ``mkdir`` is the entry's creation:
    configfs populates the entry's files on ``mkdir`` (tests pass a fixture that does the same)."""
    data = pad_report_data(report_data)
    entry = os.path.join(report_dir, f"inclavare-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        mkdir(entry)
    except OSError as exc:
        raise TsmError(f"configfs-tsm: cannot create a report entry in {report_dir}: {exc.strerror or exc}") from None
    try:
        provider = _read(entry, "provider").decode("ascii", "replace").strip()
        if provider not in PROVIDERS:
            raise NotSupportedError(f"configfs-tsm provider {provider!r} is not supported "
                                    f"({', '.join(PROVIDERS)})")
        if privlevel is not None:
            if not 0 <= privlevel <= 3:
                raise TsmError("configfs-tsm: privlevel is 0-3")
            with open(os.path.join(entry, "privlevel"), "wb") as handle:
                handle.write(str(privlevel).encode())
        before = int(_read(entry, "generation") or b"0")
        with open(os.path.join(entry, "inblob"), "wb") as handle:
            handle.write(data)
        outblob = _read(entry, "outblob")
        auxblob = _read(entry, "auxblob", missing_ok=True)
        after = int(_read(entry, "generation") or b"0")
        if after != before + 1:
            raise TsmError("configfs-tsm: another writer raced this report (generation "
                           f"{before} → {after}); try again")
        if not outblob:
            raise TsmError("configfs-tsm: empty outblob")
        return TsmReport(provider, outblob, auxblob, after)
    except OSError as exc:
        raise TsmError(f"configfs-tsm: {exc.strerror or exc}") from None
    except ValueError:
        raise TsmError("configfs-tsm: unreadable generation counter") from None
    finally:
        try:
            os.rmdir(entry)
        except OSError:
            pass


def cert_table(auxblob: bytes) -> list[dict[str, Any]]:
    """The SNP certificate table (``guid[16] ‖ offset u32 ‖ length u32`` entries up to an
    all-zero one, offsets from the table's start) as Trustee's ``cert_chain`` entries."""
    out: list[dict[str, Any]] = []
    for pos in range(0, len(auxblob) - 23, 24):
        raw_guid, offset, length = struct.unpack_from("<16sII", auxblob, pos)
        if raw_guid == bytes(16):
            return out
        if offset + length > len(auxblob):
            raise TsmError("configfs-tsm: auxblob certificate entry beyond the table")
        kind = CERT_GUIDS.get(uuid.UUID(bytes=raw_guid)) or CERT_GUIDS.get(uuid.UUID(bytes_le=raw_guid))
        if kind:
            out.append({"cert_type": kind, "data": list(auxblob[offset:offset + length])})
    if auxblob:
        raise TsmError("configfs-tsm: auxblob certificate table is not terminated")
    return out


class TsmAttester:
    """Trustee's evidence for the TEE the kernel's configfs-tsm provider is (TDX or SNP)."""

    def __init__(self, report_dir: str = TSM_REPORT_DIR, privlevel: int | None = None,
                 mkdir: Callable[[str], None] = os.mkdir) -> None:
        self.report_dir = report_dir
        self.privlevel = privlevel
        self._mkdir = mkdir
        self._tee: Tee | None = None

    @staticmethod
    def available(report_dir: str = TSM_REPORT_DIR) -> bool:
        return os.path.isdir(report_dir)

    @property
    def tee(self) -> Tee:
        """The provider's TEE (read from a report entry: configfs names it nowhere else)."""
        if self._tee is None:
            self._tee = PROVIDERS[self.report(b"").provider]
        return self._tee

    def report(self, report_data: bytes) -> TsmReport:
        return tsm_report(report_data, self.report_dir, self.privlevel, self._mkdir)

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        report = self.report(report_data)
        blob = base64.b64encode(report.outblob).decode()
        if PROVIDERS[report.provider] == SNP:
            return {"attestation_report": blob, "cert_chain": cert_table(report.auxblob) or None}
        return {"quote": blob}
