"""ocicrypt's layer cipher, ``AES_256_CTR_HMAC_SHA256`` (containers/ocicrypt blockcipher), in Python.

Debian's skopeo links ocicrypt 1.0.3, which predates key providers, so the layer encryption that
ocicrypt >= 1.1 would do around our provider is done here, byte-compatible: a fresh 32-byte key
and 16-byte nonce per layer, AES-256-CTR, HMAC-SHA256 (keyed by the same key) over the ciphertext
in the public options, the plaintext digest in the private ones. Go's ``[]byte`` is base64.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from inclavare.crypto.b64 import b64std_decode, b64std_encode
from inclavare.errors import FormatError
from inclavare.formats.strict_json import loads_strict, require_object, require_str
from inclavare.images.annotation_packet import ImageKeyError

CIPHER = "AES_256_CTR_HMAC_SHA256"
CHUNK = 1 << 20


@dataclass(frozen=True)
class LayerKey:
    symkey: bytes
    nonce: bytes
    digest: str  # sha256 of the plaintext layer, as ocicrypt records it

    def private_opts(self) -> bytes:
        return json.dumps({"symkey": b64std_encode(self.symkey), "digest": self.digest,
                           "cipheroptions": {"nonce": b64std_encode(self.nonce)}}, separators=(",", ":")).encode()

    @classmethod
    def from_private_opts(cls, data: bytes) -> LayerKey:
        try:
            doc = require_object(loads_strict(data, "layer private options"), "layer private options")
            nonce = require_object(doc.get("cipheroptions"), "layer cipheroptions").get("nonce")
            key = cls(b64std_decode(doc.get("symkey"), "symkey"), b64std_decode(nonce, "nonce"),
                      require_str(doc, "digest", "layer private options"))
        except FormatError as exc:
            raise ImageKeyError(str(exc)) from None
        if len(key.symkey) != 32 or len(key.nonce) != 16:
            raise ImageKeyError("layer private options: symkey must be 32 bytes and nonce 16")
        return key


def public_opts(mac: bytes) -> str:
    """The ``org.opencontainers.image.enc.pubopts`` annotation value."""
    doc = {"cipher": CIPHER, "hmac": b64std_encode(mac), "cipheroptions": {}}
    return b64std_encode(json.dumps(doc, separators=(",", ":")).encode())


def parse_public_opts(value: str) -> bytes:
    try:
        doc = require_object(loads_strict(b64std_decode(value, "pubopts"), "pubopts"), "pubopts")
        if doc.get("cipher") != CIPHER:
            raise ImageKeyError(f"layer cipher {str(doc.get('cipher'))[:40]!r} is not {CIPHER}")
        return b64std_decode(doc.get("hmac"), "pubopts hmac")
    except FormatError as exc:
        raise ImageKeyError(str(exc)) from None


def _chunks(src: BinaryIO) -> Iterator[bytes]:
    while chunk := src.read(CHUNK):
        yield chunk


def _ctr(key: LayerKey):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    return Cipher(algorithms.AES(key.symkey), modes.CTR(key.nonce)).encryptor()


def encrypt_stream(src: BinaryIO, dst: BinaryIO, plain_digest: str) -> tuple[LayerKey, bytes, str, int]:
    """Encrypt a layer; returns (its key, the HMAC, the ciphertext's digest and size)."""
    key = LayerKey(os.urandom(32), os.urandom(16), plain_digest)
    ctr, mac, sha, size = _ctr(key), hmac.new(key.symkey, digestmod="sha256"), hashlib.sha256(), 0
    for chunk in _chunks(src):
        out = ctr.update(chunk)
        mac.update(out)
        sha.update(out)
        dst.write(out)
        size += len(out)
    return key, mac.digest(), "sha256:" + sha.hexdigest(), size


def decrypt_stream(src: BinaryIO, dst: BinaryIO, key: LayerKey, expected_mac: bytes) -> tuple[str, int]:
    """Decrypt a layer, refusing a wrong HMAC or a plaintext digest other than the recorded one."""
    ctr, mac, sha, size = _ctr(key), hmac.new(key.symkey, digestmod="sha256"), hashlib.sha256(), 0
    for chunk in _chunks(src):
        mac.update(chunk)
        out = ctr.update(chunk)
        sha.update(out)
        dst.write(out)
        size += len(out)
    if not hmac.compare_digest(mac.digest(), expected_mac):
        raise ImageKeyError("layer HMAC does not match: the encrypted layer was altered")
    digest = "sha256:" + sha.hexdigest()
    if digest != key.digest:
        raise ImageKeyError(f"decrypted layer is {digest}, not the recorded {key.digest}")
    return digest, size
