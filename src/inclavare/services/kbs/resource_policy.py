"""The KBS resource policy: Rego over the token claims, Trustee's layout.

``input`` = the EAR claims; ``data`` = ``{"plugin", "resource-path": [repo, type, tag],
"query"}``; rule ``data.policy.allow`` must be exactly true (undefined or false = deny).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib import resources
from typing import Any

from inclavare.crypto.b64 import b64url_decode, b64url_encode
from inclavare.errors import FormatError, KbsError
from inclavare.formats.strict_json import loads_strict
from inclavare.policy.rego_policy import PolicyCache, PolicyError
from inclavare.policy.rego_probe import probe_policy
from inclavare.services.kbs.store import KbsStore

log = logging.getLogger("inclavare.kbs")
POLICY_ID = "resource"


def default_resource_policy() -> str:
    return resources.files("inclavare.policy").joinpath("resource_default.rego").read_text()


def _policy_error(detail: str) -> KbsError:
    return KbsError(f"Policy engine error: {detail}", kind="PolicyEngineError")


class ResourcePolicyEngine:
    def __init__(self, store: KbsStore, policies: PolicyCache) -> None:
        self.store = store
        self.policies = policies
        self._default = default_resource_policy()
        self._cached: tuple[int, str] | None = None

    def current(self) -> str:
        generation = self.store.generation()
        cached = self._cached
        if cached is None or cached[0] != generation:
            cached = (generation, self.store.get_policy(POLICY_ID) or self._default)
            self._cached = cached
        return cached[1]

    def is_default(self) -> bool:
        """Whether the built-in policy decides (no policy was set through the admin API)."""
        return self.current() == self._default

    def check(self, claims: Mapping[str, Any], plugin: str, path: list[str],
              query: Mapping[str, str]) -> None:
        data = {"plugin": plugin, "resource-path": path, "query": dict(query)}
        try:
            verdict = self.policies.get(self.current(), "allow", data).evaluate(claims)
        except PolicyError as exc:
            log.warning("resource policy error: %s", exc)
            raise _policy_error(str(exc)) from exc
        if verdict is not True:
            raise KbsError("Access denied by policy", kind="PolicyDeny")

    def set_policy(self, body: bytes) -> None:
        """Admin: ``{"policy": "<base64url Rego>"}``; compiled before it is stored."""
        try:
            doc = loads_strict(body, "SetPolicy Request Json")
        except FormatError as exc:
            raise _policy_error(f"Illegal SetPolicy Request Json: {exc}") from exc
        if not isinstance(doc, dict) or "policy" not in doc:
            raise _policy_error("No `policy` field inside SetPolicy Request Json")
        if not isinstance(doc["policy"], str):
            raise _policy_error("`policy` field is not a string in SetPolicy Request Json")
        try:
            text = b64url_decode(doc["policy"], "policy").decode("utf-8")
        except (FormatError, UnicodeDecodeError) as exc:
            raise _policy_error(f"`policy` must be base64url of UTF-8 Rego: {exc}") from exc
        probe_data = {"plugin": "resource", "resource-path": ["default", "key", "1"], "query": {}}
        try:
            probe_policy(text, "allow", probe_data, {})
            self.policies.get(text, "allow", probe_data).evaluate({})
        except PolicyError as exc:
            raise _policy_error(str(exc)) from exc
        self.store.put_policy(POLICY_ID, text)
        log.info("resource policy set (%d bytes)", len(text))

    def get_policy(self) -> str:
        """base64url of the current policy text (Trustee's GET /resource-policy)."""
        return b64url_encode(self.current().encode())
