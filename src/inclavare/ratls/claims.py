"""The RA-TLS claims buffer: which public key (and nonce) the evidence vouches for.

Interoperable RA-TLS puts ``SHA-256(claims-buffer)`` into the quote's report data, where the
claims buffer is a definite-length CBOR map of text keys to byte strings::

    {"pubkey-hash": bstr(CBOR [hash-alg-id, bstr H(SubjectPublicKeyInfo DER)]),
     "nonce"?: bstr, <custom claims>?: bstr}

Hash algorithm ids are IANA Named Information ids: 1 sha-256, 7 sha-384, 8 sha-512. Custom
claims (rats-tls adds e.g. ``key_0``) are kept for the caller; the specification tells
verifiers to ignore them when deciding.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from inclavare.errors import FormatError, ReportDataMismatch
from inclavare.ratls import cbor_subset
from inclavare.ratls.cbor_subset import CborError

PUBKEY_HASH = "pubkey-hash"
NONCE = "nonce"
HASH_ALGORITHMS: dict[int, str] = {1: "sha256", 7: "sha384", 8: "sha512"}
HASH_IDS: dict[str, int] = {name: ident for ident, name in HASH_ALGORITHMS.items()}


class ClaimsError(FormatError):
    """The claims buffer is not a well-formed RA-TLS claims map."""


class PublicKeyNotBound(ReportDataMismatch):
    """The evidence vouches for a different public key than the certificate carries."""


@dataclass(frozen=True, slots=True)
class Claims:
    """A parsed claims buffer. ``raw`` is the exact byte string whose SHA-256 the quote holds."""

    raw: bytes
    hash_algorithm: str
    pubkey_hash: bytes
    nonce: bytes | None = None
    custom: Mapping[str, bytes] = field(default_factory=dict)

    def check_public_key(self, spki_der: bytes) -> None:
        """PublicKeyNotBound unless ``pubkey-hash`` is the hash of this SubjectPublicKeyInfo."""
        actual = hashlib.new(self.hash_algorithm, spki_der).digest()
        if not hmac.compare_digest(actual, self.pubkey_hash):
            raise PublicKeyNotBound("the evidence's pubkey-hash claim does not match the "
                                    "certificate's public key")

    def binds(self, spki_der: bytes) -> bool:
        """Whether ``pubkey-hash`` matches (for reports; verification uses check_public_key)."""
        return hmac.compare_digest(hashlib.new(self.hash_algorithm, spki_der).digest(),
                                   self.pubkey_hash)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {PUBKEY_HASH: {"alg": self.hash_algorithm,
                                                "hash": self.pubkey_hash.hex()}}
        if self.nonce is not None:
            out[NONCE] = self.nonce.hex()
        for key, value in self.custom.items():
            out[key] = value.hex()
        return out


def build_claims(spki_der: bytes, *, hash_algorithm: str = "sha256", nonce: bytes | None = None,
                 custom: Mapping[str, bytes] | None = None) -> Claims:
    """The claims buffer for a public key (``pubkey-hash`` first, then ``nonce``, then custom
    claims in the given order)."""
    if hash_algorithm not in HASH_IDS:
        raise ClaimsError(f"unsupported pubkey-hash algorithm {hash_algorithm!r} "
                          f"(supported: {', '.join(HASH_IDS)})")
    digest = hashlib.new(hash_algorithm, spki_der).digest()
    entries: dict[str, cbor_subset.CborValue] = {
        PUBKEY_HASH: cbor_subset.dumps([HASH_IDS[hash_algorithm], digest])}
    if nonce is not None:
        entries[NONCE] = bytes(nonce)
    for key, value in (custom or {}).items():
        if key in (PUBKEY_HASH, NONCE) or not isinstance(value, bytes):
            raise ClaimsError(f"custom claim {key!r} must be a new name with a bytes value")
        entries[key] = value
    raw = cbor_subset.dumps(entries)
    return Claims(raw, hash_algorithm, digest, nonce, dict(custom or {}))


def _pubkey_hash(value: bytes) -> tuple[str, bytes]:
    try:
        entry = cbor_subset.loads(value)
    except CborError as exc:
        raise ClaimsError(f"pubkey-hash value: {exc}") from exc
    if not isinstance(entry, list) or len(entry) != 2:
        raise ClaimsError("pubkey-hash must be a CBOR array [hash-alg-id, hash-value]")
    alg_id, digest = entry
    if not isinstance(alg_id, int) or alg_id not in HASH_ALGORITHMS:
        raise ClaimsError(f"pubkey-hash algorithm id {alg_id!r} is not sha-256 (1), sha-384 (7) "
                          "or sha-512 (8)")
    name = HASH_ALGORITHMS[alg_id]
    if not isinstance(digest, bytes) or len(digest) != hashlib.new(name).digest_size:
        raise ClaimsError(f"pubkey-hash value must be a {name} digest")
    return name, digest


def parse_claims(raw: bytes) -> Claims:
    """Parse a claims buffer; ClaimsError when malformed or without ``pubkey-hash``."""
    try:
        document = cbor_subset.loads(raw)
    except CborError as exc:
        raise ClaimsError(f"claims buffer: {exc}") from exc
    if not isinstance(document, dict):
        raise ClaimsError("claims buffer must be a CBOR map")
    values: dict[str, bytes] = {}
    for key, value in document.items():
        if not isinstance(value, bytes):
            raise ClaimsError(f"claim {key!r} must be a byte string")
        values[key] = value
    if PUBKEY_HASH not in values:
        raise ClaimsError("claims buffer has no pubkey-hash claim")
    algorithm, digest = _pubkey_hash(values.pop(PUBKEY_HASH))
    nonce = values.pop(NONCE, None)
    return Claims(bytes(raw), algorithm, digest, nonce, values)
