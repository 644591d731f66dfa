"""Verifier of TPM 2.0 evidence (Trustee's ``tpm`` shape, see ``inclavare.tee.tpm``).

Checks, in order (Trustee's deps/verifier/src/tpm checks the signature, PCR digest and report
data; the EK chain, the quote's magic/type and the PCR selection are checked here too):

1. the EK certificate chains to a configured EK CA (``TrustConfig.tpm_ek_cas``; a self-signed
   root in it ends the path) and every certificate on the path is valid now;
2. the quote (``attest_body``, a TPMS_ATTEST) is signed by the AK: RSASSA-PKCS1-v1_5 SHA-256;
3. it is a TPM-generated quote (magic ``TPM_GENERATED``, type ``ATTEST_QUOTE``) over one sha256
   PCR selection, and SHA-256 of the listed PCR values (in index order) equals its pcrDigest;
4. its extraData (qualifying data) equals the expected report data zero-padded to 64 bytes.

The AK's binding to the EK is not proved in the one-shot KBS attest: as in Trustee, the AK is
trusted as a reference value (``tpm_trusted_ak``, compared with the ``ak_public_sha256`` claim by
the attestation policy), enrolled once by the operator (e.g. after ``tpm2_makecredential`` /
``tpm2_activatecredential`` against the EK this chain vouches for). Parsing the TPM structures uses
tpm2-pytss; without it the TPM is not ``ready`` and its evidence is refused at ``/auth``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from inclavare.errors import CertificateChainError, FormatError, SignatureError, VerificationError
from inclavare.tee.registry import Tee
from inclavare.tee.tpm import QUOTE_KEY, TpmUnavailable, _pytss
from inclavare.verify.evidence import SNP_STATUS, TrustConfig, Verdict, expect_report_data
from inclavare.verify.snp import _check_validity, _issued_by

TPM_GENERATED = 0xFF544347
ST_ATTEST_QUOTE = 0x8018
ALG_SHA256 = 0x000B
MAX_CHAIN = 4
_FIELDS = frozenset({"ek_cert", "ak_pubkey", "quote", "eventlog", "aa_eventlog", "ek_pubkey",
                     "keylime_agent_uuid"})


class MalformedTpmEvidence(VerificationError, FormatError):
    """The evidence is not Trustee's TPM evidence JSON, or a TPM structure in it is malformed."""


