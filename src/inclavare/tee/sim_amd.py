"""The simulated AMD SEV-SNP authority: the hardware side of the simulated SNP TEE.

Shaped like AMD's: a self-signed ARK and an ASK (RSA-4096, RSASSA-PSS/SHA-384, as AMD signs them)
and, per reported TCB, a VCEK (ECDSA P-384) issued by the ASK with AMD's extensions (SPLs of the
boot loader, PSP OS, SNP firmware and microcode; hwID = the chip id). The VCEK key is derived from
a per-installation chip secret and the TCB, as the firmware derives it, so the same TCB always
signs with the same key. :meth:`SimAmdAuthority.report` produces signed attestation reports v3
(Milan TCB layout). Every name says SIMULATED; only a verifier configured with this ARK accepts
its reports. No protection: whoever reads ``state_dir`` can mint reports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from inclavare.atomic_file import locked, write_atomic
from inclavare.crypto.signatures import sign_p384_le
from inclavare.errors import ConfigError, FormatError, StoreError
from inclavare.formats.der import encode_integer, encode_tlv
from inclavare.formats.snp import AMD_OID, VCEK_HWID_OID, VCEK_SPL_OIDS, SnpTcb, build_snp_report
from inclavare.tee.sim_authority import read_state
from inclavare.tee.sim_pki import ORGANIZATION

_PRODUCT = "Milan"
_IA5STRING = 0x16
_P384_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
_STATE = "amd-authority.json"
_FILES = ("amd-ark.key", "amd-ask.key", "amd-ark.pem", "amd-ask.pem")
CLOCK_SKEW = dt.timedelta(hours=1)
VCEK_LIFETIME = dt.timedelta(days=365 * 7)
DEFAULT_POLICY = 0x30000  # SMT allowed, reserved bit 17 set; no debug, no migration agent
MILAN_CPUID_FMS = bytes([0x19, 0x01, 0x01])  # family 19h, model 1, stepping 1 (Milan B1)


def milan_tcb(*, bootloader: int = 3, tee: int = 0, snp: int = 8, microcode: int = 115) -> int:
    """A TCB_VERSION in the Milan/Genoa layout (byte 0 boot loader, 1 PSP OS, 6 SNP, 7 microcode)."""
    for value in (bootloader, tee, snp, microcode):
        if not isinstance(value, int) or not 0 <= value <= 255:
            raise ConfigError("TCB security patch levels are 0..255")
    return bootloader | tee << 8 | snp << 48 | microcode << 56


SIM_TCB = milan_tcb()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.COUNTRY_NAME, "ZZ")])


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def _sign(builder: x509.CertificateBuilder, key: rsa.RSAPrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA384(), rsa_padding=_PSS)


def _builder(subject: str, issuer: str, public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
             start: dt.datetime, end: dt.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end))


def _ca(subject: str, issuer: str, public_key: rsa.RSAPublicKey, key: rsa.RSAPrivateKey,
        start: dt.datetime, end: dt.datetime) -> x509.Certificate:
    return _sign(_builder(subject, issuer, public_key, start, end)
                 .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True), key)


@dataclass(frozen=True, slots=True)
class _Chip:
    chip_id: bytes
    secret: bytes

    def to_json(self) -> str:
        return json.dumps({"version": 1, "simulated": True, "chip_id": self.chip_id.hex(),
                           "secret": self.secret.hex()}) + "\n"

    @classmethod
    def from_json(cls, text: str) -> _Chip:
        try:
            d = json.loads(text)
            chip = cls(bytes.fromhex(d["chip_id"]), bytes.fromhex(d["secret"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"corrupt simulated AMD authority state ({_STATE}): {exc}") from exc
        if d.get("version") != 1 or len(chip.chip_id) != 64 or len(chip.secret) != 32:
            raise StoreError(f"corrupt simulated AMD authority state ({_STATE})")
        return chip


class SimAmdAuthority:
    """A loaded simulated AMD authority (see the module docstring). Thread-safe."""

    def __init__(self, chip: _Chip, ark: x509.Certificate, ask: x509.Certificate,
                 ask_key: rsa.RSAPrivateKey) -> None:
        self._chip = chip
        self.ark = ark
        self.ask = ask
        self._ask_key = ask_key
        self._lock = threading.Lock()
        self._vceks: dict[int, tuple[ec.EllipticCurvePrivateKey, x509.Certificate]] = {}

    @classmethod
    def load_or_create(cls, state_dir: str) -> SimAmdAuthority:
        """Load the installation's AMD authority from ``state_dir``, creating it on first use."""
        if not state_dir:
            raise ConfigError("a state directory for the simulated AMD authority is required")
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        with locked(os.path.join(state_dir, ".lock")):
            if not os.path.exists(os.path.join(state_dir, _STATE)):
                cls._create(state_dir)
            return cls._load(state_dir)

    @staticmethod
    def _create(state_dir: str) -> None:
        start = dt.datetime.now(dt.timezone.utc) - CLOCK_SKEW
        end = start + dt.timedelta(days=365 * 25)
        ark_key, ask_key = (rsa.generate_private_key(65537, 4096) for _ in range(2))
        ark = _ca(f"ARK-{_PRODUCT}", f"ARK-{_PRODUCT}", ark_key.public_key(), ark_key, start, end)
        ask = _ca(f"SEV-{_PRODUCT}", f"ARK-{_PRODUCT}", ask_key.public_key(), ark_key, start, end)
        pkcs8 = serialization.PrivateFormat.PKCS8
        for filename, data in zip(_FILES, (
                ark_key.private_bytes(Encoding.PEM, pkcs8, serialization.NoEncryption()),
                ask_key.private_bytes(Encoding.PEM, pkcs8, serialization.NoEncryption()),
                ark.public_bytes(Encoding.PEM), ask.public_bytes(Encoding.PEM)), strict=True):
            write_atomic(os.path.join(state_dir, filename), data)
        chip = _Chip(secrets.token_bytes(64), secrets.token_bytes(32))
        write_atomic(os.path.join(state_dir, _STATE), chip.to_json().encode())

    @classmethod
    def _load(cls, state_dir: str) -> SimAmdAuthority:
        def read(filename: str) -> bytes:
            return read_state(state_dir, filename, "simulated AMD authority")

        try:
            ask_key = serialization.load_pem_private_key(read(_FILES[1]), None)
            ark, ask = (x509.load_pem_x509_certificate(read(f)) for f in _FILES[2:])
        except ValueError as exc:
            raise StoreError(f"corrupt simulated AMD authority state: {exc}") from exc
        if not isinstance(ask_key, rsa.RSAPrivateKey):
            raise StoreError("the simulated ASK key must be an RSA key")
        return cls(_Chip.from_json(read(_STATE).decode("utf-8", "replace")), ark, ask, ask_key)

    @property
    def chip_id(self) -> bytes:
        return self._chip.chip_id

    @property
    def ask_ark_pem(self) -> bytes:
        """ASK then ARK, as AMD's ``cert_chain`` file (what ``amd_ask_ark`` configures)."""
        return self.ask.public_bytes(Encoding.PEM) + self.ark.public_bytes(Encoding.PEM)

    def vcek(self, reported_tcb: int = SIM_TCB) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """The VCEK key (derived from the chip secret and the TCB) and its certificate."""
        with self._lock:
            known = self._vceks.get(reported_tcb)
            if known is not None:
                return known
            seed = hmac.new(self._chip.secret, reported_tcb.to_bytes(8, "little"), hashlib.sha512).digest()
            key = ec.derive_private_key(int.from_bytes(seed, "big") % (_P384_ORDER - 1) + 1, ec.SECP384R1())
            tcb = SnpTcb(reported_tcb)
            start = dt.datetime.now(dt.timezone.utc) - CLOCK_SKEW
            builder = _builder("SEV-VCEK", f"SEV-{_PRODUCT}", key.public_key(), start, start + VCEK_LIFETIME)
            builder = builder.add_extension(x509.UnrecognizedExtension(
                x509.ObjectIdentifier(f"{AMD_OID}.1"), encode_integer(1)), critical=False)
            builder = builder.add_extension(x509.UnrecognizedExtension(
                x509.ObjectIdentifier(f"{AMD_OID}.2"), encode_tlv(_IA5STRING, f"{_PRODUCT}-B0".encode())), critical=False)
            for field, oid in VCEK_SPL_OIDS.items():
                builder = builder.add_extension(x509.UnrecognizedExtension(
                    x509.ObjectIdentifier(oid), encode_integer(getattr(tcb, field))), critical=False)
            builder = builder.add_extension(x509.UnrecognizedExtension(
                x509.ObjectIdentifier(VCEK_HWID_OID), self._chip.chip_id), critical=False)
            entry = (key, _sign(builder, self._ask_key))
            self._vceks[reported_tcb] = entry
            return entry

    def report(
        self,
        measurement: bytes,
        report_data: bytes,
        *,
        host_data: bytes = bytes(32),
        policy: int = DEFAULT_POLICY,
        platform_info: int = 1,
        reported_tcb: int = SIM_TCB,
        guest_svn: int = 0,
        vmpl: int = 0,
        family_id: bytes = bytes(16),
        image_id: bytes = bytes(16),
    ) -> bytes:
        """A signed SNP attestation report v3 (1184 bytes) for a guest measured as ``measurement``;
        ``report_data`` (≤ 64 bytes) is zero-padded to 64 bytes."""
        if not isinstance(report_data, bytes) or len(report_data) > 64:
            raise ConfigError("report_data is at most 64 bytes")
        for what, value in (("reported_tcb", reported_tcb), ("policy", policy), ("platform_info", platform_info)):
            if not isinstance(value, int) or not 0 <= value < 1 << 64:
                raise ConfigError(f"{what} is a 64-bit unsigned integer")
        for what, value in (("guest_svn", guest_svn), ("vmpl", vmpl)):
            if not isinstance(value, int) or not 0 <= value < 1 << 32:
                raise ConfigError(f"{what} is a 32-bit unsigned integer")
        key, _ = self.vcek(reported_tcb)
        try:
            unsigned = build_snp_report(
                report_data=report_data.ljust(64, b"\0"), measurement=measurement, version=3,
                guest_svn=guest_svn, policy=policy, vmpl=vmpl, reported_tcb=reported_tcb,
                chip_id=self._chip.chip_id, host_data=host_data, cpuid_fms=MILAN_CPUID_FMS,
                family_id=family_id, image_id=image_id, platform_info=platform_info,
                report_id=hashlib.sha256(self._chip.secret + b"report id").digest())
        except (FormatError, TypeError) as exc:
            raise ConfigError(f"cannot build the SNP report: {exc}") from exc
        signed = unsigned.signed_bytes
        return signed + sign_p384_le(key, signed) + bytes(len(unsigned.raw) - len(signed) - 144)

    def export(self, out_dir: str) -> None:
        """Write ``ask_ark.pem`` (the trust anchor to configure for simulated SNP reports)."""
        os.makedirs(out_dir, exist_ok=True)
        write_atomic(os.path.join(out_dir, "ask_ark.pem"), self.ask_ark_pem, mode=0o644)
