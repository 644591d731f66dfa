"""Data sealed to the enclave's identity: the blob ``attest seal`` writes and ``attest unseal`` opens.

    magic "INCLSEAL" ‖ version u8 (1) ‖ policy u16 ‖ isv_prod_id u16 ‖ isv_svn u16 ‖ key_id[32]
    ‖ nonce[12] ‖ AES-256-GCM(ciphertext ‖ tag[16])          (all integers big-endian)

The whole 59-byte header is the AEAD's associated data, so a change to any byte — policy, SVN,
key id, nonce, ciphertext or tag — is refused. The key comes from the node agent's EGETKEY
simulation (:mod:`inclavare.secrets.sealing_keys`) for the key request the header records: each
blob has its own random key id, hence its own key (as the SGX SDK's ``sgx_seal_data``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from inclavare.errors import InclavareError
from inclavare.secrets.sealing_keys import KEY_ID_BYTES, POLICY_NAMES

MAGIC = b"INCLSEAL"
VERSION = 1
_HEADER = struct.Struct(">8sBHHH32s12s")
HEADER_BYTES = _HEADER.size
TAG_BYTES = 16
MAX_SEALED = 1 << 20  # the enclave agent's request body cap
MAX_PLAINTEXT = MAX_SEALED - HEADER_BYTES - TAG_BYTES


class SealedDataError(InclavareError):
    """Sealed data is malformed, or does not open in this enclave (another identity, or modified)."""


@dataclass(frozen=True)
class Header:
    policy: int
    isv_prod_id: int
    isv_svn: int
    key_id: bytes
    nonce: bytes

    def pack(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, self.policy, self.isv_prod_id, self.isv_svn, self.key_id, self.nonce)

    @property
    def policy_name(self) -> str:
        return POLICY_NAMES[self.policy]


# (policy name, key id, ISV SVN or None for the enclave's own) → (key, ISV SVN, ISV product id)
KeySource = Callable[[str, bytes, "int | None"], "tuple[bytes, int, int]"]


def is_sealed_data(data: bytes) -> bool:
    return data.startswith(MAGIC)


def seal(plaintext: bytes, policy: str, get_key: KeySource, isv_svn: int | None = None) -> bytes:
    if policy not in ("mrenclave", "mrsigner"):
        raise SealedDataError("policy must be mrenclave or mrsigner")
    if len(plaintext) > MAX_PLAINTEXT:
        raise SealedDataError(f"at most {MAX_PLAINTEXT} bytes can be sealed at once")
    key_id = os.urandom(KEY_ID_BYTES)
    key, svn, prod_id = get_key(policy, key_id, isv_svn)
    header = Header(1 if policy == "mrenclave" else 2, prod_id, svn, key_id, os.urandom(12)).pack()
    return header + AESGCM(key).encrypt(header[-12:], plaintext, header)


def parse_header(blob: bytes) -> Header:
    if len(blob) < HEADER_BYTES + TAG_BYTES or not blob.startswith(MAGIC):
        raise SealedDataError("not data sealed by attest seal (it starts with INCLSEAL and is at least "
                              f"{HEADER_BYTES + TAG_BYTES} bytes)")
    magic, version, policy, prod_id, svn, key_id, nonce = _HEADER.unpack_from(blob)
    if version != VERSION:
        raise SealedDataError(f"sealed data version {version} is not supported (only {VERSION})")
    if policy not in POLICY_NAMES:
        raise SealedDataError(f"sealed data names an unknown key policy {policy:#06x}")
    return Header(policy, prod_id, svn, key_id, nonce)


def unseal(blob: bytes, get_key: KeySource) -> bytes:
    """The plaintext, or one line why not (the key is the enclave's own for the recorded request)."""
    header = parse_header(blob)
    key, _, prod_id = get_key(header.policy_name, header.key_id, header.isv_svn)
    if prod_id != header.isv_prod_id:
        raise SealedDataError(f"the data was sealed by product {header.isv_prod_id}; this enclave is "
                              f"product {prod_id}")
    try:
        return AESGCM(key).decrypt(header.nonce, blob[HEADER_BYTES:], blob[:HEADER_BYTES])
    except InvalidTag:
        bound = "MRENCLAVE" if header.policy_name == "mrenclave" else "MRSIGNER and product"
        raise SealedDataError(f"the sealed data does not open in this enclave: it was sealed to another "
                              f"{bound}, or modified") from None
