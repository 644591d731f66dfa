"""Encrypting and decrypting the layers of one image in an OCI image layout directory (what
``skopeo copy … oci:DIR:REF`` writes), rewriting its manifest and index as ocicrypt would."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

from inclavare.errors import FormatError
from inclavare.formats.strict_json import loads_strict, require_list, require_object
from inclavare.images.annotation_packet import ImageKeyError
from inclavare.images.layer_cipher import LayerKey, decrypt_stream, encrypt_stream, parse_public_opts, public_opts

ENC_SUFFIX = "+encrypted"
PUBOPTS = "org.opencontainers.image.enc.pubopts"
KEYS_PREFIX = "org.opencontainers.image.enc.keys."
REF_NAME = "org.opencontainers.image.ref.name"

Wrapper = Callable[[bytes], bytes]  # private options -> the annotation's bytes
Unwrapper = Callable[[bytes], bytes]  # the annotation's bytes -> private options


class Layout:
    def __init__(self, root: str, ref: str) -> None:
        self.root, self.ref = root, ref
        self.index = self._json(os.path.join(root, "index.json"), "index.json")
        entries = [m for m in require_list(self.index, "manifests", "index.json")
                   if isinstance(m, dict) and (m.get("annotations") or {}).get(REF_NAME) == ref]
        if len(entries) != 1:
            raise FormatError(f"OCI layout {root} has no single manifest named {ref!r}")
        self.entry: dict[str, Any] = entries[0]
        self.manifest = self._json(self.blob(str(self.entry.get("digest"))), "manifest")

    def blob(self, digest: str) -> str:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
            raise FormatError(f"digest {digest[:80]!r} is not sha256:<64 hex>")
        return os.path.join(self.root, "blobs", "sha256", hexd)

    @staticmethod
    def _json(path: str, what: str) -> dict[str, Any]:
        with open(path, "rb") as f:
            return require_object(loads_strict(f.read(), what), what)

    def layers(self) -> list[dict[str, Any]]:
        return [require_object(x, "manifest layer") for x in require_list(self.manifest, "layers", "manifest")]

    def transform(self, src_digest: str, run: Callable[[Any, Any], str]) -> tuple[str, int]:
        """Stream one blob through ``run(src, dst) -> new digest`` into a new blob."""
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".blob-")
        try:
            with open(self.blob(src_digest), "rb") as src, os.fdopen(fd, "wb") as dst:
                digest = run(src, dst)
            size = os.path.getsize(tmp)
            os.replace(tmp, self.blob(digest))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return digest, size

    def save(self) -> None:
        data = json.dumps(self.manifest, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with open(self.blob(digest), "wb") as f:
            f.write(data)
        self.entry.update(digest=digest, size=len(data))
        with open(os.path.join(self.root, "index.json"), "w") as f:
            json.dump(self.index, f)


def encrypt_layout(root: str, ref: str, annotation_key: str, wrap: Wrapper) -> int:
    """Encrypt every plaintext layer; returns how many were encrypted."""
    layout, count = Layout(root, ref), 0
    for layer in layout.layers():
        media = str(layer.get("mediaType", ""))
        if media.endswith(ENC_SUFFIX):
            continue
        result: dict[str, Any] = {}

        def run(src: Any, dst: Any, plain: str = str(layer.get("digest"))) -> str:
            result["key"], result["mac"], digest, _ = encrypt_stream(src, dst, plain)
            return str(digest)

        digest, size = layout.transform(str(layer.get("digest")), run)
        annotations = dict(layer.get("annotations") or {})
        annotations[annotation_key] = _b64(wrap(result["key"].private_opts()))
        annotations[PUBOPTS] = public_opts(result["mac"])
        layer.update(mediaType=media + ENC_SUFFIX, digest=digest, size=size, annotations=annotations)
        count += 1
    layout.save()
    return count


def decrypt_layout(root: str, ref: str, annotation_key: str, unwrap: Unwrapper) -> int:
    """Decrypt every layer wrapped for ``annotation_key``; returns how many were decrypted."""
    layout, count = Layout(root, ref), 0
    for layer in layout.layers():
        media = str(layer.get("mediaType", ""))
        annotations = dict(layer.get("annotations") or {})
        if not media.endswith(ENC_SUFFIX):
            continue
        if annotation_key not in annotations:
            raise ImageKeyError(f"layer {layer.get('digest')} is not wrapped for {annotation_key}")
        mac = parse_public_opts(str(annotations.get(PUBOPTS, "")))
        key = LayerKey.from_private_opts(_first_opening(str(annotations[annotation_key]), annotation_key, unwrap))
        digest, size = layout.transform(str(layer.get("digest")), lambda s, d: decrypt_stream(s, d, key, mac)[0])
        for name in [k for k in annotations if k.startswith(KEYS_PREFIX) or k == PUBOPTS]:
            del annotations[name]
        layer.update(mediaType=media[:-len(ENC_SUFFIX)], digest=digest, size=size)
        if annotations:
            layer["annotations"] = annotations
        else:
            layer.pop("annotations", None)
        count += 1
    layout.save()
    return count


def _first_opening(value: str, annotation_key: str, unwrap: Unwrapper) -> bytes:
    """A layer may be wrapped several times (a comma list, as ocicrypt writes); the first that opens wins."""
    from inclavare.crypto.b64 import b64std_decode

    error: ImageKeyError | None = None
    for part in value.split(","):
        try:
            return unwrap(b64std_decode(part, annotation_key))
        except ImageKeyError as exc:
            error = exc
    assert error is not None
    raise error


def _b64(data: bytes) -> str:
    from inclavare.crypto.b64 import b64std_encode

    return b64std_encode(data)
