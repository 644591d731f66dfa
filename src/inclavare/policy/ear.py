"""EAR attestation results (draft-ietf-rats-ear) as Trustee's attestation service issues them.

The appraisal policy yields the eight trustworthiness claims; the submodule status is the worst
tier among them (veraison/rust-ear); the token is an ES256 JWT whose header carries the signer's
public JWK, with Trustee's claim names so Trustee-style resource policies work unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from inclavare import __version__
from inclavare.crypto import jws
from inclavare.crypto.jwk import jwk_from_public_key
from inclavare.policy.rego_policy import PolicyError

EAT_PROFILE = "tag:github.com,2024:confidential-containers/Trustee"
ISSUER = "CoCo-Attestation-Service"
VERIFIER_ID = {"developer": "https://github.com/inclavare", "build": f"inclavare-kbs {__version__}"}
TRUST_CLAIMS = (
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
)
# Rego rule names cannot contain '-', so policies may spell claims with '_' as well.
_RULE_NAMES = {name: name.replace("-", "_") for name in TRUST_CLAIMS}
_STATUS_RANK = {"none": 0, "affirming": 1, "warning": 2, "contraindicated": 3}


def tier(value: int) -> str:
    """The EAR trust tier of one claim value (rust-ear ``TrustClaim::tier``)."""
    if -1 <= value <= 1:
        return "none"
    if -32 < value < 32:
        return "affirming"
    if -96 < value < 96:
        return "warning"
    return "contraindicated"


@dataclass(frozen=True)
class Appraisal:
    status: str
    vector: dict[str, int]
    policy_id: str


def appraisal_from_policy_output(output: object, policy_id: str) -> Appraisal:
    """Turn the policy package's values into an appraisal; unset claims count 0 (no claim)."""
    if output is None:
        output = {}
    if not isinstance(output, Mapping):
        raise PolicyError("attestation policy must be a package of trust-claim rules")
    source: Mapping[str, Any] = output
    nested = output.get("trust_claims")
    if isinstance(nested, Mapping):
        source = nested
    vector: dict[str, int] = {}
    for name in TRUST_CLAIMS:
        raw = source.get(name, source.get(_RULE_NAMES[name], 0))
        if isinstance(raw, bool) or not isinstance(raw, int) or not -128 <= raw <= 127:
            raise PolicyError(f"attestation policy claim {name!r} must be an integer in [-128, 127]")
        vector[name] = raw
    status = max((tier(v) for v in vector.values()), key=_STATUS_RANK.__getitem__)
    return Appraisal(status, vector, policy_id)


def ear_claims(
    submods: Mapping[str, tuple[Appraisal, Mapping[str, Any]]], *, now: int, lifetime_s: int
) -> dict[str, Any]:
    """The EAR claim set: one submodule per evidence class (``cpu0`` ...)."""
    return {
        "eat_profile": EAT_PROFILE,
        "iat": now,
        "exp": now + lifetime_s,
        "iss": ISSUER,
        "ear.verifier-id": dict(VERIFIER_ID),
        "submods": {
            name: {
                "ear.status": appraisal.status,
                "ear.trustworthiness-vector": dict(appraisal.vector),
                "ear.appraisal-policy-id": appraisal.policy_id,
                "ear.veraison.annotated-evidence": dict(evidence),
            }
            for name, (appraisal, evidence) in submods.items()
        },
    }


def sign_ear(claims: Mapping[str, Any], key: ec.EllipticCurvePrivateKey,
             public_jwk: Mapping[str, str] | None = None) -> str:
    """Sign with ``key``; the header carries its public JWK (pass it in to skip recomputing)."""
    return jws.sign(claims, key, {"jwk": dict(public_jwk or jwk_from_public_key(key.public_key()))})
