"""Malformed evidence or collateral never escapes verification as anything but a typed error."""

from __future__ import annotations

import base64
import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testdata_paths import PINNED_2025, vector

from inclavare.errors import VerificationError
from inclavare.formats.collateral import Collateral
from inclavare.verify.dcap import verify_quote
from inclavare.verify.evidence import TrustConfig, verify_evidence


def _inputs() -> tuple[bytes, Collateral]:
    return (vector("dcap", "tdx_quote").read_bytes(),
            Collateral.from_json(vector("dcap", "tdx_quote_collateral.json").read_text()))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=5000))
def test_random_quotes(data: bytes) -> None:
    _, collateral = _inputs()
    try:
        verify_quote(data, collateral, now=PINNED_2025)
    except VerificationError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_quotes_and_truncations(data: st.DataObject) -> None:
    quote, collateral = _inputs()
    mutated = bytearray(quote)
    for _ in range(data.draw(st.integers(1, 4))):
        mutated[data.draw(st.integers(0, len(quote) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(quote)))
    try:
        verify_quote(bytes(mutated[:cut]), collateral, now=PINNED_2025)
    except VerificationError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature",
                        "tcb_info", "qe_identity", "tcb_info_issuer_chain", "pck_certificate_chain"]),
       st.binary(max_size=300))
def test_garbage_collateral_fields(field: str, garbage: bytes) -> None:
    quote, collateral = _inputs()
    value: object = garbage
    if field in ("tcb_info", "qe_identity", "tcb_info_issuer_chain", "pck_certificate_chain"):
        value = garbage.decode("latin-1")
    try:
        verify_quote(quote, dataclasses.replace(collateral, **{field: value}), now=PINNED_2025)
    except VerificationError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["quote", "attestation_report", "cert_chain", "x"]),
                       st.none() | st.integers() | st.text(max_size=40) | st.binary(max_size=60).map(
                           lambda b: base64.b64encode(b).decode()), max_size=3),
       st.sampled_from(["sgx", "tdx", "snp", "sample"]))
def test_arbitrary_evidence_documents(evidence: dict[str, object], tee: str) -> None:
    try:
        verify_evidence(tee, evidence, report_data=None, trust=TrustConfig(), now=PINNED_2025)
    except VerificationError:
        pass
