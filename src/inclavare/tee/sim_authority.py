"""The simulated SGX authority: the hardware side of the simulated TEE.

On machines without SGX the project simulates the whole attestation supply chain so that exactly
the verification code that checks Intel quotes also checks simulated ones; only the trust anchor
differs. Per installation this creates and persists a root CA (its subject says SIMULATED — it
is never Intel's and nothing trusts it unless configured to), a PCK Platform CA, a PCK
certificate with the real SGX extension, a TCB signing certificate, a simulated quoting enclave
(QE report signed by the PCK key) and its attestation key. It issues collateral — CRLs, TCB Info,
QE Identity — with validity windows and re-issues it when it nears expiry, so a long-lived
installation keeps verifying. :meth:`SimAuthority.quote` produces SGX ECDSA quotes v3;
:meth:`SimAuthority.td_quote` TDX quotes v4/v5 of a simulated TD, by a simulated TD quoting enclave
(same PCK, ISVPRODID 2) and with TDX collateral (TDX TCB Info, TD QE Identity) beside the SGX one.

The simulation offers no protection: whoever reads ``state_dir`` can mint quotes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from inclavare.atomic_file import locked, write_atomic
from inclavare.crypto.signatures import sign_p256_raw
from inclavare.errors import ConfigError, FormatError, StoreError
from inclavare.formats.collateral import Collateral
from inclavare.formats.quote import (
    CERT_TYPE_PCK_CHAIN,
    CertificationData,
    QeReportCertificationData,
    build_sgx_quote,
    build_tdx_quote,
)
from inclavare.formats.report_body import EnclaveReport, TdReport10
from inclavare.formats.tcb_info import parse_tcb_info
from inclavare.tee.sim_collateral import (
    SIM_TDX_MODULE_SIGNER,
    SIM_TEE_TCB_SVN,
    QuotingEnclaveFacts,
    SigningKeys,
    issue_collateral,
)
from inclavare.tee.sim_pki import (
    PlatformFacts,
    issue_ca,
    issue_pck,
    issue_root,
    issue_tcb_signing,
)

STATE_VERSION = 1
COLLATERAL_LIFETIME = dt.timedelta(days=30)
REISSUE_MARGIN = dt.timedelta(days=10)
CLOCK_SKEW = dt.timedelta(hours=1)

SIM_FMSPC = bytes.fromhex("53494D000000")  # "SIM\0\0\0"
SIM_CPU_SVN = bytes([3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0])
SIM_PCE_SVN = 11
SIM_QE_ISV_PROD_ID = 1
SIM_QE_ISV_SVN = 8
SIM_TD_QE_ISV_PROD_ID = 2  # Intel's TD QE is ISVPRODID 2
DEFAULT_ENCLAVE_SIGNER = hashlib.sha256(b"inclavare simulated enclave signer").digest()
DEFAULT_ENCLAVE_ATTRIBUTES = bytes.fromhex("0500000000000000e700000000000000")
_QE_ATTRIBUTES = bytes.fromhex("1500000000000000e700000000000000")
_QE_MRENCLAVE = hashlib.sha256(b"inclavare simulated quoting enclave").digest()
_TD_QE_MRENCLAVE = hashlib.sha256(b"inclavare simulated TD quoting enclave").digest()
_TDX_MODULE_MRSEAM = hashlib.sha384(b"inclavare simulated TDX module").digest()
# TD_ATTRIBUTES with only SEPT_VE_DISABLE (bit 28) set, as a production TD; XFAM of a common guest.
DEFAULT_TD_ATTRIBUTES = (1 << 28).to_bytes(8, "little")
DEFAULT_XFAM = bytes.fromhex("e702060000000000")
_SGX_COLLATERAL, _TDX_COLLATERAL = "collateral.json", "tdx-collateral.json"

_KEY_FILES = ("root-ca.key", "pck-ca.key", "pck.key", "tcb-signing.key", "attestation.key")
_CERT_FILES = ("root-ca.pem", "pck-ca.pem", "pck.pem", "tcb-signing.pem")

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def read_state(state_dir: str, filename: str, what: str = "simulated authority") -> bytes:
    """A state file's bytes; a missing or unreadable one is a one-line StoreError."""
    try:
        with open(os.path.join(state_dir, filename), "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise StoreError(f"{what} state is incomplete: {exc}") from exc


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True, slots=True)
class _Identity:
    """The non-secret facts of an installation (``authority.json``)."""

    platform: PlatformFacts
    qe: QuotingEnclaveFacts
    qe_id: bytes
    qe_auth_data: bytes
    evaluation_number: int

    def to_json(self) -> str:
        p = self.platform
        return json.dumps({
            "version": STATE_VERSION, "simulated": True,
            "ppid": p.ppid.hex(), "cpu_svn": p.cpu_svn.hex(), "pce_svn": p.pce_svn,
            "pce_id": p.pce_id.hex(), "fmspc": p.fmspc.hex(),
            "platform_instance_id": p.platform_instance_id.hex(),
            "qe_mrsigner": self.qe.mrsigner.hex(), "qe_isv_prod_id": self.qe.isv_prod_id,
            "qe_isv_svn": self.qe.isv_svn, "qe_id": self.qe_id.hex(),
            "qe_auth_data": self.qe_auth_data.hex(), "tcb_evaluation_data_number": self.evaluation_number,
        }, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> _Identity:
        try:
            d = json.loads(text)
            if d.get("version") != STATE_VERSION:
                raise StoreError(f"unsupported simulated authority state version {d.get('version')!r}")
            platform = PlatformFacts(
                ppid=bytes.fromhex(d["ppid"]), cpu_svn=bytes.fromhex(d["cpu_svn"]),
                pce_svn=int(d["pce_svn"]), pce_id=bytes.fromhex(d["pce_id"]),
                fmspc=bytes.fromhex(d["fmspc"]),
                platform_instance_id=bytes.fromhex(d["platform_instance_id"]))
            qe = QuotingEnclaveFacts(bytes.fromhex(d["qe_mrsigner"]), int(d["qe_isv_prod_id"]),
                                     int(d["qe_isv_svn"]))
            return cls(platform, qe, bytes.fromhex(d["qe_id"]), bytes.fromhex(d["qe_auth_data"]),
                       int(d["tcb_evaluation_data_number"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"corrupt simulated authority state (authority.json): {exc}") from exc

    def td_qe(self) -> QuotingEnclaveFacts:
        """The simulated TD quoting enclave: the QE's signer and SVN, Intel's TD QE product id."""
        return QuotingEnclaveFacts(self.qe.mrsigner, SIM_TD_QE_ISV_PROD_ID, self.qe.isv_svn)

    @classmethod
    def fresh(cls) -> _Identity:
        platform = PlatformFacts(ppid=secrets.token_bytes(16), cpu_svn=SIM_CPU_SVN, pce_svn=SIM_PCE_SVN,
                                 pce_id=bytes(2), fmspc=SIM_FMSPC,
                                 platform_instance_id=secrets.token_bytes(16))
        qe = QuotingEnclaveFacts(secrets.token_bytes(32), SIM_QE_ISV_PROD_ID, SIM_QE_ISV_SVN)
        return cls(platform, qe, secrets.token_bytes(16), bytes(range(32)), 1)


class SimAuthority:
    """A loaded simulated SGX authority (see the module docstring). Thread-safe."""

    def __init__(self, state_dir: str, identity: _Identity, keys: SigningKeys,
                 pck: x509.Certificate, pck_key: ec.EllipticCurvePrivateKey,
                 attestation_key: ec.EllipticCurvePrivateKey, collateral: tuple[Collateral, Collateral],
                 clock: Clock) -> None:
        self._state_dir = state_dir
        self._identity = identity
        self._keys = keys
        self._attestation_key = attestation_key
        self._clock = clock
        self._lock = threading.Lock()
        self._collateral = collateral
        self._collateral_next_update = self._next_update(collateral[0])
        xy = attestation_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]
        self._attestation_xy = xy
        chain = b"".join(c.public_bytes(Encoding.PEM) for c in (pck, keys.pck_ca, keys.root))

        def qe_data(mr_enclave: bytes, qe: QuotingEnclaveFacts) -> QeReportCertificationData:
            report = EnclaveReport.build(
                mr_enclave=mr_enclave, mr_signer=qe.mrsigner,
                report_data=hashlib.sha256(xy + identity.qe_auth_data).digest() + bytes(32),
                isv_prod_id=qe.isv_prod_id, isv_svn=qe.isv_svn,
                attributes=_QE_ATTRIBUTES, cpu_svn=identity.platform.cpu_svn)
            return QeReportCertificationData(
                report, sign_p256_raw(pck_key, report.to_bytes()), identity.qe_auth_data,
                CertificationData(CERT_TYPE_PCK_CHAIN, chain + b"\0"))

        self._qe = qe_data(_QE_MRENCLAVE, identity.qe)
        self._td_qe = qe_data(_TD_QE_MRENCLAVE, identity.td_qe())

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def load_or_create(cls, state_dir: str, *, clock: Clock = _utcnow) -> SimAuthority:
        """Load the installation's authority from ``state_dir``, creating it on first use."""
        if not state_dir:
            raise ConfigError("a state directory for the simulated authority is required")
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        with locked(os.path.join(state_dir, ".lock")):
            if not os.path.exists(os.path.join(state_dir, "authority.json")):
                cls._create(state_dir, clock())
            return cls._load(state_dir, clock)

    @classmethod
    def load_existing(cls, state_dir: str, *, clock: Clock = _utcnow) -> SimAuthority:
        """Load an authority that exists; never create one. Commands that only use an authority
        (export, quote, issue) must not mint a new root because a directory was mistyped: every
        quote it signed would verify against a root nothing else trusts."""
        if not state_dir:
            raise ConfigError("a state directory for the simulated authority is required")
        if not os.path.isfile(os.path.join(state_dir, "authority.json")):
            raise ConfigError(
                f"no simulated authority in {state_dir} (the node agent keeps its own in STATE_DIR/sim, "
                "by default /var/lib/inclavare/sim; `inclavare sim init --state-dir DIR` creates a new one)")
        with locked(os.path.join(state_dir, ".lock")):
            return cls._load(state_dir, clock)

    @staticmethod
    def _create(state_dir: str, now: dt.datetime) -> None:
        identity = _Identity.fresh()
        start = now - CLOCK_SKEW
        root_key, ca_key, pck_key, tcb_key, att_key = (_new_key() for _ in range(5))
        root = issue_root(root_key, start, start + dt.timedelta(days=365 * 20))
        ca = issue_ca(ca_key.public_key(), root, root_key, start, start + dt.timedelta(days=365 * 15))
        pck = issue_pck(pck_key.public_key(), identity.platform, ca, ca_key, start,
                        start + dt.timedelta(days=365 * 10))
        tcb = issue_tcb_signing(tcb_key.public_key(), root, root_key, start,
                                start + dt.timedelta(days=365 * 10))
        for filename, key in zip(_KEY_FILES, (root_key, ca_key, pck_key, tcb_key, att_key), strict=True):
            write_atomic(os.path.join(state_dir, filename), _key_pem(key))
        for filename, cert in zip(_CERT_FILES, (root, ca, pck, tcb), strict=True):
            write_atomic(os.path.join(state_dir, filename), cert.public_bytes(Encoding.PEM))
        write_atomic(os.path.join(state_dir, "authority.json"), identity.to_json().encode())

    @classmethod
    def _load(cls, state_dir: str, clock: Clock) -> SimAuthority:
        def read(filename: str) -> bytes:
            return read_state(state_dir, filename)

        try:
            keys_raw = [serialization.load_pem_private_key(read(f), None) for f in _KEY_FILES]
            certs = [x509.load_pem_x509_certificate(read(f)) for f in _CERT_FILES]
        except ValueError as exc:
            raise StoreError(f"corrupt simulated authority state: {exc}") from exc
        keys: list[ec.EllipticCurvePrivateKey] = []
        for key in keys_raw:
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise StoreError("simulated authority keys must be EC keys")
            keys.append(key)
        identity = _Identity.from_json(read("authority.json").decode("utf-8", "replace"))
        signing = SigningKeys(certs[0], keys[0], certs[1], keys[1], certs[3], keys[3])
        stored = [cls._stored_collateral(state_dir, f) for f in (_SGX_COLLATERAL, _TDX_COLLATERAL)]
        now = clock()
        collateral: tuple[Collateral, Collateral]
        if stored[0] is None or stored[1] is None or min(
                cls._next_update(c) for c in stored if c is not None) - now < REISSUE_MARGIN:
            collateral = cls._reissue(state_dir, signing, identity, now)
        else:
            collateral = (stored[0], stored[1])
        return cls(state_dir, identity, signing, certs[2], keys[2], keys[4], collateral, clock)

    @staticmethod
    def _stored_collateral(state_dir: str, filename: str) -> Collateral | None:
        path = os.path.join(state_dir, filename)
        try:
            with open(path, "rb") as handle:
                return Collateral.from_json(handle.read())
        except FileNotFoundError:
            return None
        except (OSError, FormatError):
            return None  # re-issued below

    @staticmethod
    def _reissue(state_dir: str, keys: SigningKeys, identity: _Identity,
                 now: dt.datetime) -> tuple[Collateral, Collateral]:
        """SGX and TDX collateral, re-issued together (one expiry for both)."""
        sgx, tdx = (issue_collateral(keys, identity.platform, qe, now - CLOCK_SKEW, COLLATERAL_LIFETIME,
                                     identity.evaluation_number, tdx=is_tdx)
                    for qe, is_tdx in ((identity.qe, False), (identity.td_qe(), True)))
        write_atomic(os.path.join(state_dir, _SGX_COLLATERAL), sgx.to_json().encode())
        write_atomic(os.path.join(state_dir, _TDX_COLLATERAL), tdx.to_json().encode())
        return sgx, tdx

    @staticmethod
    def _next_update(collateral: Collateral) -> dt.datetime:
        info = parse_tcb_info(collateral.tcb_info)
        return dt.datetime.fromtimestamp(info.next_update, dt.timezone.utc)

    # -- public API ---------------------------------------------------------------------------

    @property
    def root_ca(self) -> x509.Certificate:
        """The installation's simulated root CA (the trust anchor to configure for sim quotes)."""
        return self._keys.root

    @property
    def root_ca_pem(self) -> str:
        return self._keys.root.public_bytes(Encoding.PEM).decode("ascii")

    @property
    def fmspc(self) -> bytes:
        return self._identity.platform.fmspc

    def _current_collateral(self) -> tuple[Collateral, Collateral]:
        now = self._clock()
        with self._lock:
            if self._collateral_next_update - now < REISSUE_MARGIN:
                with locked(os.path.join(self._state_dir, ".lock")):
                    self._collateral = self._reissue(self._state_dir, self._keys, self._identity, now)
                self._collateral_next_update = self._next_update(self._collateral[0])
            return self._collateral

    def collateral(self) -> Collateral:
        """Current SGX collateral, re-issued (re-signed with fresh dates) when it nears expiry."""
        return self._current_collateral()[0]

    def tdx_collateral(self) -> Collateral:
        """Current TDX collateral (TDX TCB Info, TD QE Identity), re-issued with the SGX one."""
        return self._current_collateral()[1]

    def quote(
        self,
        mr_enclave: bytes,
        report_data: bytes,
        *,
        mr_signer: bytes = DEFAULT_ENCLAVE_SIGNER,
        isv_prod_id: int = 0,
        isv_svn: int = 0,
        attributes: bytes = DEFAULT_ENCLAVE_ATTRIBUTES,
        config_id: bytes = bytes(64),
    ) -> bytes:
        """An SGX ECDSA quote v3 for a simulated enclave; ``report_data`` (≤ 64 bytes) is
        zero-padded to 64 bytes as attesters do; ``config_id`` is CONFIGID (set at launch)."""
        if len(mr_enclave) != 32 or len(mr_signer) != 32:
            raise ConfigError("mr_enclave and mr_signer are 32 bytes")
        if len(report_data) > 64:
            raise ConfigError("report_data is at most 64 bytes")
        if len(attributes) != 16 or len(config_id) != 64:
            raise ConfigError("attributes are 16 bytes and config_id 64")
        body = EnclaveReport.build(mr_enclave=mr_enclave, mr_signer=mr_signer,
                                   report_data=report_data.ljust(64, b"\0"), isv_prod_id=isv_prod_id,
                                   isv_svn=isv_svn, attributes=attributes, config_id=config_id,
                                   cpu_svn=self._identity.platform.cpu_svn)
        quote = build_sgx_quote(
            body, attestation_key=self._attestation_xy,
            sign=lambda message: sign_p256_raw(self._attestation_key, message), qe=self._qe,
            qe_svn=self._identity.qe.isv_svn, pce_svn=self._identity.platform.pce_svn,
            user_data=self._identity.qe_id + bytes(4))
        return quote.to_bytes()

    def td_quote(
        self,
        mr_td: bytes,
        report_data: bytes,
        *,
        rtmrs: tuple[bytes, bytes, bytes, bytes] = (bytes(48),) * 4,
        mr_config_id: bytes = bytes(48),
        mr_owner: bytes = bytes(48),
        mr_owner_config: bytes = bytes(48),
        td_attributes: bytes = DEFAULT_TD_ATTRIBUTES,
        xfam: bytes = DEFAULT_XFAM,
        version: int = 4,
    ) -> bytes:
        """A TDX quote (v4, or v5 with body type 2) for a simulated TD measured as ``mr_td``;
        ``report_data`` (≤ 64 bytes) is zero-padded to 64 bytes as attesters do."""
        sizes = {"mr_td": (mr_td, 48), "mr_config_id": (mr_config_id, 48), "mr_owner": (mr_owner, 48),
                 "mr_owner_config": (mr_owner_config, 48), "td_attributes": (td_attributes, 8),
                 "xfam": (xfam, 8)}
        for what, (value, size) in sizes.items():
            if not isinstance(value, bytes) or len(value) != size:
                raise ConfigError(f"{what} is {size} bytes")
        if len(rtmrs) != 4 or any(not isinstance(r, bytes) or len(r) != 48 for r in rtmrs):
            raise ConfigError("rtmrs are four 48-byte registers")
        if not isinstance(report_data, bytes) or len(report_data) > 64:
            raise ConfigError("report_data is at most 64 bytes")
        if version not in (4, 5):
            raise ConfigError("TDX quotes are version 4 or 5")
        body = TdReport10(
            tee_tcb_svn=SIM_TEE_TCB_SVN, mr_seam=_TDX_MODULE_MRSEAM, mr_signer_seam=SIM_TDX_MODULE_SIGNER,
            seam_attributes=bytes(8), td_attributes=td_attributes, xfam=xfam, mr_td=mr_td,
            mr_config_id=mr_config_id, mr_owner=mr_owner, mr_owner_config=mr_owner_config,
            rt_mr0=rtmrs[0], rt_mr1=rtmrs[1], rt_mr2=rtmrs[2], rt_mr3=rtmrs[3],
            report_data=report_data.ljust(64, b"\0"))
        quote = build_tdx_quote(
            body, attestation_key=self._attestation_xy,
            sign=lambda message: sign_p256_raw(self._attestation_key, message), qe=self._td_qe,
            version=version, user_data=self._identity.qe_id + bytes(4))
        return quote.to_bytes()

    def export(self, out_dir: str) -> None:
        """Write ``root-ca.pem``, ``collateral.json`` (what ``inclavare verify`` takes) and
        ``tdx-collateral.json`` (the same for TD quotes)."""
        os.makedirs(out_dir, exist_ok=True)
        sgx, tdx = self._current_collateral()
        write_atomic(os.path.join(out_dir, "root-ca.pem"), self.root_ca_pem.encode(), mode=0o644)
        write_atomic(os.path.join(out_dir, _SGX_COLLATERAL), sgx.to_json().encode(), mode=0o644)
        write_atomic(os.path.join(out_dir, _TDX_COLLATERAL), tdx.to_json().encode(), mode=0o644)
