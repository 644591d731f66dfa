"""The one verifier table: TEE name -> the verifier of its evidence.

The key broker (``services/kbs/hardware_verifier.py``), RA-TLS (``ratls/verifier.py``) and the
CLI (``verify``, ``explain``) all verify through :func:`inclavare.verify.evidence.verify_evidence`,
which looks the TEE up here. A verifier takes Trustee's evidence JSON for its TEE, the expected
report data (None: not checked), the trust configuration and the time, and returns a
:class:`~inclavare.verify.evidence.Verdict` or raises a ``VerificationError``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from inclavare.tee.registry import SGX, SNP, TDX, TPM, Tee, tee_named
from inclavare.verify.dcap_verifier import dcap_ready, verify_dcap
from inclavare.verify.evidence import TrustConfig, UnsupportedTee, Verdict
from inclavare.verify.snp_verifier import snp_ready, verify_snp
from inclavare.verify.tpm import tpm_ready, verify_tpm

VerifyFn = Callable[[Tee, Mapping[str, Any], bytes | None, TrustConfig, dt.datetime], Verdict]


@dataclass(frozen=True, slots=True)
class VerifierEntry:
    """``verify`` checks evidence; ``ready`` says whether a trust configuration can verify this
    TEE's evidence at all (the key broker refuses TEEs nothing is configured for, up front)."""

    verify: VerifyFn
    ready: Callable[[TrustConfig], bool]


_TABLE: dict[str, VerifierEntry] = {}


def register_verifier(tee: Tee, entry: VerifierEntry) -> None:
    """Verify ``tee``'s evidence with ``entry`` (``tee`` must be in the TEE registry)."""
    tee_named(tee.name)
    _TABLE[tee.name] = entry


def unregister_verifier(tee: Tee) -> None:
    _TABLE.pop(tee.name, None)


def verifier_for(name: str) -> tuple[Tee, VerifierEntry]:
    """The TEE called ``name`` and its verifier; UnsupportedTee when there is none."""
    entry = _TABLE.get(name)
    if entry is None:
        raise UnsupportedTee(f"unsupported TEE {name!r} (supported: {', '.join(_TABLE)})")
    return tee_named(name), entry


def ready_tees(trust: TrustConfig) -> frozenset[str]:
    """The TEEs whose evidence ``trust`` can verify."""
    return frozenset(name for name, entry in _TABLE.items() if entry.ready(trust))


_DCAP = VerifierEntry(verify_dcap, dcap_ready)
for _tee, _entry in ((SGX, _DCAP), (TDX, _DCAP), (SNP, VerifierEntry(verify_snp, snp_ready)),
                     (TPM, VerifierEntry(verify_tpm, tpm_ready))):
    register_verifier(_tee, _entry)
