"""Issuer CAs: who, besides a certificate's own key, may sign an RA-TLS certificate.

RA-TLS certificates are self-signed (the interoperable RA-TLS spec, Gramine, the Intel SGX
SDK, Occlum, librats, rats-tls): the evidence binds the key, and the self-signature binds
every other field (names, SAN, validity) to the holder of that key. So the signature is always
checked with the certificate's own key, whatever its issuer field says. A certificate signed
by some other key is *endorsed*; it is accepted only when its issuer is a CA the verifier was
configured with (matched byte-for-byte by name, as webpki matches names, and verified with
that CA's key, in :func:`inclavare.ratls.certificate.parse_ratls_certificate`). Otherwise
anyone could copy a genuine key and evidence into a certificate of their own making — new
names, a ten-year validity — and sign it with any key.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from inclavare.errors import ConfigError, FormatError
from inclavare.formats.pem import parse_pem_blocks
from inclavare.formats.x509_view import CertificateView


@dataclass(frozen=True, slots=True)
class IssuerCa:
    """A CA allowed to issue (endorse) RA-TLS certificates. ``name`` is its subject as text."""

    view: CertificateView
    name: str

    @classmethod
    def from_der(cls, der: bytes, source: str = "issuer CA") -> IssuerCa:
        """ConfigError unless ``der`` is a well-formed X.509 v3 CA certificate (basicConstraints
        cA true; keyCertSign when keyUsage is present)."""
        try:
            view = CertificateView.parse(der)
            cert = x509.load_der_x509_certificate(der)
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            usage = next((e.value for e in cert.extensions if isinstance(e.value, x509.KeyUsage)),
                         None)
            name = cert.subject.rfc4514_string()
        except x509.ExtensionNotFound:
            raise ConfigError(f"{source} is not a CA certificate (no basicConstraints)") from None
        except (FormatError, ValueError, x509.DuplicateExtension,
                x509.UnsupportedGeneralNameType) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"{source} is not a usable certificate: {reason}") from None
        if not constraints.ca:
            raise ConfigError(f"{source} is not a CA certificate (basicConstraints cA is false)")
        if usage is not None and not usage.key_cert_sign:
            raise ConfigError(f"{source} may not sign certificates (keyUsage lacks keyCertSign)")
        return cls(view, name)

    @classmethod
    def load_pem(cls, data: bytes, source: str) -> tuple[IssuerCa, ...]:
        """Every CERTIFICATE block of a PEM file (ConfigError when there is none)."""
        try:
            blocks = [b for b in parse_pem_blocks(data) if b.label == "CERTIFICATE"]
        except FormatError as exc:
            raise ConfigError(f"{source} is not PEM: {exc}") from None
        if not blocks:
            raise ConfigError(f"{source} holds no CERTIFICATE block")
        return tuple(cls.from_der(b.contents, source) for b in blocks)

