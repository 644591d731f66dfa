"""Why an attestation was appraised as it was, and why a resource was (not) released.

``inclavare explain`` replays the key broker's decision from what it decided on: either an EAR
token it issued (the annotated evidence and trust vector it signed), or evidence verified here
and appraised with the same attestation policy and reference values. Then the resource policy
is evaluated for one resource. The result is a structured trace: every trust claim with its tier
and meaning, every reference value with expected and actual, the resource verdict with the
reasons the default policy denies, and the fixes. Nothing is decided differently from the
broker: the same Rego, the same EAR construction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from collections.abc import Mapping
from importlib import resources
from typing import Any

from inclavare.policy import ear
from inclavare.policy.rego_policy import RegoPolicy
from inclavare.tee.registry import SAMPLE, SGX, SNP, TDX, tee_of_evidence

# What the default attestation policy's values mean (attestation_default.rego).
MEANINGS = {
    ("executables", 3): "the measured code matches the reference values",
    ("executables", 33): "no reference value matches the measured code (or none is set)",
    ("hardware", 2): "a genuine TEE with an up-to-date TCB",
    ("hardware", 32): "a genuine TEE whose TCB needs software hardening or configuration",
    ("hardware", 97): "the TCB status is not acceptable (out of date, revoked) or the TEE is unknown",
    ("configuration", 2): "not in debug mode",
    ("configuration", 36): "the configuration is not affirmed (debug mode, or no rule matched)",
    ("configuration", 96): "an SNP guest launched with debug allowed: the host can read its memory",
}
# The reference values the default attestation policy needs before it affirms executables.
DEFAULT_POLICY_NEEDS = {SGX.name: ("mr_enclave", "mr_signer"), TDX.name: ("mr_td",),
                        SNP.name: ("snp_launch_measurement",)}
SAMPLE_REASON = "the evidence is from Trustee's sample TEE, which has no hardware and no security"
SIMULATED_REASON = ("the evidence is SIMULATED (only the simulated authority's root vouched for it): "
                    "the default resource policy releases nothing to it")


@dataclass(frozen=True)
class Appraised:
    """The first appraisal of EAR claims, as the broker signed it."""

    status: str
    vector: Mapping[str, int]
    evidence: Mapping[str, Any]  # the annotated evidence
    tee: str
    tee_claims: Mapping[str, Any]  # input.<tee>, as policies see it


def appraised_evidence(claims: Any) -> Appraised | None:
    """The first submodule of EAR ``claims``, or None when there is none."""
    submods = claims.get("submods") if isinstance(claims, Mapping) else None
    submod = next(iter(submods.values()), None) if isinstance(submods, Mapping) else None
    if not isinstance(submod, Mapping):
        return None
    evidence = submod.get("ear.veraison.annotated-evidence") or {}
    tee = tee_of_evidence(evidence)
    raw = evidence.get(tee)
    return Appraised(str(submod.get("ear.status", "-")), submod.get("ear.trustworthiness-vector") or {},
                     evidence, tee, raw if isinstance(raw, Mapping) else {})


def default_policy(name: str) -> str:
    return resources.files("inclavare.policy").joinpath(name).read_text()


def appraise(annotated: Mapping[str, Any], attestation_policy: str, reference_values: Mapping[str, Any],
             *, lifetime_s: int = 300) -> dict[str, Any]:
    """The EAR claims the broker would sign for ``annotated`` evidence."""
    output = RegoPolicy(attestation_policy, "", {"reference": dict(reference_values)}).evaluate(annotated)
    appraisal = ear.appraisal_from_policy_output(output, "default")
    return ear.ear_claims({"cpu0": (appraisal, annotated)}, now=int(time.time()), lifetime_s=lifetime_s)


def explain(claims: Mapping[str, Any], *, resource_policy: str, resource: list[str],
            reference_values: Mapping[str, Any] | None = None, default_resource_policy: bool = True) -> dict[str, Any]:
    """The trace for EAR ``claims`` (from a token, or from :func:`appraise`)."""
    appraised = appraised_evidence(claims)
    if appraised is None:
        return {"error": "the token has no appraisal (no submods)"}
    evidence, vector, tee, tee_claims = (appraised.evidence, appraised.vector, appraised.tee,
                                         appraised.tee_claims)
    trace: dict[str, Any] = {
        "tee": tee, "simulated": bool(evidence.get("simulated")), "tcb_status": tee_claims.get("tcb_status", "-"),
        "appraisal": appraised.status,
        "trust_vector": {name: {"value": value, "tier": ear.tier(value),
                                "meaning": MEANINGS.get((name, value), ear.tier(value))}
                         for name, value in vector.items() if value},
    }
    fixes: list[str] = []
    if reference_values is not None:
        wanted = {**{name: [] for name in DEFAULT_POLICY_NEEDS.get(tee, ())}, **reference_values}
        trace["reference_values"] = _reference_values(tee_claims, wanted)
        for rv in trace["reference_values"]:
            if not rv["match"] and rv["actual"] is not None:
                fixes.append(f"if this enclave is the one you trust: inclavare kbs admin reference-value set "
                             f"{rv['name']} {rv['actual']}")
    data = {"plugin": "resource", "resource-path": resource, "query": {}}
    allowed = RegoPolicy(resource_policy, "allow", data).evaluate(claims) is True
    reasons: list[str] = []
    if not allowed and default_resource_policy:
        reasons = default_denial_reasons(claims)
        if evidence.get("simulated"):
            fixes.append("use a TEE, or (test clusters only) a resource policy that allows simulated evidence")
    elif not allowed:
        reasons.append("the configured resource policy does not allow it (its rules decide; input: the token's claims)")
    trace["resource"] = {"path": "/".join(resource), "allowed": allowed, "reasons": reasons}
    if trace["tcb_status"] not in ("-", "UpToDate", "Verified"):
        fixes.append(f"the platform's TCB is {trace['tcb_status']}: update its firmware/microcode and collateral")
    trace["fixes"] = fixes
    return trace


def default_denial_reasons(claims: Mapping[str, Any]) -> list[str]:
    """Which conditions of the default resource policy (resource_default.rego) EAR ``claims`` fail."""
    appraised = appraised_evidence(claims)
    if appraised is None:
        return ["the token has no appraisal"]
    reasons = []
    if appraised.evidence.get(SAMPLE.name):
        reasons.append(SAMPLE_REASON)
    if appraised.evidence.get("simulated"):
        reasons.append(SIMULATED_REASON)
    if appraised.status == "contraindicated":
        bad = [n for n, v in appraised.vector.items() if ear.tier(v) == "contraindicated"]
        reasons.append(f"the appraisal is contraindicated ({', '.join(bad)})")
    return reasons


def _reference_values(claims: Mapping[str, Any], reference_values: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, expected in reference_values.items():
        values = expected if isinstance(expected, list) else [expected]
        key = next((k for k in (name, name.removeprefix("snp_"), name.removeprefix("snp_launch_")) if k in claims), None)
        actual = claims.get(key) if key is not None else None
        match = actual is not None and str(actual).lower() in {str(v).lower() for v in values}
        rows.append({"name": name, "expected": values, "actual": actual, "match": match})
    return rows
