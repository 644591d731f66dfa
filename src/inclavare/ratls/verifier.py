"""Verify an RA-TLS certificate: the evidence is genuine, binds the certificate's key, and the
policy accepts what it attests.

Steps, in order: parse the certificate, check its signature (its own key's, or a configured
issuer CA's for an endorsed certificate) and find its evidence (:mod:`.certificate`); check the
certificate's validity window (and the issuer CA's); check that the claims' ``pubkey-hash`` names the certificate's
key and that the evidence's report data is ``SHA-256(claims)`` (or ``SHA-256(SPKI)`` for the
legacy layouts); verify the evidence with the project's verifiers — DCAP quotes against the
configured trust anchors with collateral from the configuration and, when present and allowed,
from the certificate's endorsements extension; SNP reports against the configured AMD chains;
finally apply the :class:`~inclavare.ratls.policy.RatlsPolicy`.

Verified evidence is cached per certificate (keyed by its full DER and the collateral in use).
A cached verdict is reused only between the time it was verified and the earliest expiry of
anything it relied on (collateral ``nextUpdate``/CRLs, the certificates in the PCK and
collateral chains, the RA-TLS certificate itself), and the policy is applied on every use, so
the cache never changes a verdict — it only skips re-doing the same signature checks.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from inclavare.errors import FormatError, VerificationError
from inclavare.formats.collateral import Collateral
from inclavare.formats.pem import parse_pem_blocks
from inclavare.formats.quote import parse_quote
from inclavare.formats.rfc3339 import unix_seconds
from inclavare.formats.x509_view import CertificateView
from inclavare.memo import Memo
from inclavare.ratls.certificate import (
    TAG_INTEL_TEE_QUOTE,
    TAG_SEV_SNP,
    RatlsCertificate,
    RatlsCertificateError,
    parse_ratls_certificate,
    report_data_matches,
)
from inclavare.ratls.claims import PublicKeyNotBound
from inclavare.ratls.endorsements import parse_endorsements
from inclavare.ratls.issuers import IssuerCa
from inclavare.ratls.policy import RatlsPolicy
from inclavare.tee.registry import SNP
from inclavare.tee.sim_pki import quote_is_simulated
from inclavare.verify.dcap import MalformedQuote, verify_quote
from inclavare.verify.dcap_verifier import dcap_claims
from inclavare.verify.evidence import TrustConfig, UnsupportedTee, select_collateral, verify_evidence

Clock = Callable[[], dt.datetime]


class CertificateNotValidNow(VerificationError):
    """The RA-TLS certificate is outside its validity window."""


class UnsupportedEvidence(UnsupportedTee):
    """Evidence of a kind this verifier cannot appraise (local reports, SEV, CSV)."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True, slots=True)
class RatlsVerdict:
    """A verified peer. ``claims`` are the verifier's claims (bytes as hex); ``custom_claims``
    the extra claims of the certificate (e.g. rats-tls' ``key_0``); ``valid_until`` the Unix time
    after which the verdict must be re-established."""

    certificate_sha256: bytes
    evidence_type: str
    source: str
    status: str
    advisory_ids: tuple[str, ...]
    claims: dict[str, Any]
    nonce: bytes | None
    custom_claims: dict[str, bytes] = field(default_factory=dict)
    valid_until: int = 0
    simulated: bool = False  # verified against a simulated authority: proves nothing about hardware

    def to_dict(self) -> dict[str, Any]:
        return {"certificate_sha256": self.certificate_sha256.hex(),
                "evidence_type": self.evidence_type, "simulated": self.simulated, "format": self.source,
                "status": self.status, "advisory_ids": list(self.advisory_ids),
                "claims": self.claims,
                "nonce": self.nonce.hex() if self.nonce is not None else None,
                "custom_claims": {k: v.hex() for k, v in self.custom_claims.items()},
                "valid_until": dt.datetime.fromtimestamp(self.valid_until, dt.timezone.utc)
                .isoformat()}


@dataclass(frozen=True, slots=True)
class _Cached:
    verdict: RatlsVerdict
    verified_at: int


def _not_after_of(pem_texts: Iterable[str | bytes]) -> int | None:
    """The earliest notAfter among the certificates in these PEM chains (unparsable surplus
    blocks were not used by path validation and are skipped)."""
    earliest: int | None = None
    for text in pem_texts:
        try:
            blocks = parse_pem_blocks(text)
        except FormatError:
            continue
        for block in blocks:
            try:
                not_after = CertificateView.parse(block.contents).not_after
            except FormatError:
                continue
            earliest = not_after if earliest is None else min(earliest, not_after)
    return earliest


