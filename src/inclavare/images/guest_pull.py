"""Guest pull: an image fetched, verified, decrypted and unpacked inside the enclave.

The host only relays bytes (:mod:`inclavare.services.agent.channel`), so everything it could
alter is checked here: the manifest by the digest the tenant pinned (``enclave.image``), the
config and every layer by the manifest's digests and sizes, an encrypted layer by its HMAC and
by the plaintext digest its (KBS-wrapped, authenticated) private options record. A layer key is
unwrapped with the key-encryption key ``fetch_key(kid)`` returns — the KBS resource the
enclave obtains with its own evidence. Ciphertext is decrypted while it streams in; the plaintext
is written only to the enclave-private directory and unpacked only after every check passed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inclavare.crypto.b64 import b64std_decode
from inclavare.errors import FormatError, InclavareError
from inclavare.formats.strict_json import loads_strict, require_list, require_object
from inclavare.images.annotation_packet import AnnotationPacket, check_kek, unwrap
from inclavare.images.layer_cipher import LayerKey, parse_public_opts
from inclavare.images.layout import ENC_SUFFIX, PUBOPTS
from inclavare.images.reference import ImageRef
from inclavare.images.unpack import UnpackLimits, unpack_layer
from inclavare.services.http_transport import HttpTransport, TransportError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
KEY_ANNOTATIONS = ("org.opencontainers.image.enc.keys.provider.inclavare",
                   "org.opencontainers.image.enc.keys.provider.attestation-agent")
MAX_MANIFEST = 4 << 20
MAX_CONFIG = 4 << 20
MAX_LAYERS = 128
MAX_LAYER_BYTES = 4 << 30  # one compressed layer (the tmpfs size caps the sum)
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


class GuestPullError(InclavareError):
    """The image cannot be pulled, verified or opened: the workload does not run."""


@dataclass(frozen=True)
class ExecPlan:
    """What enclave-init runs in the unpacked tree (from the image config)."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int  # -1: the container's own
    gid: int

    def encode(self) -> bytes:
        """NUL-separated, as enclave-init reads it: magic, cwd, uid, gid, argc, args, envc, env."""
        fields = ["inclavare-exec-v1", self.cwd, str(self.uid), str(self.gid), str(len(self.args)), *self.args,
                  str(len(self.env)), *self.env]
        if any("\0" in f for f in fields):
            raise GuestPullError("the image config holds a NUL character in its command or environment")
        return "\0".join(fields).encode() + b"\0"


Progress = Callable[[str], None]
FetchKey = Callable[[str], bytes]


def _short(digest: str) -> str:
    return digest[:19]


class RegistryClient:
    """The registry API (distribution spec) over one transport; answers are untrusted bytes."""

    def __init__(self, transport: HttpTransport, repository: str) -> None:
        self.http = transport
        self.repository = repository

    def _get(self, what: str, path: str, headers: dict[str, str] | None = None,
             sink: Callable[[bytes], None] | None = None, limit: int = MAX_MANIFEST) -> tuple[bytes, str]:
        try:
            resp = self.http.request("GET", f"/v2/{self.repository}/{path}", headers=headers, sink=sink, limit=limit)
        except TransportError as exc:
            raise GuestPullError(f"cannot fetch the {what} from the registry: {exc}") from None
        if resp.status == 401:
            raise GuestPullError(f"the registry asks for authentication to fetch the {what} (guest pull reaches "
                                 "registries that serve the image without credentials)")
        if resp.status in (301, 302, 303, 307, 308):
            raise GuestPullError(f"the registry redirects the {what} to another location; guest pull follows no "
                                 "redirects (the relay reaches the configured registries only)")
        if resp.status != 200:
            raise GuestPullError(f"the registry answered {resp.status} for the {what}: "
                                 f"{resp.body[:200].decode('utf-8', 'replace').strip()}")
        return resp.body, resp.header("content-type") or ""

    def manifest(self, digest: str) -> tuple[dict[str, Any], str]:
        body, content_type = self._get(f"manifest {_short(digest)}", f"manifests/{digest}", {"accept": ACCEPT})
        _check_digest(body, digest, f"manifest {_short(digest)}")
        try:
            doc = require_object(loads_strict(body, "image manifest"), "image manifest")
        except FormatError as exc:
            raise GuestPullError(str(exc)) from None
        media = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else content_type.split(";")[0]
        return doc, str(media)

    def blob(self, digest: str, size: int, sink: Callable[[bytes], None], limit: int) -> None:
        got = [0]

        def counted(data: bytes) -> None:
            got[0] += len(data)
            sink(data)

        self._get(f"blob {_short(digest)}", f"blobs/{digest}", sink=counted, limit=limit)
        if got[0] != size:
            raise GuestPullError(f"blob {_short(digest)} is {got[0]} bytes, the manifest says {size}")


