"""CoCo sealed secrets: ``sealed.<b64url(header)>.<b64url(payload)>.<b64url(signature)>``.

The string may sit in a Kubernetes Secret or an environment variable: the host and the cluster
admin see only this. The header is ``{"alg":"ES256","kid":...}``; the signature is raw ``r‖s``
ECDSA P-256/SHA-256 over ``header.payload`` (JWS compact). The payload (``version`` "0.1.0") is
either a *vault* secret (the plaintext is the KBS resource ``name``) or an *envelope* (the
plaintext is AES-256-GCM under a data key, itself wrapped by a key-encryption key). CoCo wraps
the data key only with cloud KMSes; provider ``kbs`` (the KEK is a KBS resource, the data key
wrapped with AES key wrap, RFC 3394) is our extension. Parsing is strict: one canonical
encoding per secret, so a flipped bit is always refused, never read as the same secret.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from inclavare.crypto.b64 import b64std_decode, b64std_encode, b64url_decode, b64url_encode
from inclavare.crypto.jwk import public_key_from_jwk
from inclavare.crypto.signatures import verify_p256_raw
from inclavare.errors import FormatError, InclavareError, KbsError, SignatureError
from inclavare.formats.strict_json import loads_strict
from inclavare.services.kbs_client import parse_resource_uri

PREFIX = "sealed."
VERSION = "0.1.0"
MAX_SEALED = 64 * 1024  # characters: a Kubernetes Secret value, not a file store
KEK_BYTES = 32


class SealedSecretError(InclavareError):
    """A sealed secret is malformed, badly signed, or cannot be opened with the key given."""


@dataclass(frozen=True)
class Vault:
    """The plaintext is the KBS resource ``name`` (``kbs:///REPO/TYPE/TAG``)."""

    name: str
    provider: str = "kbs"
    provider_settings: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "type": "vault", "provider": self.provider, "name": self.name,
                "provider_settings": self.provider_settings, "annotations": self.annotations}


@dataclass(frozen=True)
class Envelope:
    """The plaintext is AES-256-GCM(``encrypted_data``, ``iv``) under the data key that the KEK
    ``key_id`` unwraps from ``encrypted_key``."""

    provider: str
    key_id: str
    encrypted_key: bytes
    encrypted_data: bytes
    iv: bytes
    wrap_type: str = "A256GCM"
    provider_settings: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "type": "envelope", "provider": self.provider, "key_id": self.key_id,
                "encrypted_key": b64std_encode(self.encrypted_key),
                "encrypted_data": b64std_encode(self.encrypted_data), "wrap_type": self.wrap_type,
                "iv": b64std_encode(self.iv), "provider_settings": self.provider_settings,
                "annotations": self.annotations}

    def open(self, kek: bytes) -> bytes:
        """The plaintext, with the KEK fetched for ``key_id`` (provider ``kbs`` only)."""
        if self.provider != "kbs":
            raise SealedSecretError(f"envelope provider {self.provider!r} is not supported here (only 'kbs')")
        if len(kek) != KEK_BYTES:
            raise SealedSecretError(f"the key-encryption key {self.key_id} must be {KEK_BYTES} bytes, "
                                    f"not {len(kek)}")
        try:
            dek = aes_key_unwrap(kek, self.encrypted_key)
            return AESGCM(dek).decrypt(self.iv, self.encrypted_data, None)
        except (InvalidUnwrap, InvalidTag, ValueError):
            raise SealedSecretError(f"the envelope does not open with the key {self.key_id} "
                                    "(another key, or tampered data)") from None


Payload = Vault | Envelope


