"""The two facts about an ELF file the runelet runtime folder needs: its program
interpreter (the dynamic loader) and the shared libraries it names (DT_NEEDED).

Only 64-bit little-endian ELF (x86-64, AArch64 hosts) is read; anything else or anything
malformed raises :class:`ElfError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from inclavare.errors import FormatError

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB = 0, 1, 5
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_DYN = struct.Struct("<qQ")
MAX_SIZE = 1 << 31


class ElfError(FormatError):
    """Not a readable 64-bit little-endian ELF file."""


@dataclass(frozen=True)
class ElfInfo:
    interpreter: str | None
    needed: tuple[str, ...]


def _cstring(data: bytes, offset: int, what: str) -> str:
    if not 0 <= offset < len(data):
        raise ElfError(f"{what} lies outside the file")
    end = data.find(b"\x00", offset)
    if end < 0:
        raise ElfError(f"{what} is not terminated")
    try:
        return data[offset:end].decode("utf-8")
    except UnicodeDecodeError:
        raise ElfError(f"{what} is not UTF-8") from None


def parse_elf(data: bytes) -> ElfInfo:
    """Interpreter and DT_NEEDED names of an ELF image held in ``data``."""
    if len(data) < _EHDR.size or data[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError("only 64-bit little-endian ELF files are supported")
    fields = _EHDR.unpack_from(data, 0)
    phoff, phentsize, phnum = fields[5], fields[9], fields[10]
    if phnum and phentsize < _PHDR.size:
        raise ElfError("program header entries are too small")
    if phoff + phnum * phentsize > len(data):
        raise ElfError("program headers lie outside the file")
    loads: list[tuple[int, int, int]] = []
    interp: str | None = None
    dynamic: tuple[int, int] | None = None
    for i in range(phnum):
        p_type, _flags, off, vaddr, _paddr, filesz, _memsz, _align = _PHDR.unpack_from(
            data, phoff + i * phentsize)
        if off + filesz > len(data):
            raise ElfError("a segment lies outside the file")
        if p_type == PT_LOAD:
            loads.append((vaddr, off, filesz))
        elif p_type == PT_INTERP:
            interp = _cstring(data[off:off + filesz] + b"\x00", 0, "the interpreter path")
        elif p_type == PT_DYNAMIC:
            dynamic = (off, filesz)
    if dynamic is None:
        return ElfInfo(interp, ())

    def file_offset(vaddr: int) -> int:
        for start, off, size in loads:
            if start <= vaddr < start + size:
                return off + (vaddr - start)
        raise ElfError("the dynamic string table is not in a loaded segment")

    entries: list[tuple[int, int]] = []
    off, size = dynamic
    for pos in range(off, off + size - _DYN.size + 1, _DYN.size):
        tag, value = _DYN.unpack_from(data, pos)
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    strtab = [v for t, v in entries if t == DT_STRTAB]
    needed_offsets = [v for t, v in entries if t == DT_NEEDED]
    if not needed_offsets:
        return ElfInfo(interp, ())
    if len(strtab) != 1:
        raise ElfError("the dynamic section has no single string table")
    base = file_offset(strtab[0])
    return ElfInfo(interp, tuple(_cstring(data, base + n, "a DT_NEEDED name") for n in needed_offsets))


def read_elf(path: str) -> ElfInfo:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIZE)
    except OSError as exc:
        raise ElfError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_elf(data)
    except ElfError as exc:
        raise ElfError(f"{path}: {exc}") from None
