"""PEM blocks exactly as the reference DCAP verifier reads them.

Certificate chains in quotes (certification data type 5) and in collateral are concatenated PEM.
To give the same verdicts as dcap-qvl, blocks are found with the same rules as the Rust ``pem``
crate it uses: a block is ``-----BEGIN <label>-----`` … ``-----END <label>-----``; text between
blocks is ignored; scanning stops silently at the first incomplete block; within a block the
base64 text loses every Unicode whitespace character and must then be canonical standard
base64 (padding present, unused bits zero). Any malformed *complete* block fails the whole
chain. Which certificates then matter is decided by path building (``inclavare.crypto.x509_chain``),
so a dropped or unparsable surplus block after the needed ones does not change a verdict.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from inclavare.errors import FormatError

MAX_SECTION_SIZE = 10 * 1024 * 1024

# Rust's char::is_whitespace (Unicode White_Space); Python's str.isspace differs (\x1c-\x1f).
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) + \
    "\u2028\u2029\u202f\u205f\u3000"
_DROP_WHITESPACE = {ord(c): None for c in _WHITESPACE}
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_B64_VALUE = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}

_BEGIN = b"-----BEGIN "
_DASHES = b"-----"
_END = b"-----END "


@dataclass(frozen=True, slots=True)
class PemBlock:
    label: str
    contents: bytes
    headers: tuple[str, ...] = ()


def decode_canonical_base64(text: str) -> bytes:
    """Strict standard base64: alphabet, canonical padding, zero unused bits."""
    if _BASE64.fullmatch(text) is None:
        raise FormatError("invalid base64 in PEM block")
    if text.endswith("=="):
        if _B64_VALUE[text[-3]] & 0x0F:
            raise FormatError("non-canonical base64 (unused bits set) in PEM block")
    elif text.endswith("=") and _B64_VALUE[text[-2]] & 0x03:
        raise FormatError("non-canonical base64 (unused bits set) in PEM block")
    return binascii.a2b_base64(text)


def _read_until(data: bytes, start: int, marker: bytes) -> tuple[int, int] | None:
    """Find ``marker`` from ``start`` with the reference scanner's semantics: after a partial
    match fails, scanning resumes *after* the mismatching byte (no re-check, no backtracking).
    Returns (marker_start, marker_end) or None."""
    n, m = len(data), len(marker)
    first = marker[0:1]
    i = start
    while True:
        i = data.find(first, i)
        if i < 0 or n - i < m:
            return None
        i += 1
        found = 1
        while found < m:
            if n - i < m - found:
                return None
            if data[i] == marker[found]:
                found += 1
                i += 1
            else:
                i += 1
                break
        else:
            return i - m, i


def _skip_space(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos] in b" \t\n\r":
        pos += 1
    return pos


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError("PEM block is not valid UTF-8") from exc


def _block(begin: bytes, headers: bytes, body: bytes, end: bytes) -> PemBlock:
    label = _utf8(begin)
    if not label:
        raise FormatError("PEM block without a BEGIN label")
    end_label = _utf8(end)
    if not end_label:
        raise FormatError("PEM block without an END label")
    if label != end_label:
        raise FormatError(f"PEM BEGIN label {label!r} does not match END label {end_label!r}")
    contents = decode_canonical_base64(_utf8(body).translate(_DROP_WHITESPACE))
    header_lines = tuple(line[:-1] if line.endswith("\r") else line
                         for line in _utf8(headers).split("\n"))
    if header_lines and header_lines[-1] == "":
        header_lines = header_lines[:-1]
    for line in header_lines:
        if ":" not in line:
            raise FormatError("malformed PEM header line")
    return PemBlock(label, contents, header_lines)


def parse_pem_blocks(data: bytes | str) -> tuple[PemBlock, ...]:
    """All complete PEM blocks in ``data``, in order (see the module docstring for the rules)."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    blocks: list[PemBlock] = []
    pos = 0
    while pos < len(raw):
        found = _read_until(raw, pos, _BEGIN)
        if found is None:
            break
        label_end = _read_until(raw, found[1], _DASHES)
        if label_end is None:
            break
        begin = raw[found[1]:label_end[0]]
        payload_start = _skip_space(raw, label_end[1])
        end_marker = _read_until(raw, payload_start, _END)
        if end_marker is None:
            break
        payload = raw[payload_start:end_marker[0]]
        end_label = _read_until(raw, end_marker[1], _DASHES)
        if end_label is None:
            break
        end = raw[end_marker[1]:end_label[0]]
        if len(payload) > MAX_SECTION_SIZE:
            raise FormatError("PEM section exceeds 10 MB")
        split = _read_until(payload, 0, b"\n\n") or _read_until(payload, 0, b"\r\n\r\n")
        headers, body = (payload[:split[0]], payload[split[1]:]) if split else (b"", payload)
        blocks.append(_block(begin, headers, body, end))
        pos = _skip_space(raw, end_label[1])
    return tuple(blocks)


def encode_pem(label: str, der: bytes) -> str:
    """Standard PEM (64-column base64, LF line endings)."""
    b64 = binascii.b2a_base64(der, newline=False).decode("ascii")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return f"-----BEGIN {label}-----\n" + "".join(line + "\n" for line in lines) + f"-----END {label}-----\n"
