"""One error tree for the whole project.

Every failure a user can cause or meet is an ``InclavareError`` subclass, so command-line tools
print one clear line instead of a traceback, and callers can catch by domain. Modules may
subclass these for finer distinctions; they never raise bare ``ValueError``/``IndexError`` for
malformed input.
"""

from __future__ import annotations


class InclavareError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = 1


class ConfigError(InclavareError):
    """Invalid configuration or command-line input."""

    exit_code = 2


class EnclaveConfigError(ConfigError):
    """Invalid ``enclave.*`` annotations or ``ENCLAVE_*`` environment variables."""


class NotSupportedError(InclavareError):
    """A valid request this installation cannot honour (yet)."""


class FormatError(InclavareError):
    """Malformed untrusted bytes (quotes, reports, collateral, certificates, requests)."""


class VerificationError(InclavareError):
    """Evidence did not verify. Verification raises this; it never returns False."""


class CollateralError(VerificationError):
    """Collateral (TCB info, QE identity, CRLs) is invalid, expired or inconsistent."""


class CertificateChainError(VerificationError):
    """A certificate chain does not lead to the trust anchor, or a certificate is revoked/expired."""


class SignatureError(VerificationError):
    """A signature over evidence or collateral does not verify."""


class TcbError(VerificationError):
    """The platform or QE TCB is not acceptable (no matching level, revoked)."""


class ReportDataMismatch(VerificationError):
    """The evidence is not bound to the expected report data (nonce, key)."""


class PolicyDenied(InclavareError):
    """An appraisal or resource policy denied the request."""


class RuntimeFailure(InclavareError):
    """The container runtime (runc, an enclave runtime) failed."""


class PalError(RuntimeFailure):
    """An enclave runtime PAL call failed; ``errno`` carries the negative return."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class AgentError(InclavareError):
    """The node agent refused or failed a request."""


class KbsError(InclavareError):
    """A key broker protocol error; ``kind`` is the Trustee error variant name."""

    def __init__(self, message: str, kind: str = "InternalError", status: int = 401) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class StoreError(InclavareError):
    """Durable storage failed."""
