"""Signature checks for X.509 signed data and raw ECDSA (``r‖s``) as DCAP uses them.

Algorithms are matched the way webpki matches them (exact AlgorithmIdentifier encodings for the
key and the signature), so a certificate accepted here is accepted by the reference verifier and
vice versa. Supported: ECDSA P-256/P-384 with SHA-256/SHA-384, RSA PKCS#1 v1.5 (2048–8192 bit)
with SHA-256/384/512, Ed25519. Loaded keys are memoised by their encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key

from inclavare.errors import SignatureError
from inclavare.formats.der import BIT_STRING, SEQUENCE, DerError, DerReader, bit_string_no_unused
from inclavare.memo import Memo, memo

_OID_EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")
_P256 = _OID_EC_PUBLIC_KEY + bytes.fromhex("06082a8648ce3d030107")
_P384 = _OID_EC_PUBLIC_KEY + bytes.fromhex("06052b81040022")
_RSA = bytes.fromhex("06092a864886f70d0101010500")
_ED25519 = bytes.fromhex("06032b6570")
_ECDSA_SHA256 = bytes.fromhex("06082a8648ce3d040302")
_ECDSA_SHA384 = bytes.fromhex("06082a8648ce3d040303")
_RSA_SHA256 = bytes.fromhex("06092a864886f70d01010b0500")
_RSA_SHA384 = bytes.fromhex("06092a864886f70d01010c0500")
_RSA_SHA512 = bytes.fromhex("06092a864886f70d01010d0500")


@dataclass(frozen=True, slots=True)
class _Algorithm:
    key_alg: bytes
    signature_alg: bytes
    hash_name: str | None
    kind: str
    min_rsa_bits: int = 0


_ALGORITHMS = (
    _Algorithm(_P256, _ECDSA_SHA256, "sha256", "ecdsa"),
    _Algorithm(_P256, _ECDSA_SHA384, "sha384", "ecdsa"),
    _Algorithm(_P384, _ECDSA_SHA256, "sha256", "ecdsa"),
    _Algorithm(_P384, _ECDSA_SHA384, "sha384", "ecdsa"),
    _Algorithm(_RSA, _RSA_SHA256, "sha256", "rsa", 2048),
    _Algorithm(_RSA, _RSA_SHA384, "sha384", "rsa", 2048),
    _Algorithm(_RSA, _RSA_SHA512, "sha512", "rsa", 2048),
    _Algorithm(_ED25519, _ED25519, None, "ed25519"),
)
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512(),
}

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

_KEYS: Memo[bytes, PublicKey] = memo("public-keys", 512)


def _spki_parts(spki: bytes) -> tuple[bytes, bytes]:
    reader = DerReader(spki)
    algorithm = reader.expect_value(SEQUENCE, "SPKI algorithm")
    key_bits = bit_string_no_unused(reader.expect_value(BIT_STRING, "SPKI key"), "SPKI key")
    reader.finish("SPKI")
    return algorithm, key_bits


def _load_spki(spki: bytes, algorithm: _Algorithm, key_bits: bytes) -> PublicKey:
    cached = _KEYS.get(spki)
    if cached is not None:
        return cached
    if algorithm.kind == "ecdsa":
        size = 65 if algorithm.key_alg == _P256 else 97
        if len(key_bits) != size or key_bits[0] != 0x04:
            raise SignatureError("EC public key is not an uncompressed point")
    length = len(spki)
    header = bytes([SEQUENCE]) + (bytes([length]) if length < 0x80 else
                                  bytes([0x80 | ((length.bit_length() + 7) // 8)])
                                  + length.to_bytes((length.bit_length() + 7) // 8, "big"))
    try:
        key = load_der_public_key(header + spki)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SignatureError(f"unusable public key: {exc}") from exc
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
        raise SignatureError("unsupported public key type")
    return _KEYS.put(spki, key)


def verify_signed_data(spki: bytes, algorithm_id: bytes, data: bytes, signature: bytes) -> None:
    """Verify ``signature`` over ``data`` with the key in ``spki`` (SubjectPublicKeyInfo
    contents) under ``algorithm_id`` (AlgorithmIdentifier contents). Raises SignatureError."""
    try:
        key_alg, key_bits = _spki_parts(spki)
    except DerError as exc:
        raise SignatureError(f"malformed public key: {exc}") from exc
    candidates = [a for a in _ALGORITHMS if a.signature_alg == algorithm_id]
    if not candidates:
        raise SignatureError("unsupported signature algorithm")
    chosen = next((a for a in candidates if a.key_alg == key_alg), None)
    if chosen is None:
        raise SignatureError("signature algorithm does not match the public key")
    key = _load_spki(spki, chosen, key_bits)
    try:
        if chosen.kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(_HASHES[chosen.hash_name or "sha256"]))
        elif chosen.kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
            if not chosen.min_rsa_bits <= key.key_size <= 8192:
                raise SignatureError("RSA key size outside 2048..8192 bits")
            key.verify(signature, data, padding.PKCS1v15(), _HASHES[chosen.hash_name or "sha256"])
        elif chosen.kind == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            raise SignatureError("public key does not match the signature algorithm")
    except InvalidSignature:
        raise SignatureError("invalid signature") from None


def p256_public_key(xy: bytes) -> ec.EllipticCurvePublicKey:
    """An ECDSA P-256 key from raw ``x‖y`` (64 bytes), memoised. SignatureError if not a point."""
    point = b"\x04" + xy
    cached = _KEYS.get(point)
    if isinstance(cached, ec.EllipticCurvePublicKey):
        return cached
    if len(xy) != 64:
        raise SignatureError("attestation key must be 64 bytes (x‖y)")
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise SignatureError("attestation key is not a P-256 point") from exc
    _KEYS.put(point, key)
    return key


def verify_p256_raw(key: ec.EllipticCurvePublicKey, message: bytes, signature: bytes) -> None:
    """Verify a raw 64-byte ``r‖s`` ECDSA-P256/SHA-256 signature; raises SignatureError."""
    if len(signature) != 64:
        raise SignatureError("ECDSA signature must be 64 bytes (r‖s)")
    try:
        key.verify(raw_ecdsa_to_der(signature), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError("invalid ECDSA signature") from None


def raw_ecdsa_to_der(raw: bytes) -> bytes:
    """DER ``Ecdsa-Sig-Value`` from a raw signature: ``r`` = first 32 bytes, ``s`` = the rest
    (as the reference verifier splits it). SignatureError when shorter than 33 bytes."""
    if len(raw) <= 32:
        raise SignatureError("raw ECDSA signature is too short")
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def verify_p256_sha256(spki: bytes, message: bytes, raw_signature: bytes) -> None:
    """Verify a raw ``r‖s`` ECDSA P-256/SHA-256 signature by the key of a certificate (its
    SubjectPublicKeyInfo contents); the key must be P-256. Raises SignatureError."""
    try:
        key_alg, key_bits = _spki_parts(spki)
    except DerError as exc:
        raise SignatureError(f"malformed public key: {exc}") from exc
    if key_alg != _P256:
        raise SignatureError("signing key is not an ECDSA P-256 key")
    key = _load_spki(spki, _ALGORITHMS[0], key_bits)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureError("signing key is not an ECDSA key")
    try:
        key.verify(raw_ecdsa_to_der(raw_signature), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError("invalid ECDSA signature") from None


def sign_p256_raw(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA P-256/SHA-256 signature as raw 64-byte ``r‖s`` (the form DCAP quotes and collateral use)."""
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def sign_p384_le(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA P-384/SHA-384 signature as AMD SEV-SNP reports carry it: R‖S, each 72 bytes
    little-endian (zero-padded)."""
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA384())))
    return r.to_bytes(72, "little") + s.to_bytes(72, "little")


def verify_p384_sha384(key: object, message: bytes, r: int, s: int) -> None:
    """Verify an ECDSA P-384/SHA-384 signature given as integers (SEV-SNP reports).
    Raises SignatureError, also when ``key`` is not a P-384 public key."""
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise SignatureError("the signing certificate does not hold a P-384 key")
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise SignatureError("invalid ECDSA P-384 signature") from None