def _check_digest(data: bytes, digest: str, what: str) -> None:
    if not hmac.compare_digest("sha256:" + hashlib.sha256(data).hexdigest(), digest):
        raise GuestPullError(f"{what} does not match its digest: the registry or the host altered it")


def _descriptor(value: Any, what: str) -> tuple[str, str, int, dict[str, Any]]:
    try:
        d = require_object(value, what)
        digest, media, size = d.get("digest"), d.get("mediaType", ""), d.get("size")
        annotations = d.get("annotations") or {}
        if not (isinstance(digest, str) and digest.startswith("sha256:") and len(digest) == 71
                and all(c in "0123456789abcdef" for c in digest[7:])):
            raise FormatError(f"{what} digest is not sha256:<64 hex>")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise FormatError(f"{what} size is not a non-negative integer")
        if not isinstance(media, str) or not isinstance(annotations, dict):
            raise FormatError(f"{what} mediaType/annotations are malformed")
    except FormatError as exc:
        raise GuestPullError(str(exc)) from None
    return digest, media, size, annotations


def resolve_manifest(client: RegistryClient, digest: str, progress: Progress) -> dict[str, Any]:
    """The image manifest the pinned digest names (through an index: this platform's entry)."""
    doc, media = client.manifest(digest)
    if media in (OCI_INDEX, DOCKER_LIST) or ("manifests" in doc and "layers" not in doc):
        entries = [m for m in doc.get("manifests") or [] if isinstance(m, dict)
                   and isinstance(m.get("platform"), dict) and m["platform"].get("os") == "linux"
                   and m["platform"].get("architecture") == ARCH]
        if not entries:
            raise GuestPullError(f"the image index {_short(digest)} has no linux/{ARCH} manifest")
        child, _, _, _ = _descriptor(entries[0], "index entry")
        progress(f"index {_short(digest)} -> linux/{ARCH} manifest {_short(child)}")
        doc, media = client.manifest(child)
    if media not in (OCI_MANIFEST, DOCKER_MANIFEST) or not isinstance(doc.get("layers"), list):
        raise GuestPullError(f"{_short(digest)} is not an image manifest (media type {media[:80]!r})")
    return doc


class _LayerSink:
    """Hashes what arrives; for an encrypted layer also MACs and decrypts it; writes the result."""

    def __init__(self, out: Any, key: LayerKey | None) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.key = key
        if key is not None:
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

            self.ctr = Cipher(algorithms.AES(key.symkey), modes.CTR(key.nonce)).decryptor()
            self.mac = hmac.new(key.symkey, digestmod="sha256")
            self.plain = hashlib.sha256()

    def __call__(self, data: bytes) -> None:
        self.sha.update(data)
        if self.key is None:
            self.out.write(data)
            return
        self.mac.update(data)
        plain = self.ctr.update(data)
        self.plain.update(plain)
        self.out.write(plain)


def _layer_key(annotations: dict[str, Any], fetch_key: FetchKey, keks: dict[str, bytes]) -> tuple[LayerKey, bytes, str]:
    """The layer's key, unwrapped here with the KBS key its AnnotationPacket names."""
    value = next((annotations[k] for k in KEY_ANNOTATIONS if isinstance(annotations.get(k), str)), None)
    if value is None:
        raise GuestPullError("an encrypted layer carries no key wrapped for the inclavare or attestation-agent "
                             "provider")
    mac = parse_public_opts(str(annotations.get(PUBOPTS, "")))
    error: InclavareError | None = None
    for part in value.split(","):
        packet = AnnotationPacket.from_json(b64std_decode(part, "layer key annotation"))
        if packet.kid not in keks:
            keks[packet.kid] = check_kek(fetch_key(packet.kid), packet.kid)
        try:
            return LayerKey.from_private_opts(unwrap(packet, keks[packet.kid])), mac, packet.kid
        except InclavareError as exc:
            error = exc
    assert error is not None
    raise error


