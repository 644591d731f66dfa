"""CoCo's AnnotationPacket: a layer's private options wrapped under a KBS-held key.

The attestation-agent keyprovider writes ``{"kid","wrapped_data","iv","wrap_type"}`` (base64
standard, AES-256-GCM with the 16-byte tag appended), so an image wrapped here opens with CoCo's
tooling and theirs with ours: the key-encryption key is the KBS resource ``kid`` names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from inclavare.crypto.b64 import b64std_decode, b64std_encode
from inclavare.errors import FormatError, InclavareError
from inclavare.formats.strict_json import loads_strict, require_object, require_str
from inclavare.services.kbs.resource_path import ResourcePath, parse_resource_path

KID_PREFIX = "kbs:///"
WRAP_TYPE = "A256GCM"
KEY_SIZE = 32


class ImageKeyError(InclavareError):
    """A layer key could not be wrapped or unwrapped (unknown key id, wrong key, bad packet)."""


def parse_kid(kid: str) -> ResourcePath:
    """``kbs:///REPO/TYPE/TAG`` -> the KBS resource path (a host part is not ours to follow)."""
    if not kid.startswith(KID_PREFIX):
        raise ImageKeyError(f"key id {kid[:120]!r} must look like kbs:///REPO/key/TAG")
    try:
        return parse_resource_path(kid[len(KID_PREFIX):])
    except InclavareError:
        raise ImageKeyError(f"key id {kid[:120]!r} must look like kbs:///REPO/key/TAG") from None


@dataclass(frozen=True)
class AnnotationPacket:
    kid: str
    wrapped_data: bytes
    iv: bytes
    wrap_type: str = WRAP_TYPE

    def to_json(self) -> bytes:
        return json.dumps({"kid": self.kid, "wrapped_data": b64std_encode(self.wrapped_data),
                           "iv": b64std_encode(self.iv), "wrap_type": self.wrap_type},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> AnnotationPacket:
        try:
            doc = require_object(loads_strict(data, "annotation packet"), "annotation packet")
            packet = cls(require_str(doc, "kid", "annotation packet"),
                         b64std_decode(doc.get("wrapped_data"), "annotation packet wrapped_data"),
                         b64std_decode(doc.get("iv"), "annotation packet iv"),
                         require_str(doc, "wrap_type", "annotation packet"))
        except FormatError as exc:
            raise ImageKeyError(str(exc)) from None
        parse_kid(packet.kid)
        return packet


def check_kek(kek: bytes, kid: str) -> bytes:
    if len(kek) != KEY_SIZE:
        raise ImageKeyError(f"key {kid} is {len(kek)} bytes; an A256GCM key-encryption key is {KEY_SIZE}")
    return kek


def wrap(kid: str, kek: bytes, optsdata: bytes) -> AnnotationPacket:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    iv = os.urandom(12)
    return AnnotationPacket(kid, AESGCM(check_kek(kek, kid)).encrypt(iv, optsdata, None), iv)


def unwrap(packet: AnnotationPacket, kek: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if packet.wrap_type != WRAP_TYPE:
        raise ImageKeyError(f"wrap_type {packet.wrap_type[:40]!r} is not supported (only {WRAP_TYPE})")
    if len(packet.iv) != 12:
        raise ImageKeyError(f"annotation packet iv is {len(packet.iv)} bytes, not 12")
    try:
        return AESGCM(check_kek(kek, packet.kid)).decrypt(packet.iv, packet.wrapped_data, None)
    except InvalidTag:
        raise ImageKeyError(f"key {packet.kid} does not open this layer's wrapped key (wrong key)") from None
