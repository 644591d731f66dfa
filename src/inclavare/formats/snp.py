"""AMD SEV-SNP attestation reports (``ATTESTATION_REPORT``, 0x4A0 bytes), versions 2 and later.

Layout per the SEV-SNP firmware ABI (as go-sev-guest's ``abi.ReportToProto`` reads it): header
fields, REPORT_DATA at 0x50, MEASUREMENT at 0x90, … CHIP_ID at 0x1A0, the signed part ends at
0x2A0 where the signature (R and S, 72 bytes each, little-endian) starts. Version 3 adds the CPUID
family/model/stepping at 0x188. Must-be-zero ranges, the guest policy's reserved bits and the
signer info are validated like go-sev-guest does; the report round-trips byte-exactly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from inclavare.errors import FormatError

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1
_POLICY_RESERVED_ONE = 1 << 17
AMD_OID = "1.3.6.1.4.1.3704.1"
VCEK_SPL_OIDS = {"bootloader": f"{AMD_OID}.3.1", "tee": f"{AMD_OID}.3.2", "snp": f"{AMD_OID}.3.3",
                 "microcode": f"{AMD_OID}.3.8"}
"""The VCEK extensions certifying each SPL of the reported TCB (named as :class:`SnpTcb`'s fields)."""
VCEK_HWID_OID = f"{AMD_OID}.4"


def _mbz(data: bytes, start: int, end: int) -> None:
    if any(data[start:end]):
        raise FormatError(f"SNP report bytes [{start:#x}:{end:#x}] must be zero")


@dataclass(frozen=True, slots=True)
class SnpTcb:
    """A TCB_VERSION (u64): SPLs of the boot loader, PSP OS (TEE), SNP firmware and microcode."""

    raw: int

    @property
    def bootloader(self) -> int:
        return self.raw & 0xFF

    @property
    def tee(self) -> int:
        return (self.raw >> 8) & 0xFF

    @property
    def snp(self) -> int:
        return (self.raw >> 48) & 0xFF

    @property
    def microcode(self) -> int:
        return (self.raw >> 56) & 0xFF


@dataclass(frozen=True, slots=True)
class SnpReport:
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: SnpTcb
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: SnpTcb
    cpuid_fms: bytes | None
    chip_id: bytes
    committed_tcb: SnpTcb
    current_version: tuple[int, int, int]
    committed_version: tuple[int, int, int]
    launch_tcb: SnpTcb
    launch_mit_vector: int
    current_mit_vector: int
    signature_r: bytes
    signature_s: bytes
    raw: bytes

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def debug_allowed(self) -> bool:
        """Guest policy DEBUG (bit 19): the hypervisor may debug (read) the guest."""
        return bool(self.policy & (1 << 19))

    @property
    def migrate_ma_allowed(self) -> bool:
        return bool(self.policy & (1 << 18))

    @property
    def signing_key(self) -> str:
        """``vcek``, ``vlek`` or ``none`` (SIGNER_INFO bits 4:2)."""
        return {0: "vcek", 1: "vlek", 7: "none"}[(self.signer_info >> 2) & 7]

    def to_bytes(self) -> bytes:
        return self.raw


_HEAD = struct.Struct("<IIQ16s16sIIQQI")


def parse_snp_report(data: bytes) -> SnpReport:
    """Parse a raw 1184-byte SNP attestation report (FormatError if malformed)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError("an SNP report is bytes")
    raw = bytes(data)
    if len(raw) != REPORT_SIZE:
        raise FormatError(f"an SNP attestation report is {REPORT_SIZE} bytes, got {len(raw)}")
    (version, guest_svn, policy, family_id, image_id, vmpl, sig_algo, current_tcb, platform_info,
     signer_info) = _HEAD.unpack_from(raw, 0)
    if version < 2:
        raise FormatError(f"unsupported SNP report version {version}")
    if not policy & _POLICY_RESERVED_ONE:
        raise FormatError("SNP guest policy bit 17 (reserved) must be 1")
    if policy >> 26:
        raise FormatError("SNP guest policy bits 26..63 must be zero")
    if signer_info >> 5:
        raise FormatError("SNP signer info bits 5..31 must be zero")
    if 2 <= (signer_info >> 2) & 7 <= 6:
        raise FormatError("SNP signing key values 2-6 are reserved")
    _mbz(raw, 0x4C, 0x50)
    cpuid_fms = None
    if version >= 3:
        cpuid_fms = raw[0x188:0x18B]
        _mbz(raw, 0x18B, 0x1A0)
    else:
        _mbz(raw, 0x188, 0x1A0)
    _mbz(raw, 0x1EB, 0x1EC)
    _mbz(raw, 0x1EF, 0x1F0)
    _mbz(raw, 0x208, SIGNED_SIZE)
    if sig_algo == SIGNATURE_ALGO_ECDSA_P384_SHA384:
        _mbz(raw, SIGNED_SIZE + 144, REPORT_SIZE)

    def u64(offset: int) -> int:
        value: int = struct.unpack_from("<Q", raw, offset)[0]
        return value

    return SnpReport(
        version=version, guest_svn=guest_svn, policy=policy, family_id=family_id, image_id=image_id,
        vmpl=vmpl, signature_algo=sig_algo, current_tcb=SnpTcb(current_tcb),
        platform_info=platform_info, signer_info=signer_info,
        report_data=raw[0x50:0x90], measurement=raw[0x90:0xC0], host_data=raw[0xC0:0xE0],
        id_key_digest=raw[0xE0:0x110], author_key_digest=raw[0x110:0x140],
        report_id=raw[0x140:0x160], report_id_ma=raw[0x160:0x180], reported_tcb=SnpTcb(u64(0x180)),
        cpuid_fms=cpuid_fms, chip_id=raw[0x1A0:0x1E0], committed_tcb=SnpTcb(u64(0x1E0)),
        current_version=(raw[0x1EA], raw[0x1E9], raw[0x1E8]),
        committed_version=(raw[0x1EE], raw[0x1ED], raw[0x1EC]),
        launch_tcb=SnpTcb(u64(0x1F0)), launch_mit_vector=u64(0x1F8), current_mit_vector=u64(0x200),
        signature_r=raw[SIGNED_SIZE:SIGNED_SIZE + 72], signature_s=raw[SIGNED_SIZE + 72:SIGNED_SIZE + 144],
        raw=raw,
    )


def build_snp_report(
    *,
    report_data: bytes,
    measurement: bytes,
    version: int = 2,
    guest_svn: int = 0,
    policy: int = 0x30000,
    vmpl: int = 0,
    reported_tcb: int = 0,
    chip_id: bytes = bytes(64),
    host_data: bytes = bytes(32),
    cpuid_fms: bytes = bytes(3),
    signature: bytes = bytes(144),
    family_id: bytes = bytes(16),
    image_id: bytes = bytes(16),
    platform_info: int = 0,
    report_id: bytes = bytes(32),
) -> SnpReport:
    """Assemble a report (for tests and the simulated SNP authority); ``signature`` = R‖S
    little-endian, 72 bytes each (sign ``signed_bytes`` of an unsigned one)."""
    if len(report_data) != 64 or len(measurement) != 48 or len(chip_id) != 64 or len(host_data) != 32:
        raise FormatError("report_data 64, measurement 48, chip_id 64, host_data 32 bytes")
    if len(family_id) != 16 or len(image_id) != 16 or len(report_id) != 32 or len(cpuid_fms) != 3:
        raise FormatError("family_id and image_id 16, report_id 32, cpuid_fms 3 bytes")
    raw = bytearray(REPORT_SIZE)
    try:
        _HEAD.pack_into(raw, 0, version, guest_svn, policy, family_id, image_id, vmpl,
                        SIGNATURE_ALGO_ECDSA_P384_SHA384, reported_tcb, platform_info, 0)
        struct.pack_into("<Q", raw, 0x180, reported_tcb)
    except struct.error as exc:
        raise FormatError(f"SNP report field out of range: {exc}") from exc
    raw[0x50:0x90] = report_data
    raw[0x90:0xC0] = measurement
    raw[0xC0:0xE0] = host_data
    raw[0x140:0x160] = report_id
    if version >= 3:
        raw[0x188:0x18B] = cpuid_fms
    raw[0x1A0:0x1E0] = chip_id
    struct.pack_into("<Q", raw, 0x1E0, reported_tcb)
    struct.pack_into("<Q", raw, 0x1F0, reported_tcb)
    raw[SIGNED_SIZE:SIGNED_SIZE + 144] = signature
    return parse_snp_report(bytes(raw))
