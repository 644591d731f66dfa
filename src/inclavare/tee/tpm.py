"""The TPM 2.0 attester: a TPM2_Quote over selected sha256 PCRs, reached through a TCTI.

Evidence in Trustee's ``tpm`` shape (trustee deps/verifier/src/tpm/mod.rs ``TpmEvidence``, as
guest-components' attester/src/tpm emits it)::

    {"ek_cert": "<PEM>" | null, "ak_pubkey": "<PEM SPKI>",
     "quote": {"SHA256": {"attest_body": "<b64 TPMS_ATTEST>", "attest_sig": "<b64 signature>",
                          "pcrs": ["<hex>", ...]}},
     "eventlog": null, "aa_eventlog": null}

The AK is an RSA-2048 restricted signing key created as a primary in the endorsement hierarchy
(the EK's hierarchy, as swtpm_setup provisions it): the same endorsement seed yields the same AK,
so a verifier can enrol it once. The qualifying data is the report data zero-padded to 64 bytes
(as guest-components' attester). The EK certificate is read from its NV index (TCG EK profile:
RSA 0x01c00002, where swtpm_setup --create-ek-cert and cloud vTPMs put it). Everything goes
through tpm2-pytss (the optional ``tpm`` extra); nothing is marshalled by hand.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from inclavare.errors import ConfigError, NotSupportedError
from inclavare.tee.registry import TPM, Tee, pad_report_data

DEFAULT_PCRS: tuple[int, ...] = tuple(range(8))
"""PCRs 0-7 (firmware, boot loader, Secure Boot state): the boot chain a vTPM measures."""
RSA_EK_CERT_NV_INDEX = 0x01C00002
_NV_CHUNK = 768  # below every TPM's MAX_NV_BUFFER_SIZE
PCR_BANK = "sha256"
QUOTE_KEY = "SHA256"  # the bank's key in the evidence's "quote" map (Trustee's spelling)


class TpmUnavailable(NotSupportedError):
    """tpm2-pytss is not installed, or the TPM cannot be reached or used."""


def _pytss() -> Any:
    try:
        import tpm2_pytss  # type: ignore[import-untyped]
    except ImportError as exc:  # the optional extra, or Debian's libtss2 libraries, are missing
        raise TpmUnavailable("the TPM attester needs tpm2-pytss (pip install 'inclavare[tpm]', "
                             "with Debian's libtss2-dev)") from exc
    return tpm2_pytss


def _check_pcrs(pcrs: Sequence[int]) -> tuple[int, ...]:
    chosen = tuple(pcrs)
    if not chosen or len(set(chosen)) != len(chosen) or any(
            not isinstance(i, int) or isinstance(i, bool) or not 0 <= i <= 23 for i in chosen):
        raise ConfigError("TPM PCRs are distinct indices 0-23, at least one")
    return tuple(sorted(chosen))


class TpmAttester:
    """Quotes ``pcrs`` (sha256 bank) of the TPM behind ``tcti`` (a TCTI string: ``device:/dev/tpmrm0``
    on a vTPM, ``swtpm:host=127.0.0.1,port=N`` for swtpm)."""

    tee: Tee = TPM

    def __init__(self, tcti: str, *, pcrs: Sequence[int] = DEFAULT_PCRS,
                 ek_cert_nv_index: int | None = RSA_EK_CERT_NV_INDEX) -> None:
        if not isinstance(tcti, str) or not tcti:
            raise ConfigError("the TPM attester needs a TCTI (e.g. device:/dev/tpmrm0)")
        self.tcti = tcti
        self.pcrs = _check_pcrs(pcrs)
        self.ek_cert_nv_index = ek_cert_nv_index

    @contextmanager
    def _esapi(self) -> Iterator[Any]:
        tss = _pytss()
        try:
            ctx = tss.ESAPI(self.tcti)
        except tss.TSS2_Exception as exc:
            raise TpmUnavailable(f"cannot open the TPM at {self.tcti}: {exc}") from exc
        try:
            yield ctx
        except tss.TSS2_Exception as exc:
            raise TpmUnavailable(f"TPM at {self.tcti}: {exc}") from exc
        finally:
            ctx.close()

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        tss = _pytss()
        qualifying = pad_report_data(report_data)
        selection = tss.TPML_PCR_SELECTION.parse(f"{PCR_BANK}:" + ",".join(map(str, self.pcrs)))
        with self._esapi() as ctx:
            ak, ak_public = self._attestation_key(ctx, tss)
            try:
                values = self._pcr_values(ctx, tss)
                attest, signature = ctx.quote(ak, selection, tss.TPM2B_DATA(qualifying),
                                              tss.TPMT_SIG_SCHEME(scheme=tss.TPM2_ALG.NULL))
            finally:
                ctx.flush_context(ak)
            ek_cert = self._ek_certificate(ctx, tss)
        return {
            "ek_cert": ek_cert,
            "ak_pubkey": ak_public.to_pem().decode(),
            "quote": {QUOTE_KEY: {
                "attest_body": base64.b64encode(bytes(attest)).decode(),
                "attest_sig": base64.b64encode(bytes(signature.signature.rsassa.sig)).decode(),
                "pcrs": [v.hex() for v in values],
            }},
            "eventlog": None,
            "aa_eventlog": None,
        }

    @staticmethod
    def _attestation_key(ctx: Any, tss: Any) -> tuple[Any, Any]:
        """The AK: a restricted RSASSA-SHA256 signing primary under the endorsement hierarchy."""
        template = tss.TPM2B_PUBLIC.parse(
            "rsa2048:rsassa-sha256:null",
            objectAttributes=(tss.TPMA_OBJECT.RESTRICTED | tss.TPMA_OBJECT.SIGN_ENCRYPT
                              | tss.TPMA_OBJECT.FIXEDTPM | tss.TPMA_OBJECT.FIXEDPARENT
                              | tss.TPMA_OBJECT.SENSITIVEDATAORIGIN | tss.TPMA_OBJECT.USERWITHAUTH),
            nameAlg="sha256")
        handle, public, _, _, _ = ctx.create_primary(None, template, primary_handle=tss.ESYS_TR.ENDORSEMENT)
        return handle, public

    def _pcr_values(self, ctx: Any, tss: Any) -> list[bytes]:
        """The selected PCRs in index order (a TPM answers at most 8 per read)."""
        values: list[bytes] = []
        for start in range(0, len(self.pcrs), 8):
            chunk = self.pcrs[start:start + 8]
            sel = tss.TPML_PCR_SELECTION.parse(f"{PCR_BANK}:" + ",".join(map(str, chunk)))
            _, _, digests = ctx.pcr_read(sel)
            if len(digests) != len(chunk):
                raise TpmUnavailable(f"the TPM has no {PCR_BANK} PCR bank with PCRs {list(chunk)}")
            values.extend(bytes(d) for d in digests)
        return values

    def _ek_certificate(self, ctx: Any, tss: Any) -> str | None:
        """The EK certificate (PEM) from its NV index; None when the TPM holds none."""
        if self.ek_cert_nv_index is None:
            return None
        try:
            nv = ctx.tr_from_tpmpublic(self.ek_cert_nv_index)
        except tss.TSS2_Exception:
            return None
        size = ctx.nv_read_public(nv)[0].nvPublic.dataSize
        data = b"".join(bytes(ctx.nv_read(nv, min(_NV_CHUNK, size - off), off, auth_handle=nv))
                        for off in range(0, size, _NV_CHUNK))
        try:
            cert = x509.load_der_x509_certificate(data)
        except ValueError as exc:
            raise TpmUnavailable(f"the EK certificate in NV {self.ek_cert_nv_index:#x} is not DER") from exc
        return cert.public_bytes(Encoding.PEM).decode()