@dataclass(frozen=True)
class SealedSecret:
    kid: str
    payload: Payload
    signing_input: bytes
    signature: bytes

    def verify(self, jwk: object) -> None:
        """Check the signature with the kid's public JWK (EC P-256); SealedSecretError if not."""
        try:
            key = public_key_from_jwk(jwk)
        except FormatError as exc:
            raise SealedSecretError(f"the verification key {self.kid} is not usable: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise SealedSecretError(f"the verification key {self.kid} is not an EC P-256 key")
        try:
            verify_p256_raw(key, self.signing_input, self.signature)
        except SignatureError:
            raise SealedSecretError(f"the sealed secret's signature does not verify with {self.kid}") from None


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


# -- building ---------------------------------------------------------------------------------

def seal(payload: Payload, signing_key: ec.EllipticCurvePrivateKey, kid: str) -> str:
    """Sign ``payload`` under ``kid`` (where the unsealer finds the public JWK)."""
    if not isinstance(signing_key, ec.EllipticCurvePrivateKey) or not isinstance(signing_key.curve, ec.SECP256R1):
        raise SealedSecretError("the signing key must be an EC P-256 private key (ES256)")
    _check_kid(kid)
    if isinstance(payload, Vault):
        _check_kbs_uri(payload.name, "name")
    header = b64url_encode(_compact({"alg": "ES256", "kid": kid}))
    body = b64url_encode(_compact(payload.to_json()))
    signing_input = f"{header}.{body}".encode("ascii")
    r, s = decode_dss_signature(signing_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return f"{PREFIX}{header}.{body}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def envelope(plaintext: bytes, kek: bytes, key_id: str) -> Envelope:
    """Encrypt ``plaintext`` under a fresh data key wrapped by ``kek`` (the KBS resource ``key_id``)."""
    if len(kek) != KEK_BYTES:
        raise SealedSecretError(f"the key-encryption key must be {KEK_BYTES} bytes, not {len(kek)}")
    _check_kbs_uri(key_id, "key_id")
    dek, iv = AESGCM.generate_key(256), os.urandom(12)
    return Envelope("kbs", key_id, aes_key_wrap(kek, dek), AESGCM(dek).encrypt(iv, plaintext, None), iv)


def _compact(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


# -- parsing ----------------------------------------------------------------------------------

_HEADER_KEYS = frozenset({"alg", "kid", "typ"})
_VAULT_KEYS = frozenset({"version", "type", "provider", "name", "provider_settings", "annotations"})
_ENVELOPE_KEYS = frozenset({"version", "type", "provider", "key_id", "encrypted_key", "encrypted_data",
                            "wrap_type", "iv", "provider_settings", "annotations"})


def parse(text: object) -> SealedSecret:
    """Parse (not verify) a sealed secret; every defect raises a one-line SealedSecretError."""
    if not isinstance(text, str):
        raise SealedSecretError("a sealed secret must be a string")
    if len(text) > MAX_SEALED:
        raise SealedSecretError(f"sealed secret longer than {MAX_SEALED} characters")
    if not text.startswith(PREFIX):
        raise SealedSecretError("not a sealed secret (it must start with 'sealed.')")
    parts = text[len(PREFIX):].split(".")
    if len(parts) != 3:
        raise SealedSecretError("a sealed secret has four dot-separated parts: sealed.HEADER.PAYLOAD.SIGNATURE")
    header_raw, payload_raw, signature = (_canonical_b64url(p, what) for p, what in
                                          zip(parts, ("header", "payload", "signature")))
    header = _object(header_raw, "header", _HEADER_KEYS)
    if header.get("alg") != "ES256":
        raise SealedSecretError(f"sealed secret header alg must be 'ES256', not {header.get('alg')!r}")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise SealedSecretError("sealed secret header has no string 'kid'")
    _check_kid(kid)
    if len(signature) != 64:
        raise SealedSecretError("sealed secret signature must be 64 bytes (ES256 r‖s)")
    return SealedSecret(kid, _payload(payload_raw), f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def _canonical_b64url(part: str, what: str) -> bytes:
    try:
        raw = b64url_decode(part, f"sealed secret {what}")
    except FormatError as exc:
        raise SealedSecretError(str(exc)) from None
    if b64url_encode(raw) != part:  # padding or stray low bits: another spelling of the same bytes
        raise SealedSecretError(f"sealed secret {what}: not canonical unpadded base64url")
    return raw


def _object(raw: bytes, what: str, allowed: frozenset[str]) -> dict[str, Any]:
    try:
        doc = loads_strict(raw, f"sealed secret {what}")
    except FormatError as exc:
        detail = str(exc) if f"sealed secret {what}" in str(exc) else f"sealed secret {what}: {exc}"
        raise SealedSecretError(detail) from None
    if not isinstance(doc, dict):
        raise SealedSecretError(f"sealed secret {what} is not a JSON object")
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise SealedSecretError(f"sealed secret {what} has unknown member(s): {', '.join(unknown)}")
    return doc


def _payload(raw: bytes) -> Payload:
    doc = _object(raw, "payload", _VAULT_KEYS | _ENVELOPE_KEYS)
    if doc.get("version") != VERSION:
        raise SealedSecretError(f"sealed secret version must be {VERSION!r}, not {doc.get('version')!r}")
    kind = doc.get("type")
    if kind == "vault":
        _only(doc, _VAULT_KEYS, "vault")
        provider = _string(doc, "provider")
        if provider != "kbs":
            raise SealedSecretError(f"vault provider {provider!r} is not supported (only 'kbs')")
        name = _string(doc, "name")
        _check_kbs_uri(name, "name")
        return Vault(name, provider, _dict(doc, "provider_settings"), _dict(doc, "annotations"))
    if kind == "envelope":
        _only(doc, _ENVELOPE_KEYS, "envelope")
        if doc.get("wrap_type") != "A256GCM":
            raise SealedSecretError(f"envelope wrap_type must be 'A256GCM', not {doc.get('wrap_type')!r}")
        iv = _bytes(doc, "iv")
        if len(iv) != 12:
            raise SealedSecretError("envelope iv must be 12 bytes")
        return Envelope(_string(doc, "provider"), _string(doc, "key_id"), _bytes(doc, "encrypted_key"),
                        _bytes(doc, "encrypted_data"), iv, "A256GCM", _dict(doc, "provider_settings"),
                        _dict(doc, "annotations"))
    raise SealedSecretError(f"sealed secret type must be 'vault' or 'envelope', not {kind!r}")


def _only(doc: dict[str, Any], keys: frozenset[str], kind: str) -> None:
    extra, missing = sorted(set(doc) - keys), sorted(keys - set(doc))
    if extra:
        raise SealedSecretError(f"{kind} payload has member(s) of another type: {', '.join(extra)}")
    if missing:
        raise SealedSecretError(f"{kind} payload lacks: {', '.join(missing)}")


def _string(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise SealedSecretError(f"sealed secret payload member {name!r} must be a non-empty string")
    return value


def _dict(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name)
    if not isinstance(value, dict):
        raise SealedSecretError(f"sealed secret payload member {name!r} must be an object")
    return value


def _bytes(doc: dict[str, Any], name: str) -> bytes:
    value = _string(doc, name)
    try:
        raw = b64std_decode(value, f"sealed secret payload member {name!r}")
    except FormatError as exc:
        raise SealedSecretError(str(exc)) from None
    if b64std_encode(raw) != value:
        raise SealedSecretError(f"sealed secret payload member {name!r}: not canonical base64")
    return raw


def _check_kbs_uri(uri: str, what: str) -> None:
    try:
        parse_resource_uri(uri)
    except InclavareError:
        raise SealedSecretError(f"{what} must be a KBS resource URI kbs:///REPO/TYPE/TAG, not {uri!r}") from None


def _check_kid(kid: str) -> None:
    """The kid names the KBS resource holding the public JWK (CoCo also allows a file name under
    /run/confidential-containers/cdh/sealed-secret; that needs a pre-provisioned file, not ours)."""
    _check_kbs_uri(kid, "kid")


# -- unsealing (inside the enclave) -----------------------------------------------------------

def unseal(text: object, fetch: Callable[[str], bytes]) -> bytes:
    """Verify and open a sealed secret as CDH does: ``fetch`` gets a KBS resource with the
    enclave's own evidence — first the kid's JWK, then the vault resource or the envelope's KEK."""
    secret = parse(text)
    try:
        jwk = loads_strict(_fetch(fetch, secret.kid, "verification key"), f"the verification key {secret.kid}")
    except FormatError as exc:
        raise SealedSecretError(f"{exc} (a public JWK is expected there)") from None
    secret.verify(jwk)
    if isinstance(secret.payload, Vault):
        return _fetch(fetch, secret.payload.name, "vault secret")
    if secret.payload.provider != "kbs":
        raise SealedSecretError(f"envelope provider {secret.payload.provider!r} is not supported here (only 'kbs')")
    return secret.payload.open(_fetch(fetch, secret.payload.key_id, "key-encryption key"))


def _fetch(fetch: Callable[[str], bytes], uri: str, what: str) -> bytes:
    try:
        return fetch(uri)
    except KbsError as exc:
        raise KbsError(f"cannot get the {what} {uri}: {exc}", kind=exc.kind, status=exc.status) from None
