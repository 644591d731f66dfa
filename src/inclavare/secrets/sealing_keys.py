"""Sealing keys with SGX EGETKEY semantics, derived by the node agent for the simulated TEE.

On SGX the CPU derives a seal key inside the enclave from a fused secret, the enclave's identity
and a key request (KEYPOLICY, ISVSVN, KEYID …); the key never leaves the enclave. The simulated
TEE has no CPU secret, so the node agent plays that part: a per-installation *sealing secret*
(32 random bytes, ``STATE_DIR/sealing.key``, 0600) and, for the identified enclave container only
(its channel knows which registration a caller is), the derivation

    key = HMAC-SHA256(secret, DOMAIN ‖ policy u16 ‖ identity[32] ‖ isv_prod_id u16 ‖ isv_svn u16 ‖ key_id[32])

where ``identity`` is MRENCLAVE (the container's measurement) or MRSIGNER. As with EGETKEY, a
request may name an ISV SVN at most the enclave's own: an upgraded enclave opens data sealed by
older versions, never the reverse; the product id is always the enclave's own. This is a
simulation, not protection: root on the host holds the secret.

A sim enclave's MRSIGNER, ISVPRODID and ISVSVN come from its runtime args
(``enclave.runtime.args=mrsigner=HEX64,isvprodid=N,isvsvn=N``), which are part of the measured
enclave configuration. On SGX EINIT checks the SIGSTRUCT's signature; here the signer is
declared, not proven: any container may declare any signer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from dataclasses import dataclass
from typing import Any

from inclavare.atomic_file import locked, write_atomic
from inclavare.errors import ConfigError, InclavareError

DOMAIN = b"inclavare-sim-egetkey-seal-v1\x00"
SECRET_FILE = "sealing.key"
SECRET_BYTES = 32
KEY_ID_BYTES = 32
POLICY_MRENCLAVE = 0x0001  # SGX KEYPOLICY bits
POLICY_MRSIGNER = 0x0002
POLICIES = {"mrenclave": POLICY_MRENCLAVE, "mrsigner": POLICY_MRSIGNER}
POLICY_NAMES = {v: k for k, v in POLICIES.items()}
MAX_U16 = 0xFFFF


class SealingKeyError(InclavareError):
    """A key request this enclave may not make (bad shape, SVN above its own, no signer)."""


@dataclass(frozen=True)
class SealingIdentity:
    """What EGETKEY binds: MRENCLAVE, MRSIGNER (None: undeclared), product id and SVN."""

    mrenclave: bytes
    mrsigner: bytes | None
    isv_prod_id: int
    isv_svn: int

    @classmethod
    def of(cls, measurement_hex: str, runtime_args: str) -> SealingIdentity:
        """The identity of a registered sim enclave: its measurement and measured runtime args."""
        values: dict[str, str] = {}
        for token in runtime_args.split():
            name, eq, value = token.partition("=")
            if eq and name in ("mrsigner", "isvprodid", "isvsvn"):
                if name in values:
                    raise SealingKeyError(f"runtime arg {name}= is given twice")
                values[name] = value
        signer = values.get("mrsigner")
        mrsigner = None
        if signer is not None:
            try:
                mrsigner = bytes.fromhex(signer)
            except ValueError:
                mrsigner = b""
            if len(mrsigner) != 32:
                raise SealingKeyError("runtime arg mrsigner= must be 64 hex digits (a SHA-256)")
        return cls(bytes.fromhex(measurement_hex), mrsigner, _u16(values.get("isvprodid", "0"), "isvprodid"),
                   _u16(values.get("isvsvn", "0"), "isvsvn"))


@dataclass(frozen=True)
class KeyRequest:
    policy: int
    key_id: bytes
    isv_svn: int | None  # None: the enclave's own

    @classmethod
    def parse(cls, body: Any) -> KeyRequest:
        """``{"policy": "mrenclave"|"mrsigner", "key_id": "<base64 of 32 bytes>", "isv_svn": N?}``."""
        if not isinstance(body, dict) or set(body) - {"policy", "key_id", "isv_svn"}:
            raise SealingKeyError('a key request is {"policy": "mrenclave"|"mrsigner", '
                                  '"key_id": "<base64 of 32 bytes>", "isv_svn": N (optional)}')
        name = body.get("policy")
        policy = POLICIES.get(name) if isinstance(name, str) else None
        if policy is None:
            raise SealingKeyError("policy must be \"mrenclave\" or \"mrsigner\"")
        try:
            key_id = base64.b64decode(str(body.get("key_id", "")), validate=True)
        except binascii.Error:
            key_id = b""
        if len(key_id) != KEY_ID_BYTES or not isinstance(body.get("key_id"), str):
            raise SealingKeyError("key_id must be the base64 of 32 bytes")
        svn = body.get("isv_svn")
        if svn is not None and (type(svn) is not int or not 0 <= svn <= MAX_U16):
            raise SealingKeyError("isv_svn must be an integer from 0 to 65535")
        return cls(policy, key_id, svn)


def derive(secret: bytes, identity: SealingIdentity, request: KeyRequest) -> tuple[bytes, int]:
    """EGETKEY(SEAL): the key and the ISV SVN it was derived for."""
    svn = identity.isv_svn if request.isv_svn is None else request.isv_svn
    if svn > identity.isv_svn:
        raise SealingKeyError(f"a key for ISV SVN {svn} is refused to an enclave with ISV SVN "
                              f"{identity.isv_svn} (SGX_INVALID_ISVSVN: only the same or older versions)")
    if request.policy == POLICY_MRSIGNER:
        if identity.mrsigner is None:
            raise SealingKeyError("this enclave declares no signer: MRSIGNER sealing needs the runtime "
                                  "arg mrsigner=HEX64 (enclave.runtime.args)")
        bound = identity.mrsigner
    else:
        bound = identity.mrenclave
    message = (DOMAIN + struct.pack(">H", request.policy) + bound
               + struct.pack(">HH", identity.isv_prod_id, svn) + request.key_id)
    return hmac.new(secret, message, hashlib.sha256).digest(), svn


class SealingSecret:
    """The installation's sealing secret, created once in the state directory (0600)."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, SECRET_FILE)
        self._secret: bytes | None = None

    def get(self) -> bytes:
        if self._secret is None:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            with locked(self.path + ".lock"):
                if not os.path.exists(self.path):
                    write_atomic(self.path, os.urandom(SECRET_BYTES), mode=0o600)
                with open(self.path, "rb") as f:
                    secret = f.read(SECRET_BYTES + 1)
            if len(secret) != SECRET_BYTES:
                raise ConfigError(f"the sealing secret {self.path} is not {SECRET_BYTES} bytes; "
                                  "replacing it makes all sealed data unreadable, so it is not replaced")
            self._secret = secret
        return self._secret


def _u16(value: str, name: str) -> int:
    if not re.fullmatch(r"[0-9]{1,5}", value) or int(value) > MAX_U16:
        raise SealingKeyError(f"runtime arg {name}= must be an integer from 0 to 65535")
    return int(value)
