"""The workload image of an enclave container (``enclave.image=REGISTRY/REPO@sha256:…``).

The digest is mandatory: the enclave pulls exactly the bytes the tenant pinned, and the
reference is part of the measured enclave configuration. It is also a claim the key-release
policy can read: the enclave sends Trustee init-data (TOML) naming the image, and the quote
binds the init-data's digest in SGX ``CONFIGID`` (the field the launcher sets, as a VMM sets
TDX ``MRCONFIGID`` / SNP ``HOST_DATA``), so the broker checks the binding and the policy sees
``init_data_claims.image``.

Kept free of heavy imports: rune reads it on the create path.
"""

from __future__ import annotations

import re

from inclavare.errors import EnclaveConfigError
from inclavare.immutable import Immutable

_HOST = re.compile(r"^(localhost|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+|\[[0-9A-Fa-f:]+\]|[A-Za-z0-9-]+)(:[0-9]{1,5})?$")
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_REFERENCE = 512
INIT_DATA_ALGORITHM = "sha384"
CONFIG_ID_SIZE = 64  # SGX REPORTBODY.CONFIGID


class ImageRef(Immutable):
    """A parsed ``REGISTRY/REPO@sha256:HEX``."""

    __slots__ = ("registry", "repository", "digest")
    registry: str
    repository: str
    digest: str

    def __init__(self, registry: str, repository: str, digest: str) -> None:
        self._set(registry=registry, repository=repository, digest=digest)

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}@{self.digest}"


def parse_image_ref(value: str, what: str = "enclave.image") -> ImageRef:
    """Parse and check an image reference; a tag, a missing registry or digest is an error."""
    shown = value if len(value) <= 120 and value.isprintable() else repr(value[:120])
    usage = f"{what} must be REGISTRY/REPO@sha256:<64 hex digits>"
    if len(value) > MAX_REFERENCE or not value.isascii():
        raise EnclaveConfigError(f"{usage}, not {shown}")
    name, at, digest = value.partition("@")
    if not at:
        raise EnclaveConfigError(f"{usage}: {shown} names no digest (a tag can be moved; the enclave "
                                 "pulls only the image the digest pins)")
    if not _DIGEST.match(digest):
        raise EnclaveConfigError(f"{usage}: the digest of {shown} is not sha256:<64 lowercase hex digits>")
    registry, slash, repository = name.partition("/")
    if not slash or not _HOST.match(registry) or not ("." in registry or ":" in registry
                                                      or registry == "localhost"):
        raise EnclaveConfigError(f"{usage}: {shown} names no registry host (e.g. registry.example:5000/repo@…)")
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:
        raise EnclaveConfigError(f"{usage}: {shown} carries a tag; name the image by its digest only")
    if not all(_PATH_COMPONENT.match(c) for c in repository.split("/")):
        raise EnclaveConfigError(f"{usage}: repository {repository[:80]!r} is not a valid repository name")
    return ImageRef(registry, repository, digest)


def init_data(ref: ImageRef) -> str:
    """The Trustee init-data TOML the enclave sends; its digest is what the quote's CONFIGID holds."""
    return (f'version = "0.1.0"\nalgorithm = "{INIT_DATA_ALGORITHM}"\n\n'
            f'[data]\n"image" = "{ref}"\n')


def config_id(ref: ImageRef | None) -> bytes:
    """CONFIGID for a container: the init-data digest (zero-padded), or zeros without an image."""
    if ref is None:
        return bytes(CONFIG_ID_SIZE)
    import hashlib

    return hashlib.new(INIT_DATA_ALGORITHM, init_data(ref).encode()).digest().ljust(CONFIG_ID_SIZE, b"\0")
