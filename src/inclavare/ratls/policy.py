"""What a verified peer must also be: expected measurements, product, SVN, TCB statuses, nonce.

Evidence that verifies proves *some* genuine enclave holds the key; the policy says *which*.
Defaults fail closed: a policy must pin at least one identity (MRENCLAVE, MRSIGNER or MRTD)
unless ``insecure_any_enclave`` is set, only ``UpToDate`` TCBs pass, and debug enclaves never
pass (the quote verifier refuses them). A policy file is JSON with the same field names
(measurements as hex strings or lists of them); unknown keys are errors.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from inclavare.errors import ConfigError, PolicyDenied, VerificationError

DEFAULT_TCB_STATUSES = ("UpToDate",)
KNOWN_TCB_STATUSES = ("UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
                      "ConfigurationAndSWHardeningNeeded", "OutOfDate",
                      "OutOfDateConfigurationNeeded", "Verified")


class PolicyMismatch(VerificationError, PolicyDenied):
    """Verified evidence that the policy does not accept."""


def _hex_values(value: object, name: str, size: int) -> tuple[bytes, ...]:
    items = [value] if isinstance(value, (str, bytes)) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"policy {name} must be a hex string or a list of them")
    out: list[bytes] = []
    for item in items:
        if isinstance(item, str):
            try:
                item = bytes.fromhex(item)
            except ValueError:
                raise ConfigError(f"policy {name}: {item!r} is not hex") from None
        if not isinstance(item, bytes) or len(item) != size:
            raise ConfigError(f"policy {name} values must be {size} bytes ({2 * size} hex digits)")
        out.append(item)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class RatlsPolicy:
    """Appraisal of verified claims. Empty tuples mean "not constrained"."""

    mr_enclave: tuple[bytes, ...] = ()
    mr_signer: tuple[bytes, ...] = ()
    mr_td: tuple[bytes, ...] = ()
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    allowed_tcb_statuses: tuple[str, ...] = DEFAULT_TCB_STATUSES
    nonce: bytes | None = None
    insecure_any_enclave: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mr_enclave", _hex_values(self.mr_enclave, "mr_enclave", 32))
        object.__setattr__(self, "mr_signer", _hex_values(self.mr_signer, "mr_signer", 32))
        object.__setattr__(self, "mr_td", _hex_values(self.mr_td, "mr_td", 48))
        for name in ("isv_prod_id", "min_isv_svn"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not 0 <= value <= 0xFFFF):
                raise ConfigError(f"policy {name} must be an integer 0..65535")
        statuses = self.allowed_tcb_statuses
        if isinstance(statuses, str) or not isinstance(statuses, (list, tuple)) or not statuses:
            raise ConfigError("policy allowed_tcb_statuses must be a non-empty list")
        unknown = [s for s in statuses if s not in KNOWN_TCB_STATUSES]
        if unknown:
            raise ConfigError(f"policy: unknown TCB status {unknown[0]!r} "
                              f"(known: {', '.join(KNOWN_TCB_STATUSES)})")
        object.__setattr__(self, "allowed_tcb_statuses", tuple(statuses))
        if not (self.mr_enclave or self.mr_signer or self.mr_td or self.insecure_any_enclave):
            raise ConfigError("the policy pins no identity: give an expected mr_enclave, "
                              "mr_signer or mr_td (or insecure_any_enclave to accept any "
                              "genuine enclave)")

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any]) -> RatlsPolicy:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(document) - known)
        if unknown:
            raise ConfigError(f"unknown policy key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        values = dict(document)
        if isinstance(values.get("nonce"), str):
            try:
                values["nonce"] = bytes.fromhex(values["nonce"])
            except ValueError:
                raise ConfigError("policy nonce must be hex") from None
        if "allowed_tcb_statuses" in values and isinstance(values["allowed_tcb_statuses"], list):
            values["allowed_tcb_statuses"] = tuple(values["allowed_tcb_statuses"])
        return cls(**values)

    @classmethod
    def from_json_file(cls, path: str) -> RatlsPolicy:
        return cls.from_mapping(read_policy_document(path))

    def check(self, *, status: str, claims: Mapping[str, Any],
              nonce: bytes | None) -> None:
        """PolicyMismatch unless the verified ``claims`` (hex strings for bytes, as verifiers
        report them) satisfy the policy."""
        if status not in self.allowed_tcb_statuses:
            raise PolicyMismatch(f"TCB status {status} is not allowed (allowed: "
                                 f"{', '.join(self.allowed_tcb_statuses)})")
        _expect_one_of("mr_enclave", self.mr_enclave, claims)
        _expect_one_of("mr_signer", self.mr_signer, claims)
        _expect_one_of("mr_td", self.mr_td, claims)
        if self.isv_prod_id is not None and claims.get("isv_prod_id") != self.isv_prod_id:
            raise PolicyMismatch(f"isv_prod_id {claims.get('isv_prod_id')} is not the expected "
                                 f"{self.isv_prod_id}")
        if self.min_isv_svn is not None:
            svn = claims.get("isv_svn")
            if not isinstance(svn, int) or svn < self.min_isv_svn:
                raise PolicyMismatch(f"isv_svn {svn} is below the minimum {self.min_isv_svn}")
        if self.nonce is not None and (nonce is None or not hmac.compare_digest(nonce, self.nonce)):
            raise PolicyMismatch("the evidence does not carry the expected nonce")


def read_policy_document(path: str) -> dict[str, Any]:
    """The JSON object of a policy file (validated by :meth:`RatlsPolicy.from_mapping`)."""
    try:
        with open(path, "rb") as handle:
            document = json.loads(handle.read())
    except OSError as exc:
        raise ConfigError(f"cannot read policy {path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"policy {path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"policy {path} must be a JSON object")
    return document


def _expect_one_of(name: str, expected: Iterable[bytes], claims: Mapping[str, Any]) -> None:
    wanted = tuple(expected)
    if not wanted:
        return
    actual = claims.get(name)
    if not isinstance(actual, str):
        raise PolicyMismatch(f"the evidence has no {name} (the policy expects one)")
    if not any(hmac.compare_digest(actual, w.hex()) for w in wanted):
        raise PolicyMismatch(f"{name} {actual} is not an expected value")