class RatlsVerifier:
    """Verifies peers' RA-TLS certificates under one trust configuration and policy.

    ``trust``: trust anchors and collateral (Intel's root and no collateral by default, so DCAP
    evidence needs collateral from a file or from the certificate). ``use_endorsements``: accept
    collateral from the peer's endorsements extension (it must still chain to the anchors).
    ``issuer_cas``: CAs whose endorsed (CA-signed) RA-TLS certificates are accepted; without
    them only certificates signed by their own key are. Thread-safe; one instance serves many connections and shares its cache among them.
    """

    def __init__(self, policy: RatlsPolicy, trust: TrustConfig | None = None, *,
                 use_endorsements: bool = True, clock: Clock = _utcnow,
                 cache_size: int = 256, issuer_cas: tuple[IssuerCa, ...] = ()) -> None:
        if not isinstance(policy, RatlsPolicy):
            raise TypeError("policy must be a RatlsPolicy")
        self.policy = policy
        self.trust = trust if trust is not None else TrustConfig()
        self.use_endorsements = use_endorsements
        if not all(isinstance(ca, IssuerCa) for ca in issuer_cas):
            raise TypeError("issuer_cas must be IssuerCa values")
        self.issuer_cas = tuple(issuer_cas)
        self.clock = clock
        self._cache: Memo[tuple[bytes, tuple[Collateral, ...]], _Cached] = Memo("ratls-verdicts",
                                                                              cache_size)

    def verify(self, certificate: bytes, *, now: dt.datetime | None = None) -> RatlsVerdict:
        """Verify a peer certificate (DER or PEM) at ``now`` (the clock by default)."""
        when = now if now is not None else self.clock()
        seconds = unix_seconds(when)
        documents = self.trust.collateral_documents()
        key = (bytes(certificate), documents)
        cached = self._cache.get(key)
        if cached is not None and cached.verified_at <= seconds <= cached.verdict.valid_until:
            verdict = cached.verdict
        else:
            verdict = self._verify_uncached(parse_ratls_certificate(certificate, self.issuer_cas),
                                            documents, when, seconds)
            self._cache.put(key, _Cached(verdict, seconds))
        self.policy.check(status=verdict.status, claims=verdict.claims, nonce=verdict.nonce)
        return verdict

    def _verify_uncached(self, cert: RatlsCertificate, documents: tuple[Collateral, ...],
                         when: dt.datetime, seconds: int) -> RatlsVerdict:
        view = cert.view
        if not view.not_before <= seconds <= view.not_after:
            raise CertificateNotValidNow("the RA-TLS certificate is not valid at this time "
                                         "(expired or not yet valid)")
        ca = cert.issuer_ca
        if ca is not None and not ca.view.not_before <= seconds <= ca.view.not_after:
            raise CertificateNotValidNow(f"the issuer CA {ca.name!r} of the RA-TLS certificate is "
                                         "not valid at this time (expired or not yet valid)")
        evidence = cert.primary
        if evidence.claims is not None:
            evidence.claims.check_public_key(cert.spki_der)
        expected = evidence.expected_report_data(cert.spki_der)
        nonce = evidence.claims.nonce if evidence.claims is not None else None
        custom = dict(evidence.claims.custom) if evidence.claims is not None else {}
        common: dict[str, Any] = dict(certificate_sha256=cert.sha256, evidence_type=evidence.evidence_type,
                      source=evidence.source, nonce=nonce, custom_claims=custom)
        if evidence.tag in (None, TAG_INTEL_TEE_QUOTE):
            return self._verify_quote(cert, evidence.data, expected, documents, when, common)
        if evidence.tag == TAG_SEV_SNP:
            verdict = verify_evidence(
                SNP.name, {"attestation_report": base64.b64encode(evidence.data).decode()},
                report_data=expected, trust=self.trust, now=when)
            # SNP has no collateral window to bound a cached verdict: it is not reused.
            return RatlsVerdict(status=verdict.status, advisory_ids=verdict.advisory_ids,
                                claims=verdict.claims, valid_until=seconds, **common)
        raise UnsupportedEvidence(f"{evidence.evidence_type} evidence cannot be verified remotely "
                                  "by this verifier")

    def _verify_quote(self, cert: RatlsCertificate, raw: bytes, expected: bytes,
                      documents: tuple[Collateral, ...], when: dt.datetime,
                      common: dict[str, Any]) -> RatlsVerdict:
        try:
            quote = parse_quote(raw)
        except FormatError as exc:
            raise MalformedQuote(f"the certificate's quote is malformed: {exc}") from exc
        if not report_data_matches(quote.report.report_data, expected):
            raise PublicKeyNotBound("the quote's report data does not bind the certificate's "
                                    "public key (wrong key or replayed evidence)")
        candidates = documents
        endorsed: Collateral | None = None
        if self.use_endorsements and cert.endorsements is not None:
            try:
                endorsed = parse_endorsements(cert.endorsements)
            except FormatError as exc:
                raise RatlsCertificateError(f"malformed endorsements extension: {exc}") from exc
            candidates = documents + (endorsed,)
        collateral = select_collateral(quote, candidates)
        verified = verify_quote(quote, collateral, now=when, trust_anchors=self.trust.sgx_root_cas)
        chains: list[str | bytes] = [collateral.pck_crl_issuer_chain,
                                     collateral.tcb_info_issuer_chain,
                                     collateral.qe_identity_issuer_chain]
        try:
            chains.append(quote.pck_chain_pem)
        except FormatError:
            pass
        if collateral.pck_certificate_chain:
            chains.append(collateral.pck_certificate_chain)
        bounds = [verified.collateral_expires, cert.view.not_after]
        if cert.issuer_ca is not None:
            bounds.append(cert.issuer_ca.view.not_after)
        chain_bound = _not_after_of(chains)
        if chain_bound is not None:
            bounds.append(chain_bound)
        claims = dcap_claims(verified)
        claims["tee"] = verified.tee
        claims["collateral_from"] = "certificate" if collateral is endorsed else "configuration"
        try:
            simulated = quote_is_simulated(quote.pck_chain_pem)
        except FormatError:
            simulated = False
        return RatlsVerdict(status=verified.status, advisory_ids=verified.advisory_ids,
                            claims=claims, valid_until=min(bounds), simulated=simulated, **common)