def pull(ref: ImageRef, client: RegistryClient, fetch_key: FetchKey, target: str, progress: Progress,
         limits: UnpackLimits | None = None) -> ExecPlan:
    """Pull ``ref`` into ``target``/rootfs and return what to run; raises on any failed check."""
    limits = limits or UnpackLimits()
    started = time.monotonic()
    manifest = resolve_manifest(client, ref.digest, progress)
    layers = manifest["layers"]
    if len(layers) > MAX_LAYERS:
        raise GuestPullError(f"the image has {len(layers)} layers; at most {MAX_LAYERS} are pulled")
    cdigest, _, csize, _ = _descriptor(manifest.get("config"), "config descriptor")
    if csize > MAX_CONFIG:
        raise GuestPullError(f"the image config is {csize} bytes; at most {MAX_CONFIG}")
    chunks: list[bytes] = []
    client.blob(cdigest, csize, chunks.append, MAX_CONFIG)
    config_bytes = b"".join(chunks)
    _check_digest(config_bytes, cdigest, "image config")
    encrypted = sum(1 for layer in layers if isinstance(layer, dict)
                    and str(layer.get("mediaType", "")).endswith(ENC_SUFFIX))
    progress(f"pulling {ref} ({len(layers)} layer(s), {encrypted} encrypted)")
    rootfs = os.path.join(target, "rootfs")
    os.makedirs(rootfs, mode=0o755, exist_ok=True)
    keks: dict[str, bytes] = {}
    total = 0
    for i, layer in enumerate(layers, 1):
        digest, media, size, annotations = _descriptor(layer, f"layer {i}")
        if size > MAX_LAYER_BYTES:
            raise GuestPullError(f"layer {i} is {size} bytes; at most {MAX_LAYER_BYTES >> 20} MiB")
        key = mac = None
        kid = ""
        if media.endswith(ENC_SUFFIX):
            key, mac, kid = _layer_key(annotations, fetch_key, keks)
        fd, tmp = tempfile.mkstemp(dir=target, prefix=".layer-")
        try:
            with os.fdopen(fd, "wb") as out:
                sink = _LayerSink(out, key)
                client.blob(digest, size, sink, MAX_LAYER_BYTES)
            if not hmac.compare_digest("sha256:" + sink.sha.hexdigest(), digest):
                raise GuestPullError(f"layer {i} ({_short(digest)}) does not match its digest: the registry or "
                                     "the host altered it")
            if key is not None:
                if not hmac.compare_digest(sink.mac.digest(), mac or b""):
                    raise GuestPullError(f"layer {i} HMAC does not match: the encrypted layer was altered")
                if not hmac.compare_digest("sha256:" + sink.plain.hexdigest(), key.digest):
                    raise GuestPullError(f"layer {i} decrypts to another digest than its key records")
            if "zstd" in media:
                raise GuestPullError(f"layer {i} is zstd-compressed ({media[:80]}); guest pull reads tar and "
                                     "tar+gzip layers")
            with open(tmp, "rb") as plain:
                unpack_layer(plain, rootfs, limits)
        finally:
            os.unlink(tmp)
        total += size
        progress(f"layer {i}/{len(layers)} {_short(digest)} {size} bytes "
                 + (f"decrypted (key {kid}) and unpacked" if key is not None else "verified and unpacked"))
    plan = exec_plan(config_bytes, rootfs)
    progress(f"{ref} ready: {total} bytes in {time.monotonic() - started:.2f} s; running {plan.args[0]}")
    return plan


def exec_plan(config_bytes: bytes, rootfs: str) -> ExecPlan:
    """Entrypoint + Cmd, Env, WorkingDir and User of an image config."""
    try:
        doc = require_object(loads_strict(config_bytes, "image config"), "image config")
        cfg = require_object(doc.get("config") or {}, "image config.config")
        args = [*(require_list(cfg, "Entrypoint", "image config", optional=True) or []),
                *(require_list(cfg, "Cmd", "image config", optional=True) or [])]
        env = require_list(cfg, "Env", "image config", optional=True) or []
    except FormatError as exc:
        raise GuestPullError(str(exc)) from None
    if not args or not all(isinstance(a, str) for a in args):
        raise GuestPullError("the image config names no command (Entrypoint and Cmd are empty)")
    if not all(isinstance(e, str) and "=" in e for e in env):
        raise GuestPullError("the image config's Env must be NAME=VALUE strings")
    cwd = cfg.get("WorkingDir") or "/"
    user = cfg.get("User") or ""
    if not isinstance(cwd, str) or not cwd.startswith("/") or not isinstance(user, str):
        raise GuestPullError("the image config's WorkingDir must be absolute and User a string")
    uid, gid = _user(user, rootfs)
    return ExecPlan(tuple(args), tuple(env), cwd, uid, gid)


def _user(user: str, rootfs: str) -> tuple[int, int]:
    """``USER`` as ``uid[:gid]`` or names from the image's /etc/passwd and /etc/group."""
    if not user:
        return -1, -1
    name, _, group = user.partition(":")

    def lookup(path: str, key: str, field: int) -> int:
        if key.isdigit():
            return int(key)
        try:
            with open(os.path.join(rootfs, path), encoding="utf-8", errors="replace") as f:
                for line in f:
                    cols = line.rstrip("\n").split(":")
                    if len(cols) > field and cols[0] == key and cols[field].isdigit():
                        return int(cols[field])
        except OSError:
            pass
        raise GuestPullError(f"the image's user {user[:60]!r} is not in its /{path}")

    uid = lookup("etc/passwd", name, 2)
    if group:
        gid = lookup("etc/group", group, 2)
    elif name.isdigit():
        gid = uid
    else:
        gid = lookup("etc/passwd", name, 3)
    return uid, gid
