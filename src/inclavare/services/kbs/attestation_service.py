"""Built-in attestation service: evidence -> verified claims -> appraisal policy -> EAR token.

Evidence is verified per TEE (the test-only sample TEE here, hardware TEEs through the verifier
table, ``inclavare.verify.table``), bound to the runtime data (nonce + TEE key) through the report
data, annotated like Trustee's (``ear.veraison.annotated-evidence``), appraised by the Rego
attestation policy with the reference values in the store, and signed as an ES256 EAR JWT.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from inclavare.crypto.b64 import b64url_decode
from inclavare.crypto.jwk import jwk_from_public_key
from inclavare.errors import FormatError, InclavareError, KbsError, VerificationError
from inclavare.formats.strict_json import loads_strict
from inclavare.policy import ear
from inclavare.policy.reference_values import active_values, check_name, parse_message
from inclavare.policy.rego_policy import PolicyCache, PolicyError, RegoPolicy
from inclavare.policy.rego_probe import probe_policy
from inclavare.services.kbs.protocol import (
    InitData,
    device_runtime_data,
    expected_report_data,
    runtime_data_digest,
)
from inclavare.services.kbs.sample_tee import verify_sample_evidence
from inclavare.services.kbs.store import KbsStore
from inclavare.tee.registry import SAMPLE, known_tees, tee_named

log = logging.getLogger("inclavare.kbs")
DEFAULT_POLICY_ID = "default_cpu"
MAX_ADDITIONAL_EVIDENCE = 4  # device attesters per attest (CoCo: a TPM, a GPU or two)
_INIT_DATA_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}

# (tee, evidence, expected report data, now) -> (claims, simulated)
HardwareVerifier = Callable[[str, Any, bytes, datetime], tuple[dict[str, Any], bool]]


def default_attestation_policy() -> str:
    return resources.files("inclavare.policy").joinpath("attestation_default.rego").read_text()


@dataclass(frozen=True)
class AttestationResult:
    token: str
    claims: dict[str, Any]


class BuiltinAttestationService:
    def __init__(
        self,
        store: KbsStore,
        signing_key: ec.EllipticCurvePrivateKey,
        *,
        allow_sample: bool,
        token_lifetime_s: int,
        hardware_verifier: HardwareVerifier | None,
        policies: PolicyCache,
        hardware_tees: frozenset[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.signing_key = signing_key
        self._signing_jwk = jwk_from_public_key(signing_key.public_key())
        self.allow_sample = allow_sample
        self.token_lifetime_s = token_lifetime_s
        self.hardware_verifier = hardware_verifier
        self.hardware_tees = hardware_tees if hardware_tees is not None else frozenset(
            name for name, tee in known_tees().items() if tee.hardware)
        self.policies = policies
        self.clock = clock
        self._default_policy = default_attestation_policy()
        self._rv_cache: tuple[int, RegoPolicy] | None = None
        self._rv_lock = threading.Lock()

    def supports(self, tee: str) -> str | None:
        """None when ``tee`` can be attested here, else the reason it cannot."""
        if tee == SAMPLE.name:
            return None if self.allow_sample else (
                "the sample TEE is disabled (set insecure_allow_sample_tee = true for tests only)"
            )
        if tee in known_tees():
            if self.hardware_verifier is None:
                return f"no verifier for {tee} evidence is available in this build"
            if tee not in self.hardware_tees:
                return (f"nothing is configured to verify {tee} evidence (see [attestation] "
                        "sgx_collateral, amd_ask_ark, tpm_ek_ca, insecure_sim_trust_anchor, "
                        "insecure_sim_amd_ask_ark)")
            return None
        return f"TEE {tee!r} is not supported by this attestation service"

    # --- evidence ---------------------------------------------------------------------------
    def verify_and_appraise(
        self, tee: str, evidence: Any, runtime_data: Mapping[str, Any], init_data: InitData | None,
        additional_evidence: str = "",
    ) -> AttestationResult:
        """Verify the primary evidence (submodule ``cpu0``) and each additional evidence (Trustee's
        ``additional_evidence``: ``cpu1``, ``cpu2``... in TEE-name order), appraise each, sign one
        EAR token."""
        reason = self.supports(tee)
        if reason is not None:
            raise VerificationError(reason)
        extra = _parse_additional(additional_evidence)
        annotated = self._annotated(tee, evidence, runtime_data)
        if init_data is not None:
            annotated["init_data"], annotated["init_data_claims"] = _init_data(init_data)
            init_field = tee_named(tee).init_data_field
            if init_field is not None:
                _check_init_data_binding(tee, init_field, annotated[tee], annotated["init_data"])
        submods = {"cpu0": (self._appraise(annotated), annotated)}
        # Additional attesters bind H(JCS{nonce, tee-pubkey}), without the additional evidence itself.
        bound = device_runtime_data(runtime_data)
        for index, name in enumerate(sorted(extra), start=1):
            reason = self.supports(name)
            if reason is not None:
                raise VerificationError(f"additional evidence: {reason}")
            device = self._annotated(name, extra[name], bound)
            submods[f"cpu{index}"] = (self._appraise(device), device)
        now = int(self.clock())
        claims = ear.ear_claims(submods, now=now, lifetime_s=self.token_lifetime_s)
        return AttestationResult(ear.sign_ear(claims, self.signing_key, self._signing_jwk), claims)

    def _annotated(self, tee: str, evidence: Any, runtime_data: Mapping[str, Any]) -> dict[str, Any]:
        """One TEE's evidence verified against the report data ``runtime_data`` hashes to, annotated
        as Trustee does."""
        digest = runtime_data_digest(runtime_data, tee)
        report_data = expected_report_data(digest, tee)
        if tee == SAMPLE.name:
            tee_claims, simulated = verify_sample_evidence(evidence, report_data), False
        else:
            assert self.hardware_verifier is not None
            at = datetime.fromtimestamp(self.clock(), timezone.utc)
            tee_claims, simulated = self.hardware_verifier(tee, evidence, report_data, at)
        annotated: dict[str, Any] = {
            tee: tee_claims,
            "report_data": report_data.hex(),
            "runtime_data_claims": dict(runtime_data),
        }
        if simulated:
            annotated["simulated"] = True
        return annotated

    def _appraise(self, annotated: Mapping[str, Any]) -> ear.Appraisal:
        generation = self.store.generation()
        with self._rv_lock:
            cached = self._rv_cache
        if cached is None or cached[0] != generation:
            now = datetime.fromtimestamp(self.clock(), timezone.utc)
            rvs = active_values(self.store.reference_values(), now=now)
            source = self.store.get_policy(DEFAULT_POLICY_ID) or self._default_policy
            cached = (generation, self.policies.get(source, "", {"reference": rvs}))
            with self._rv_lock:
                self._rv_cache = cached
        return ear.appraisal_from_policy_output(cached[1].evaluate(annotated), DEFAULT_POLICY_ID)

    # --- admin ------------------------------------------------------------------------------
    def set_policy(self, body: bytes) -> str:
        """Admin: ``{"type": "rego", "policy_id": ..., "policy": <base64url Rego>}``."""
        try:
            doc = loads_strict(body, "set policy request")
        except FormatError as exc:
            raise _set_policy_error(f"parse set policy request: {exc}") from exc
        if not isinstance(doc, dict):
            raise _set_policy_error("parse set policy request: expected a JSON object")
        policy_type = doc.get("type", "rego")
        policy_id = doc.get("policy_id", DEFAULT_POLICY_ID)
        if policy_type != "rego":
            raise _set_policy_error(f"unsupported policy type {policy_type!r} (only 'rego')")
        if not isinstance(policy_id, str):
            raise _set_policy_error("'policy_id' must be a string")
        try:
            check_name(policy_id)
            text = b64url_decode(doc.get("policy"), "policy").decode("utf-8")
        except (FormatError, UnicodeDecodeError) as exc:
            raise _set_policy_error(f"'policy' must be base64url of UTF-8 Rego: {exc}") from exc
        try:
            probe_policy(text, "", {"reference": {}}, {})
            probe = self.policies.get(text, "", {"reference": {}})
            ear.appraisal_from_policy_output(probe.evaluate({}), policy_id)
        except PolicyError as exc:
            raise _set_policy_error(str(exc)) from exc
        self.store.put_policy(policy_id, text)
        log.info("attestation policy %s set (%d bytes)", policy_id, len(text))
        return policy_id

    def register_reference_values(self, body: bytes) -> list[str]:
        try:
            values = parse_message(body, now=datetime.fromtimestamp(self.clock(), timezone.utc))
        except FormatError as exc:
            raise KbsError(f"RVPS configuration failed: Failed to register reference value: {exc}",
                           kind="RvpsError") from exc
        self.store.put_reference_values(values)
        return [rv.name for rv in values]

    def reference_values(self) -> dict[str, Any]:
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        return {rv.name: rv.record() for rv in self.store.reference_values() if rv.expiration > now}


def _parse_additional(text: str) -> dict[str, Any]:
    """Trustee's ``additional_evidence``: ``""`` or a JSON object ``{tee name: evidence}``."""
    if not text:
        return {}
    doc = loads_strict(text.encode(), "additional_evidence")
    if not isinstance(doc, dict) or not doc:
        raise FormatError("additional_evidence must be a JSON object {tee: evidence}")
    if len(doc) > MAX_ADDITIONAL_EVIDENCE:
        raise FormatError(f"additional_evidence carries more than {MAX_ADDITIONAL_EVIDENCE} TEEs")
    return doc


