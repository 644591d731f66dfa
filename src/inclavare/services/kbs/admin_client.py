"""A client of the key broker's admin API (what ``inclavare kbs admin`` drives).

Each call mints a short-lived admin token bound to this broker (``aud``) and signed with the
admin key, speaks Trustee's admin routes, and maps every failure to one ``KbsError`` line: the
CLI only parses its arguments and prints.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from inclavare.crypto.b64 import b64url_decode, b64url_encode
from inclavare.errors import ConfigError, KbsError
from inclavare.services.kbs.admin_auth import make_admin_token
from inclavare.services.kbs.resource_path import parse_resource_path


def load_admin_signing_key(path: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from inclavare.crypto.key_files import load_private_key

    key = load_private_key(path, "admin key")
    if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)):
        raise ConfigError(f"admin key {path} must be Ed25519 or P-256")
    return key


class KbsAdmin:
    def __init__(self, url: str, key: Any, *, audience: str | None = None, issuer: str = "inclavare-admin",
                 timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.audience = audience if audience is not None else self.url  # what the broker's admin_audience names
        self.issuer = issuer
        self.timeout = timeout

    # -- resources ----------------------------------------------------------------------------
    def set_resource(self, path: str, data: bytes) -> None:
        self._call("POST", f"/resource/{parse_resource_path(path.strip('/'))}", data, "application/octet-stream")

    def delete_resource(self, path: str) -> None:
        self._call("DELETE", f"/resource/{parse_resource_path(path.strip('/'))}", b"", "application/octet-stream")

    # -- policies -----------------------------------------------------------------------------
    def set_resource_policy(self, rego: bytes) -> None:
        self._call("POST", "/resource-policy", json.dumps({"policy": b64url_encode(rego)}).encode())

    def set_attestation_policy(self, rego: bytes, policy_id: str) -> None:
        doc = {"type": "rego", "policy_id": policy_id, "policy": b64url_encode(rego)}
        self._call("POST", "/attestation-policy", json.dumps(doc).encode())

    def resource_policy(self) -> str:
        text = self._call("GET", "/resource-policy").decode("ascii", "replace").strip()
        try:
            return b64url_decode(text, "policy").decode()
        except UnicodeDecodeError:
            raise KbsError("the KBS returned a policy that is not UTF-8") from None

    # -- reference values -----------------------------------------------------------------------
    def set_reference_value(self, name: str, values: Sequence[Any]) -> None:
        from inclavare.policy.reference_values import build_message

        self._call("POST", "/reference-value", build_message({name: list(values)}))

    def reference_values(self, name: str | None = None) -> Any:
        body = self._call("GET", "/reference-value" + (f"/{name}" if name else ""))
        try:
            return json.loads(body)
        except ValueError:
            raise KbsError("the KBS answered /reference-value with a body that is not JSON") from None

    # -- transport ------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
        import httpx

        token = make_admin_token(self.key, self.audience, self.issuer)
        try:
            resp = httpx.request(method, f"{self.url}/kbs/v0{path}", content=body or None, timeout=self.timeout,
                                 headers={"authorization": f"Bearer {token}", "content-type": content_type})
        except httpx.HTTPError as exc:
            raise KbsError(f"cannot reach KBS at {self.url}: {exc}", kind="Unreachable", status=0) from None
        if resp.status_code != 200:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise KbsError(f"KBS refused {method} {path} ({resp.status_code}): {detail}")
        return resp.content
