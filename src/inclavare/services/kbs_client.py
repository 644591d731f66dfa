"""Client of the KBS protocol 0.4.0 for workloads (used by the node agent).

``KbsClient(url, attester)`` runs auth -> attest with an ephemeral EC P-256 TEE key whose JWK is
bound into the evidence through report_data = SHA-384(JCS(runtime data)), then fetches
``kbs:///repo/type/tag`` resources and decrypts the JWE. The attester callback receives the
report data (48 bytes; hardware attesters zero-pad to 64) and returns ``(tee, evidence)``.
Failures raise ``KbsError`` carrying the server's error type and detail.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from inclavare.crypto import jwe
from inclavare.crypto.jwk import jwk_from_public_key
from inclavare.errors import KbsError
from inclavare.services.kbs.protocol import (
    ERROR_TYPE_PREFIX,
    KBS_PREFIX,
    PROTOCOL_VERSION,
    runtime_data,
    runtime_data_digest,
)
from inclavare.services.kbs.resource_path import parse_resource_path

Attester = Callable[[bytes], tuple[str, Any]]
SUPPORTED_HASHES = ["sha256", "sha384", "sha512"]


def parse_resource_uri(uri: str) -> str:
    """``kbs:///repo/type/tag`` (host ignored, as guest-components) -> ``repo/type/tag``."""
    parts = urlsplit(uri)
    if parts.scheme != "kbs" or parts.query or parts.fragment:
        raise KbsError(f"not a kbs:/// resource URI: {uri!r}", kind="InvalidResourceUri", status=0)
    try:
        return str(parse_resource_path(parts.path.lstrip("/")))
    except KbsError as exc:
        raise KbsError(f"invalid resource path in {uri!r}", kind="InvalidResourceUri", status=0) from exc


class KbsClient:
    def __init__(self, url: str, attester: Attester, *, tee: str | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        self.base = url.rstrip("/") + KBS_PREFIX
        self.attester = attester
        self.tee = tee
        self._http = httpx.Client(timeout=timeout, transport=transport)
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._token: str | None = None

    def __enter__(self) -> KbsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- protocol -----------------------------------------------------------------------------
    def _post(self, path: str, body: Any) -> httpx.Response:
        try:
            resp = self._http.post(self.base + path, content=json.dumps(body),
                                   headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            raise KbsError(f"cannot reach KBS at {self.base}{path}: {exc}", kind="Unreachable", status=0) from exc
        _raise_for_error(resp, path)
        return resp

    def attest(self) -> str:
        """Run auth + attest; returns the attestation token (kept for ``get_resource``)."""
        probe_tee = self.tee or self.attester_tee()
        challenge = self._post("/auth", {
            "version": PROTOCOL_VERSION, "tee": probe_tee,
            "extra-params": {"supported-hash-algorithms": SUPPORTED_HASHES},
        })
        challenge = _json_body(challenge, "/auth")
        nonce = challenge.get("nonce") if isinstance(challenge, dict) else None
        if not isinstance(nonce, str):
            raise KbsError("KBS challenge has no nonce", kind="ProtocolError", status=0)
        key = ec.generate_private_key(ec.SECP256R1())
        pub = jwk_from_public_key(key.public_key(), alg=jwe.ECDH_ALG)
        rd = runtime_data(pub, nonce, "")
        tee, evidence = self.attester(runtime_data_digest(rd, probe_tee))
        if tee != probe_tee:
            raise KbsError(f"attester produced {tee!r} evidence, session is for {probe_tee!r}",
                           kind="ProtocolError", status=0)
        resp = self._post("/attest", {
            "init-data": None,
            "runtime-data": {"nonce": nonce, "tee-pubkey": pub},
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
        })
        body = _json_body(resp, "/attest")
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise KbsError("KBS attest response has no token", kind="ProtocolError", status=0)
        self._key, self._token = key, token
        return token

    def attester_tee(self) -> str:
        """The TEE name, learned by calling the attester once with zero report data."""
        tee, _ = self.attester(bytes(48))
        self.tee = tee
        return tee

    def get_token(self) -> str:
        return self._token if self._token is not None else self.attest()

    def get_resource(self, uri: str) -> bytes:
        """Fetch and decrypt a ``kbs:///repo/type/tag`` resource (attesting first if needed)."""
        path = parse_resource_uri(uri)
        if self._token is None:
            self.attest()
        assert self._key is not None
        try:
            resp = self._http.get(f"{self.base}/resource/{path}")
        except httpx.HTTPError as exc:
            raise KbsError(f"cannot reach KBS at {self.base}: {exc}", kind="Unreachable", status=0) from exc
        _raise_for_error(resp, f"/resource/{path}")
        try:
            return jwe.decrypt(self._key, _json_body(resp, f"/resource/{path}"))
        except jwe.JweError as exc:
            raise KbsError(f"cannot decrypt resource {path}: {exc}", kind="JweError", status=0) from exc


def _json_body(resp: httpx.Response, path: str) -> Any:
    try:
        return resp.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise KbsError(f"KBS {path} answered 200 with a body that is not JSON", kind="ProtocolError",
                       status=resp.status_code) from exc


def _raise_for_error(resp: httpx.Response, path: str) -> None:
    if resp.status_code == 200:
        return
    kind, detail = "HttpError", resp.text[:300]
    try:
        body = resp.json()
        if isinstance(body, dict) and isinstance(body.get("type"), str):
            kind = body["type"].removeprefix(ERROR_TYPE_PREFIX)
            detail = str(body.get("detail", ""))
    except ValueError:
        pass
    raise KbsError(f"KBS {path} failed ({resp.status_code} {kind}): {detail}", kind=kind, status=resp.status_code)
