"""``inclavare image encrypt|decrypt|inspect``, for people who do not know ocicrypt.

skopeo moves the image (registry, archives) through a private OCI layout; the layers are
encrypted there with ocicrypt's cipher (layer_cipher) and each layer key is wrapped by a key
provider called as ocicrypt calls it (provider_client: our own cmd form by default, or a running
gRPC provider). Debian's skopeo links ocicrypt 1.0.3, which has no key providers, so
``skopeo --encryption-key provider:…`` itself needs a skopeo built with ocicrypt >= 1.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from inclavare.crypto.b64 import b64std_decode
from inclavare.errors import ConfigError, FormatError, InclavareError
from inclavare.formats.strict_json import loads_strict, require_list, require_object
from inclavare.images.annotation_packet import AnnotationPacket, parse_kid
from inclavare.images.keyprovider import PROVIDER_NAME

TRANSPORTS = ("docker://", "oci:", "oci-archive:", "dir:", "docker-archive:")
ENC_SUFFIX = "+encrypted"
PROVIDER_ANNOTATION = "org.opencontainers.image.enc.keys.provider."
KEYS_ANNOTATION = "org.opencontainers.image.enc.keys."
COPY_TIMEOUT = 600.0


class ImageToolError(InclavareError):
    """skopeo refused or failed; the message is its own fatal line."""


def default_key_dir() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "inclavare", "image-keys")


@dataclass(frozen=True)
class ProviderSettings:
    """What the cmd-form provider is started with (the tenant's keys and KBS)."""

    key_dir: str
    kbs_url: str | None = None
    admin_key: str | None = None
    kbs_audience: str | None = None
    grpc: str | None = None  # dial a running gRPC provider instead of running the cmd form

    def provider_args(self) -> list[str]:
        args = ["-m", "inclavare.cli.main", "image", "keyprovider", "--key-dir", os.path.abspath(self.key_dir)]
        if self.kbs_url:
            args += ["--kbs-url", self.kbs_url, "--admin-key", os.path.abspath(self.admin_key or "")]
            if self.kbs_audience:
                args += ["--kbs-audience", self.kbs_audience]
        return args

    def ocicrypt_config(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"grpc": self.grpc} if self.grpc else \
            {"cmd": {"path": sys.executable, "args": self.provider_args()}}
        return {"key-providers": {PROVIDER_NAME: entry}}


@dataclass
class LayerInfo:
    digest: str
    media_type: str
    size: int
    encrypted: bool
    providers: dict[str, list[str]] = field(default_factory=dict)  # provider -> key ids (or "" when opaque)


def check_image(ref: str, what: str) -> str:
    if not ref.startswith(TRANSPORTS):
        raise ConfigError(f"{what} {ref[:120]!r} must name a transport: {', '.join(TRANSPORTS)}")
    return ref


def _skopeo() -> str:
    path = shutil.which("skopeo")
    if not path:
        raise ConfigError("skopeo not found (apt-get install skopeo)")
    return path


def run_skopeo(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = COPY_TIMEOUT) -> str:
    try:
        r = subprocess.run([_skopeo(), *args], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ImageToolError(f"skopeo {args[0]} did not finish in {timeout:.0f} s") from None
    if r.returncode != 0:
        raise ImageToolError(f"skopeo {args[0]}: {_fatal_line(r.stderr)}")
    return r.stdout


def _fatal_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    line = next((ln for ln in reversed(lines) if "level=fatal" in ln), lines[-1] if lines else "failed")
    if 'msg="' in line:
        line = line.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
    return line.replace("\\n", " ")[:800]


def _through_layout(src: str, dst: str, plain_http: bool, edit: Callable[[str, str], int]) -> int:
    """skopeo copies SRC into a private OCI layout, ``edit`` rewrites its layers, skopeo copies it to DST."""
    check_image(src, "SRC")
    check_image(dst, "DST")
    with tempfile.TemporaryDirectory(prefix="inclavare-image-") as tmp:
        os.chmod(tmp, 0o700)
        layout = os.path.join(tmp, "layout")
        run_skopeo(["copy", "--quiet", *(["--src-tls-verify=false"] if plain_http else []), src,
                    f"oci:{layout}:image"])
        count = edit(layout, "image")
        run_skopeo(["copy", "--quiet", *(["--dest-tls-verify=false"] if plain_http else []),
                    f"oci:{layout}:image", dst])
    return count


def encrypt(src: str, dst: str, kid: str, settings: ProviderSettings, plain_http: bool = False) -> int:
    """Copy ``src`` to ``dst`` with every layer encrypted, each layer key wrapped by the key
    provider under the KBS key ``kid``; returns the number of layers encrypted."""
    from inclavare.images.layout import encrypt_layout
    from inclavare.images.provider_client import ProviderClient

    parse_kid(kid)
    client = ProviderClient.from_config(settings.ocicrypt_config(), PROVIDER_NAME)
    return _through_layout(src, dst, plain_http, lambda root, ref: encrypt_layout(
        root, ref, PROVIDER_ANNOTATION + PROVIDER_NAME, lambda opts: client.wrap(kid, opts)))


def decrypt(src: str, dst: str, settings: ProviderSettings, plain_http: bool = False) -> int:
    """Tenant-side decryption with the tenant's own keys (enclaves get theirs from the KBS)."""
    from inclavare.images.layout import decrypt_layout
    from inclavare.images.provider_client import ProviderClient

    client = ProviderClient.from_config(settings.ocicrypt_config(), PROVIDER_NAME)
    return _through_layout(src, dst, plain_http, lambda root, ref: decrypt_layout(
        root, ref, PROVIDER_ANNOTATION + PROVIDER_NAME, client.unwrap))


def inspect(ref: str, plain_http: bool = False) -> list[LayerInfo]:
    """The manifest's layers: which are encrypted, for which provider, under which key id."""
    check_image(ref, "IMAGE")
    raw = run_skopeo(["inspect", "--raw", *(["--tls-verify=false"] if plain_http else []), ref], timeout=120)
    try:
        manifest = require_object(loads_strict(raw, "image manifest"), "image manifest")
        if "manifests" in manifest:
            raise ImageToolError(f"{ref} is a multi-platform index; name one platform's manifest")
        return [_layer(require_object(layer, "manifest layer")) for layer in
                require_list(manifest, "layers", "image manifest")]
    except FormatError as exc:
        raise ImageToolError(f"{ref}: {exc}") from None


def _layer(layer: dict[str, Any]) -> LayerInfo:
    media = str(layer.get("mediaType", ""))
    info = LayerInfo(str(layer.get("digest", "")), media, int(layer.get("size", 0) or 0), media.endswith(ENC_SUFFIX))
    annotations = layer.get("annotations") or {}
    for key, value in annotations.items() if isinstance(annotations, dict) else ():
        if key.startswith(PROVIDER_ANNOTATION):
            info.providers[key[len(PROVIDER_ANNOTATION):]] = _kids(str(value))
        elif key.startswith(KEYS_ANNOTATION):
            info.providers[key[len(KEYS_ANNOTATION):]] = [""]
    return info


def _kids(value: str) -> list[str]:
    """Key ids of a provider annotation: a comma list of b64 packets ("" for a packet not CoCo's)."""
    kids = []
    for part in value.split(","):
        try:
            kids.append(AnnotationPacket.from_json(b64std_decode(part, "provider annotation")).kid)
        except InclavareError:
            kids.append("")
    return kids