def _set_policy_error(detail: str) -> KbsError:
    return KbsError(f"Attestation error: Set Attestation Policy failed: {detail}", kind="AttestationError")


def _init_data(init: InitData) -> tuple[str, dict[str, Any]]:
    """Digest (hex) and claims of an initdata TOML document (kbs/docs/initdata.md)."""
    if init.format != "toml":
        raise FormatError(f"init-data format {init.format!r} is not supported (only 'toml')")
    try:
        doc = tomllib.loads(init.body)
    except tomllib.TOMLDecodeError as exc:
        raise FormatError(f"init-data is not valid TOML: {exc}") from exc
    algorithm = doc.get("algorithm")
    if algorithm not in _INIT_DATA_HASHES:
        raise FormatError("init-data 'algorithm' must be sha256, sha384 or sha512")
    data = doc.get("data", {})
    if not isinstance(data, dict):
        raise FormatError("init-data 'data' must be a table")
    claims: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(value, str):
            raise FormatError("init-data 'data' values must be strings")
        if key.endswith(".toml"):
            try:
                claims[key] = tomllib.loads(value)
            except tomllib.TOMLDecodeError:
                claims[key] = value
        else:
            claims[key] = value
    return _INIT_DATA_HASHES[algorithm](init.body.encode()).hexdigest(), claims


def _check_init_data_binding(tee: str, field: str, claims: Mapping[str, Any], digest_hex: str) -> None:
    """The TEE's init-data field must hold the digest (as Trustee: padded/truncated to the field)."""
    value = claims.get(field)
    if not isinstance(value, str):
        raise VerificationError(f"{tee} evidence carries no {field} to bind the init-data")
    size = len(value) // 2
    expected = bytes.fromhex(digest_hex)[:size].ljust(size, b"\0").hex()
    if not hmac.compare_digest(value.lower(), expected):
        raise VerificationError(f"init-data digest does not match the {tee} {field}")


def evidence_error(exc: InclavareError) -> KbsError:
    return KbsError(
        f"Attestation error: RCAR handshake Attest failed: verify TEE evidence failed: {exc}",
        kind="AttestationError",
    )
