"""How much EPC this node has, and where: CPUID leaf 0x12 on SGX hosts, a number for the sim TEE.

On SGX hosts the EPC sections are read as Alibaba's and Intel's plugins read them: CPUID leaf
0x12, sub-leaves 2, 3, ... until a sub-leaf's type (EAX[3:0]) is 0; a section of type 1 has
size ``EDX[19:0] << 32 | ECX & 0xfffff000`` (Intel SDM Vol. 3D, table 37-6). The kernel's
per-NUMA-node ``sgx_total_bytes`` (Linux 5.17+) gives the devices their topology when present.
The SGX device nodes must exist too: without ``/dev/sgx_enclave`` nothing can use the EPC.

CPUID is one instruction Python cannot issue, so :func:`cpuid` runs six bytes of machine code
from an executable anonymous mapping (x86-64 only).
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import platform
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inclavare.errors import ConfigError, NotSupportedError

log = logging.getLogger("inclavare.deviceplugin")

SGX_ENCLAVE, SGX_PROVISION = "/dev/sgx_enclave", "/dev/sgx_provision"
SYSFS_NODES = "/sys/devices/system/node"
MIB = 1 << 20
# kubelet reads ListAndWatch with gRPC's default 4 MiB message limit: ~27 bytes per device.
MAX_DEVICES = 131072
SGX_LEAF = 0x12

Registers = tuple[int, int, int, int]  # eax, ebx, ecx, edx
Cpuid = Callable[[int, int], Registers]

# push rbx; mov eax,edi; mov ecx,esi; mov r8,rdx; cpuid; mov [r8],eax; mov [r8+4],ebx;
# mov [r8+8],ecx; mov [r8+12],edx; pop rbx; ret   (System V: leaf, subleaf, out)
_CPUID_CODE = bytes.fromhex("5389f889f14989d00fa241890041895804418948084189500c5bc3")
_cpuid_fn: Callable[[int, int, ctypes.Array[ctypes.c_uint32]], None] | None = None
_cpuid_map: mmap.mmap | None = None


def cpuid(leaf: int, subleaf: int = 0) -> Registers:
    """The CPUID instruction (x86-64 Linux)."""
    global _cpuid_fn, _cpuid_map
    if platform.machine() not in ("x86_64", "AMD64"):
        raise NotSupportedError(f"CPUID needs an x86-64 CPU, not {platform.machine()}")
    if _cpuid_fn is None:
        code = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        code.write(_CPUID_CODE)
        address = ctypes.addressof(ctypes.c_char.from_buffer(code))
        proto = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))
        _cpuid_map, _cpuid_fn = code, proto(address)  # the mapping lives as long as the function
    out = (ctypes.c_uint32 * 4)()
    _cpuid_fn(leaf, subleaf, out)
    return out[0], out[1], out[2], out[3]


def sgx_supported(read: Cpuid = cpuid) -> bool:
    """CPUID says SGX (leaf 7 EBX bit 2) and the SGX leaf exists."""
    if read(0, 0)[0] < SGX_LEAF:
        return False
    return bool(read(7, 0)[1] & (1 << 2))


def epc_sections(read: Cpuid = cpuid) -> list[int]:
    """Sizes in bytes of the EPC sections CPUID leaf 0x12 reports (sub-leaf 2 onwards)."""
    sizes = []
    for sub in range(2, 2 + 64):
        eax, _ebx, ecx, edx = read(SGX_LEAF, sub)
        kind = eax & 0xF
        if kind == 0:
            break
        if kind == 1:
            sizes.append(((edx & 0xFFFFF) << 32) | (ecx & 0xFFFFF000))
    return sizes


def numa_epc_bytes(sysfs: str = SYSFS_NODES) -> dict[int, int]:
    """EPC bytes per NUMA node from the kernel, or {} (older kernels, or no SGX)."""
    out: dict[int, int] = {}
    try:
        names = os.listdir(sysfs)
    except OSError:
        return out
    for name in names:
        if not name.startswith("node") or not name[4:].isdigit():
            continue
        try:
            with open(os.path.join(sysfs, name, "x86", "sgx_total_bytes")) as f:
                size = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if size > 0:
            out[int(name[4:])] = size
    return out


def is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


@dataclass(frozen=True)
class EpcInventory:
    """The node's EPC as devices: ``mib`` devices "0".."mib-1", the NUMA node of each (or none)."""

    mib: int
    simulated: bool
    device_nodes: tuple[str, ...] = ()  # checked for health and handed to containers
    numa: tuple[tuple[int, int], ...] = ()  # (node, MiB) in device-ID order; empty: no topology

    def node_of(self, index: int) -> int | None:
        first = 0
        for node, mib in self.numa:
            if index < first + mib:
                return node
            first += mib
        return None

    def describe(self) -> str:
        if self.simulated:
            return f"{self.mib} MiB of SIMULATED EPC (--epc-mib; no SGX on this node, no NUMA topology)"
        where = ", ".join(f"node {n}: {m} MiB" for n, m in self.numa) or "no NUMA topology from the kernel"
        return f"{self.mib} MiB of SGX EPC from CPUID leaf 0x12 ({where}); devices {', '.join(self.device_nodes)}"


