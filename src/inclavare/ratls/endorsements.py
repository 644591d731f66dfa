"""The endorsements extension (TCG DICE 2.23.133.5.4.2): DCAP collateral carried in the certificate.

Interoperable RA-TLS (and rats-tls with ``PROVIDE_ENDORSEMENTS``) may ship the collateral the
quote needs next to the evidence, as ``60000([version, tcb_info, tcb_issuer_chain, crl_pck_cert,
crl_pck_proc_ca, crl_issuer_chain_pck_cert, qe_id_info, qe_id_issuer_chain,
creation_datetime?])`` — the field order of Open Enclave's ``oe_sgx_endorsements_fields_t``,
filled from DCAP's ``sgx_ql_qve_collateral_t``. The values are what the PCS/PCCS returned: TCB
info and QE identity as the signed JSON envelope (``{"tcbInfo": …, "signature": "…"}``), CRLs as
raw DER, hex DER or PEM depending on the collateral version, chains as PEM, often with a
trailing NUL. Collateral is signed by Intel (or the configured root), so taking it from the
peer is safe: it still has to verify against the trust anchors.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

from inclavare.errors import FormatError
from inclavare.formats.collateral import Collateral
from inclavare.formats.der import DerReader
from inclavare.formats.hexadecimal import decode_hex
from inclavare.formats.pem import parse_pem_blocks
from inclavare.ratls import cbor_subset
from inclavare.ratls.cbor_subset import CborError, Tagged

TAG_INTEL_TEE_QUOTE = 60000
VERSION_RAW_DER_CRLS = (1 << 16) | 3  # major 3, minor 1: CRLs are raw DER


class EndorsementsError(FormatError):
    """The endorsements extension is malformed."""


def _text(value: bytes, what: str) -> str:
    try:
        return value.rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        raise EndorsementsError(f"endorsements: {what} is not UTF-8 text") from None


def _crl(value: bytes, what: str) -> bytes:
    if value[:1] == b"\x30":
        # raw DER: exactly the encoded object, then only NUL padding (the DER itself may end in
        # 0x00 — a signature's last byte — so it is never stripped)
        try:
            _, _, _, end = DerReader(value).read_tlv(limit=len(value) + 1)
        except FormatError as exc:
            raise EndorsementsError(f"endorsements: {what} is not DER: {exc}") from exc
        if value[end:].strip(b"\0"):
            raise EndorsementsError(f"endorsements: {what} has trailing data after its DER")
        return value[:end]
    data = value.rstrip(b"\0")
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            blocks = parse_pem_blocks(data)
        except FormatError as exc:
            raise EndorsementsError(f"endorsements: {what}: {exc}") from exc
        if len(blocks) != 1 or blocks[0].label != "X509 CRL":
            raise EndorsementsError(f"endorsements: {what} must hold one PEM X509 CRL")
        return blocks[0].contents
    try:
        return decode_hex(_text(data, what).strip(), f"endorsements {what}")
    except FormatError as exc:
        raise EndorsementsError(f"endorsements: {what} is neither DER, PEM nor hex: {exc}") from exc


def _signed_member(envelope: str, member: str, what: str) -> tuple[str, bytes]:
    """The exact text of ``member`` (the signed bytes) and the ``signature`` of a PCS envelope."""
    decoder = json.JSONDecoder()
    text = envelope.strip()
    if not text.startswith("{"):
        raise EndorsementsError(f"endorsements: {what} is not a JSON object")
    pos, raw_member, signature = 1, None, None
    try:
        while True:
            while text[pos] in " \t\r\n":
                pos += 1
            if text[pos] == "}":
                break
            key, pos = decoder.raw_decode(text, pos) if text[pos] == '"' else (None, pos)
            if not isinstance(key, str):
                raise EndorsementsError(f"endorsements: {what} has a non-string key")
            while text[pos] in " \t\r\n":
                pos += 1
            if text[pos] != ":":
                raise EndorsementsError(f"endorsements: {what} is not valid JSON")
            pos += 1
            while text[pos] in " \t\r\n":
                pos += 1
            value, end = decoder.raw_decode(text, pos)
            if key == member:
                if raw_member is not None or not isinstance(value, dict):
                    raise EndorsementsError(f"endorsements: {what} has a bad {member!r} member")
                raw_member = text[pos:end]
            elif key == "signature":
                if signature is not None or not isinstance(value, str):
                    raise EndorsementsError(f"endorsements: {what} has a bad signature member")
                signature = value
            pos = end
            while text[pos] in " \t\r\n":
                pos += 1
            if text[pos] == ",":
                pos += 1
            elif text[pos] != "}":
                raise EndorsementsError(f"endorsements: {what} is not valid JSON")
    except (IndexError, ValueError, RecursionError):
        raise EndorsementsError(f"endorsements: {what} is not valid JSON") from None
    if text[pos + 1:].strip():
        raise EndorsementsError(f"endorsements: {what} has trailing data")
    if raw_member is None or signature is None:
        raise EndorsementsError(f"endorsements: {what} needs {member!r} and 'signature'")
    try:
        return raw_member, decode_hex(signature, f"endorsements {what} signature")
    except FormatError as exc:
        raise EndorsementsError(str(exc)) from exc


def parse_endorsements(value: bytes, *, evidence_tag: int = TAG_INTEL_TEE_QUOTE) -> Collateral:
    """Collateral from the endorsements extension value (SGX/TDX ECDSA only)."""
    try:
        item = cbor_subset.loads(value)
    except CborError as exc:
        raise EndorsementsError(f"endorsements: {exc}") from exc
    if not isinstance(item, Tagged) or item.tag != evidence_tag:
        raise EndorsementsError(f"endorsements must be tagged {evidence_tag} like the evidence")
    fields = item.value
    if not isinstance(fields, list) or len(fields) not in (8, 9):
        raise EndorsementsError("endorsements must be an array of 8 or 9 entries")
    version, rest = fields[0], fields[1:]
    blobs = [b for b in rest if isinstance(b, bytes)]
    if not isinstance(version, int) or len(blobs) != len(rest):
        raise EndorsementsError("endorsements: version must be an integer and the rest byte strings")
    tcb_info, tcb_chain, pck_crl, root_crl, pck_crl_chain, qe_id, qe_id_chain = blobs[:7]
    tcb_text, tcb_sig = _signed_member(_text(tcb_info, "TCB info"), "tcbInfo", "TCB info")
    qe_text, qe_sig = _signed_member(_text(qe_id, "QE identity"), "enclaveIdentity", "QE identity")
    return Collateral(
        pck_crl_issuer_chain=_text(pck_crl_chain, "PCK CRL issuer chain"),
        root_ca_crl=_crl(root_crl, "root CA CRL"),
        pck_crl=_crl(pck_crl, "PCK CRL"),
        tcb_info_issuer_chain=_text(tcb_chain, "TCB info issuer chain"),
        tcb_info=tcb_text,
        tcb_info_signature=tcb_sig,
        qe_identity_issuer_chain=_text(qe_id_chain, "QE identity issuer chain"),
        qe_identity=qe_text,
        qe_identity_signature=qe_sig,
    )


def _envelope(member: str, text: str, signature: bytes) -> bytes:
    return ('{"%s":%s,"signature":"%s"}' % (member, text, binascii.hexlify(signature).decode())
            ).encode("utf-8")


def build_endorsements(collateral: Collateral, *, evidence_tag: int = TAG_INTEL_TEE_QUOTE) -> bytes:
    """The endorsements extension value for ``collateral`` (CRLs as raw DER, version 3.1)."""
    fields: list[Any] = [
        VERSION_RAW_DER_CRLS,
        _envelope("tcbInfo", collateral.tcb_info, collateral.tcb_info_signature),
        collateral.tcb_info_issuer_chain.encode("utf-8"),
        collateral.pck_crl,
        collateral.root_ca_crl,
        collateral.pck_crl_issuer_chain.encode("utf-8"),
        _envelope("enclaveIdentity", collateral.qe_identity, collateral.qe_identity_signature),
        collateral.qe_identity_issuer_chain.encode("utf-8"),
    ]
    return cbor_subset.dumps(Tagged(evidence_tag, fields))