def tpm_ready(trust: TrustConfig) -> bool:
    """TPM evidence is verifiable once an EK CA is configured and tpm2-pytss is importable."""
    if not trust.tpm_ek_cas:
        return False
    try:
        _pytss()
    except TpmUnavailable:
        return False
    return True


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedTpmEvidence(f"TPM evidence {what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedTpmEvidence(f"TPM evidence {what} is not base64") from None


def _pem_certificate(value: Any) -> x509.Certificate:
    if not isinstance(value, str):
        raise CertificateChainError("TPM evidence carries no EK certificate (ek_cert)")
    try:
        return x509.load_pem_x509_certificate(value.encode())
    except ValueError:
        raise MalformedTpmEvidence("TPM evidence ek_cert is not a PEM certificate") from None


def check_ek_chain(ek: x509.Certificate, cas: tuple[x509.Certificate, ...], now: dt.datetime) -> None:
    """``ek`` is issued (through configured intermediates) by a configured self-signed CA."""
    cert, what = ek, "EK"
    _check_validity(cert, now, what)
    for _ in range(MAX_CHAIN):
        issuer = next((c for c in cas if c.subject == cert.issuer), None)
        if issuer is None:
            raise CertificateChainError(f"the {what} certificate's issuer is not a configured TPM EK CA")
        _issued_by(cert, issuer, f"the {what} certificate")
        _check_validity(issuer, now, "TPM EK CA")
        if issuer.subject == issuer.issuer:
            _issued_by(issuer, issuer, "the TPM EK CA root")
            return
        cert, what = issuer, "TPM EK CA"
    raise CertificateChainError("the EK certificate chain is longer than the configured CAs allow")


def _ak_key(value: Any) -> tuple[rsa.RSAPublicKey, bytes]:
    if not isinstance(value, str):
        raise MalformedTpmEvidence("TPM evidence ak_pubkey must be a PEM public key")
    try:
        key = serialization.load_pem_public_key(value.encode())
    except (ValueError, TypeError):
        raise MalformedTpmEvidence("TPM evidence ak_pubkey is not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise MalformedTpmEvidence("the TPM AK must be an RSA key of at least 2048 bits")
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, der


def _parse_attest(body: bytes) -> Any:
    tss = _pytss()
    try:
        attest, used = tss.TPMS_ATTEST.unmarshal(body)
    except (tss.TSS2_Exception, ValueError, TypeError):
        raise MalformedTpmEvidence("the TPM quote (attest_body) is not a TPMS_ATTEST") from None
    if used != len(body):
        raise MalformedTpmEvidence("the TPM quote (attest_body) has trailing bytes")
    if int(attest.magic) != TPM_GENERATED or int(attest.type) != ST_ATTEST_QUOTE:
        raise MalformedTpmEvidence("the TPM attest_body is not a TPM-generated quote")
    return attest


def _selected_pcrs(attest: Any) -> list[int]:
    selection = attest.attested.quote.pcrSelect
    if int(selection.count) != 1 or int(selection.pcrSelections[0].hash) != ALG_SHA256:
        raise MalformedTpmEvidence("the TPM quote must select PCRs of the sha256 bank only")
    sel = selection.pcrSelections[0]
    bits = bytes(sel.pcrSelect)[: int(sel.sizeofSelect)]
    return [byte * 8 + bit for byte, value in enumerate(bits) for bit in range(8) if value >> bit & 1]


def verify_tpm(tee: Tee, evidence: Mapping[str, Any], report_data: bytes | None, trust: TrustConfig,
               now: dt.datetime) -> Verdict:
    """Verify TPM evidence (see the module docstring); claims: ``pcrs`` (index -> hex),
    ``ak_public_sha256``, the EK issuer/subject, ``report_data`` and the quote's clock facts."""
    unknown = set(evidence) - _FIELDS
    if unknown:
        raise MalformedTpmEvidence(f"TPM evidence has unknown fields: {', '.join(sorted(unknown))}")
    if not trust.tpm_ek_cas:
        raise CertificateChainError("no TPM EK CA is configured")
    ek = _pem_certificate(evidence.get("ek_cert"))
    check_ek_chain(ek, trust.tpm_ek_cas, now)
    ak, ak_der = _ak_key(evidence.get("ak_pubkey"))
    quotes = evidence.get("quote")
    if not isinstance(quotes, Mapping) or set(quotes) != {QUOTE_KEY}:
        raise MalformedTpmEvidence(f"TPM evidence quote must hold exactly the {QUOTE_KEY} bank")
    quote = quotes[QUOTE_KEY]
    if not isinstance(quote, Mapping) or set(quote) != {"attest_body", "attest_sig", "pcrs"}:
        raise MalformedTpmEvidence("a TPM quote is {attest_body, attest_sig, pcrs}")
    body, sig = _b64(quote["attest_body"], "attest_body"), _b64(quote["attest_sig"], "attest_sig")
    try:
        ak.verify(sig, body, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SignatureError("the TPM quote is not signed by the AK") from None
    attest = _parse_attest(body)
    indices = _selected_pcrs(attest)
    values = quote["pcrs"]
    if not isinstance(values, list) or len(values) != len(indices):
        raise MalformedTpmEvidence(f"TPM evidence pcrs must list the {len(indices)} quoted PCR values")
    try:
        raw = [bytes.fromhex(v) for v in values]
    except (TypeError, ValueError):
        raise MalformedTpmEvidence("TPM PCR values must be hex strings") from None
    if any(len(v) != 32 for v in raw):
        raise MalformedTpmEvidence("sha256 PCR values are 32 bytes")
    if hashlib.sha256(b"".join(raw)).digest() != bytes(attest.attested.quote.pcrDigest):
        raise SignatureError("the PCR values do not match the quote's PCR digest")
    extra = bytes(attest.extraData)
    expect_report_data(extra, report_data)
    claims = {
        "pcr_bank": "sha256",
        "pcrs": {str(i): v.hex() for i, v in zip(indices, raw, strict=True)},
        "ak_public_sha256": hashlib.sha256(ak_der).hexdigest(),
        "ek_cert_issuer": ek.issuer.rfc4514_string(),
        "ek_cert_subject": ek.subject.rfc4514_string(),
        "report_data": extra.hex(),
        "quote": {"signer": bytes(attest.qualifiedSigner).hex(),
                  "clock": int(attest.clockInfo.clock), "reset_count": int(attest.clockInfo.resetCount),
                  "restart_count": int(attest.clockInfo.restartCount),
                  "firmware_version": int(attest.firmwareVersion)},
    }
    return Verdict(tee.name, SNP_STATUS, (), claims)