def _capped(mib: int, what: str) -> int:
    if mib > MAX_DEVICES:
        log.warning("%s: %d MiB of EPC, advertising %d (one device per MiB must fit kubelet's 4 MiB "
                    "ListAndWatch message)", what, mib, MAX_DEVICES)
        return MAX_DEVICES
    return mib


def discover(epc_mib: int | None, read: Cpuid = cpuid, dev_nodes: Sequence[str] = (SGX_ENCLAVE, SGX_PROVISION),
             sysfs: str = SYSFS_NODES) -> EpcInventory:
    """SGX hardware when present; otherwise the simulated EPC ``epc_mib`` asks for.

    ``--epc-mib`` on an SGX host is refused: the hardware's size is the truth there."""
    enclave_node = dev_nodes[0]
    hardware = is_char_device(enclave_node)
    if hardware:
        try:
            supported = sgx_supported(read)
        except NotSupportedError:
            supported = False
        if not supported:
            raise NotSupportedError(f"{enclave_node} exists but CPUID reports no SGX leaf")
        if epc_mib is not None:
            raise ConfigError(f"--epc-mib is for nodes without SGX; this node has {enclave_node} "
                              "and its EPC size comes from CPUID")
        total = sum(epc_sections(read)) // MIB
        if total <= 0:
            raise NotSupportedError("CPUID leaf 0x12 reports no EPC section (is SGX enabled in the BIOS?)")
        per_node = numa_epc_bytes(sysfs)
        numa = tuple((n, b // MIB) for n, b in sorted(per_node.items())) if per_node else ()
        if numa and sum(m for _, m in numa) != total:
            log.warning("the kernel's per-node EPC (%d MiB) differs from CPUID's (%d MiB); no topology",
                        sum(m for _, m in numa), total)
            numa = ()
        present = tuple(p for p in dev_nodes if is_char_device(p))
        return EpcInventory(_capped(total, "SGX"), simulated=False, device_nodes=present, numa=numa)
    if epc_mib is None:
        raise ConfigError(f"no SGX on this node ({enclave_node} is missing): give --epc-mib N "
                          "to advertise N MiB of simulated EPC")
    if epc_mib <= 0:
        raise ConfigError(f"--epc-mib must be a positive number of MiB, not {epc_mib}")
    if epc_mib > MAX_DEVICES:
        raise ConfigError(f"--epc-mib {epc_mib} is more than {MAX_DEVICES} (one device per MiB must fit "
                          "kubelet's 4 MiB ListAndWatch message)")
    return EpcInventory(epc_mib, simulated=True)
