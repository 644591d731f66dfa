"""Fixed-size report bodies carried by DCAP quotes: the SGX REPORT body (also the QE report) and the
TDX TD report bodies (TD 1.0 and TD 1.5).

Layouts follow Intel's ``sgx_report_body_t`` / ``sgx_report2_body_t`` (QuoteGeneration
``sgx_quote_4.h``/``sgx_quote_5.h``). Each class round-trips byte-exactly: reserved areas are kept,
not dropped, so a parsed body re-serialises to the bytes that were signed.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from inclavare.errors import FormatError

SGX_REPORT_BODY_SIZE = 384
TD_REPORT10_SIZE = 584
TD_REPORT15_SIZE = 648


def _check_sizes(obj: object, sizes: tuple[tuple[str, int], ...]) -> None:
    for name, size in sizes:
        value = getattr(obj, name)
        if size == 0:
            if not isinstance(value, int) or value < 0:
                raise FormatError(f"{type(obj).__name__}.{name} must be a non-negative int")
        elif not isinstance(value, bytes) or len(value) != size:
            raise FormatError(f"{type(obj).__name__}.{name} must be {size} bytes")


@dataclass(frozen=True, slots=True)
class EnclaveReport:
    """SGX enclave REPORT body (384 bytes): the quoted enclave's identity, or the QE's own report."""

    cpu_svn: bytes
    misc_select: int
    reserved1: bytes
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    reserved2: bytes
    mr_signer: bytes
    reserved3: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    reserved4: bytes
    isv_family_id: bytes
    report_data: bytes

    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<16sI12s16s16s32s32s32s32s64sHHH42s16s64s")
    _SIZES: ClassVar[tuple[tuple[str, int], ...]] = (
        ("cpu_svn", 16), ("misc_select", 0), ("reserved1", 12), ("isv_ext_prod_id", 16),
        ("attributes", 16), ("mr_enclave", 32), ("reserved2", 32), ("mr_signer", 32),
        ("reserved3", 32), ("config_id", 64), ("isv_prod_id", 0), ("isv_svn", 0),
        ("config_svn", 0), ("reserved4", 42), ("isv_family_id", 16), ("report_data", 64),
    )

    def __post_init__(self) -> None:
        _check_sizes(self, self._SIZES)
        for name in ("isv_prod_id", "isv_svn", "config_svn"):
            if getattr(self, name) > 0xFFFF:
                raise FormatError(f"EnclaveReport.{name} must fit in 16 bits")
        if self.misc_select > 0xFFFFFFFF:
            raise FormatError("EnclaveReport.misc_select must fit in 32 bits")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        if len(data) != SGX_REPORT_BODY_SIZE:
            raise FormatError(f"SGX report body must be {SGX_REPORT_BODY_SIZE} bytes, got {len(data)}")
        return cls(*cls._STRUCT.unpack(data))

    def to_bytes(self) -> bytes:
        return self._STRUCT.pack(*(getattr(self, f.name) for f in dataclasses.fields(self)))

    @classmethod
    def build(
        cls,
        *,
        mr_enclave: bytes,
        mr_signer: bytes,
        report_data: bytes,
        isv_prod_id: int = 0,
        isv_svn: int = 0,
        attributes: bytes = bytes(16),
        cpu_svn: bytes = bytes(16),
        misc_select: int = 0,
        config_id: bytes = bytes(64),
        config_svn: int = 0,
        isv_ext_prod_id: bytes = bytes(16),
        isv_family_id: bytes = bytes(16),
    ) -> Self:
        """A report body with the reserved areas zeroed, as hardware produces them."""
        return cls(
            cpu_svn=cpu_svn, misc_select=misc_select, reserved1=bytes(12),
            isv_ext_prod_id=isv_ext_prod_id, attributes=attributes, mr_enclave=mr_enclave,
            reserved2=bytes(32), mr_signer=mr_signer, reserved3=bytes(32), config_id=config_id,
            isv_prod_id=isv_prod_id, isv_svn=isv_svn, config_svn=config_svn,
            reserved4=bytes(42), isv_family_id=isv_family_id, report_data=report_data,
        )

    @property
    def debug(self) -> bool:
        """ATTRIBUTES.DEBUG (flags bit 1): the enclave's memory is readable by the host."""
        return bool(self.attributes[0] & 0x02)


@dataclass(frozen=True, slots=True)
class TdReport10:
    """TDX TD report body, TDX module 1.0 layout (584 bytes; quote v4, or v5 body type 2)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rt_mr0: bytes
    rt_mr1: bytes
    rt_mr2: bytes
    rt_mr3: bytes
    report_data: bytes

    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<16s48s48s8s8s8s48s48s48s48s48s48s48s48s64s")
    _SIZES: ClassVar[tuple[tuple[str, int], ...]] = (
        ("tee_tcb_svn", 16), ("mr_seam", 48), ("mr_signer_seam", 48), ("seam_attributes", 8),
        ("td_attributes", 8), ("xfam", 8), ("mr_td", 48), ("mr_config_id", 48),
        ("mr_owner", 48), ("mr_owner_config", 48), ("rt_mr0", 48), ("rt_mr1", 48),
        ("rt_mr2", 48), ("rt_mr3", 48), ("report_data", 64),
    )
    SIZE: ClassVar[int] = TD_REPORT10_SIZE

    def __post_init__(self) -> None:
        _check_sizes(self, self._SIZES)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        if len(data) != cls.SIZE:
            raise FormatError(f"{cls.__name__} must be {cls.SIZE} bytes, got {len(data)}")
        return cls(*cls._STRUCT.unpack(data))

    def to_bytes(self) -> bytes:
        return self._STRUCT.pack(*(getattr(self, f.name) for f in dataclasses.fields(self)))

    @property
    def debug(self) -> bool:
        """TD_ATTRIBUTES.TUD.DEBUG (bit 0): the host VMM can read the TD's state."""
        return bool(self.td_attributes[0] & 0x01)


@dataclass(frozen=True, slots=True)
class TdReport15(TdReport10):
    """TDX TD report body, TDX module 1.5 layout (648 bytes; quote v5 body type 3)."""

    tee_tcb_svn2: bytes = bytes(16)
    mr_service_td: bytes = bytes(48)

    _STRUCT: ClassVar[struct.Struct] = struct.Struct(
        "<16s48s48s8s8s8s48s48s48s48s48s48s48s48s64s16s48s"
    )
    _SIZES: ClassVar[tuple[tuple[str, int], ...]] = TdReport10._SIZES + (
        ("tee_tcb_svn2", 16), ("mr_service_td", 48),
    )
    SIZE: ClassVar[int] = TD_REPORT15_SIZE


ReportBody = EnclaveReport | TdReport10 | TdReport15
