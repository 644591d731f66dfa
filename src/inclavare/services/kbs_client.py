"""Client of the KBS protocol 0.4.0 — run by the enclave agent, inside the enclave boundary.

``KbsClient(url, attester)`` runs auth -> attest with an EC P-256 TEE key it generates itself,
whose JWK is bound into the evidence through report_data = SHA-384(JCS(runtime data)); it then
fetches ``kbs:///repo/type/tag`` resources with the attestation token (``Authorization: Bearer``)
and decrypts the JWE with that key. The key and the token stay in this object: nothing else ever
sees them. The token is renewed before it expires, and once more if the broker rejects it.

The attester (``inclavare.tee.registry.Attester``) names its TEE and turns the report data
(48 bytes; hardware attesters zero-pad to 64) into Trustee's evidence JSON for that TEE; a :class:`~inclavare.tee.composite.CompositeAttester` adds
device evidence (a TPM...) as ``additional_evidence``. Requests go through an :class:`HttpTransport` (TCP, or the node
agent's opaque relay). Failures raise ``KbsError`` carrying the server's error type and detail.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from inclavare.crypto import jwe
from inclavare.crypto.jwk import jwk_from_public_key
from inclavare.errors import KbsError
from inclavare.services.http_transport import HttpResponse, HttpTransport, TransportError
from inclavare.services.kbs.protocol import (
    ERROR_TYPE_PREFIX,
    KBS_PREFIX,
    PROTOCOL_VERSION,
    SESSION_COOKIE,
    device_runtime_data,
    runtime_data,
    runtime_data_digest,
)
from inclavare.services.kbs.resource_path import parse_resource_path
from inclavare.tee.composite import CompositeAttester
from inclavare.tee.registry import Attester

SUPPORTED_HASHES = ["sha256", "sha384", "sha512"]
TOKEN_RENEW_MARGIN = 30.0  # seconds before expiry
REJECTED_TOKEN = frozenset({"TokenVerifierError", "TokenNotFound"})


def parse_resource_uri(uri: str) -> str:
    """``kbs:///repo/type/tag`` (host ignored, as guest-components) -> ``repo/type/tag``."""
    parts = urlsplit(uri)
    if parts.scheme != "kbs" or parts.query or parts.fragment:
        raise KbsError(f"not a kbs:/// resource URI: {uri!r}", kind="InvalidResourceUri", status=0)
    try:
        return str(parse_resource_path(parts.path.lstrip("/")))
    except KbsError as exc:
        raise KbsError(f"invalid resource path in {uri!r}", kind="InvalidResourceUri", status=0) from exc


def _token_expiry(token: str) -> float | None:
    """The ``exp`` claim, read without verification: only to renew in time."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
        return float(exp) if isinstance(exp, (int, float)) else None
    except (IndexError, ValueError, TypeError):
        return None


class KbsClient:
    def __init__(self, url: str, attester: Attester, *, timeout: float = 30.0,
                 transport: HttpTransport | None = None, clock: Callable[[], float] = time.time,
                 init_data: str | None = None) -> None:
        """``init_data``: a Trustee init-data TOML document sent with the evidence (its digest
        must be what the evidence's init-data field holds; the broker checks)."""
        self.url = url.rstrip("/")
        self.init_data = init_data
        self.attester = attester
        self.http = transport or HttpTransport(self.url, timeout=timeout)
        self.clock = clock
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._token: str | None = None
        self._expiry: float | None = None
        self._cookie = ""

    def __enter__(self) -> KbsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # --- transport ----------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> HttpResponse:
        headers = dict(headers or {})
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        if self._cookie:
            headers["cookie"] = self._cookie
        try:
            resp = self.http.request(method, KBS_PREFIX + path, payload, headers)
        except TransportError as exc:
            raise KbsError(f"cannot reach KBS at {self.url}: {exc}", kind="Unreachable", status=0) from exc
        for name, value in resp.headers:
            if name == "set-cookie" and value.startswith(SESSION_COOKIE + "="):
                self._cookie = value.split(";", 1)[0]
        _raise_for_error(resp, path)
        return resp

    # --- protocol -----------------------------------------------------------------------------
    def attest(self) -> str:
        """Run auth + attest with a fresh TEE key; returns the attestation token (kept)."""
        probe_tee = self.attester.tee.name
        self._cookie = ""
        challenge = _json_body(self._request("POST", "/auth", {
            "version": PROTOCOL_VERSION, "tee": probe_tee,
            "extra-params": {"supported-hash-algorithms": SUPPORTED_HASHES},
        }), "/auth")
        nonce = challenge.get("nonce") if isinstance(challenge, dict) else None
        if not isinstance(nonce, str):
            raise KbsError("KBS challenge has no nonce", kind="ProtocolError", status=0)
        key = ec.generate_private_key(ec.SECP256R1())
        pub = jwk_from_public_key(key.public_key(), alg=jwe.ECDH_ALG)
        additional = self._additional_evidence(pub, nonce)
        rd = runtime_data(pub, nonce, additional)
        evidence = self.attester.evidence(runtime_data_digest(rd, probe_tee))
        body = _json_body(self._request("POST", "/attest", {
            "init-data": None if self.init_data is None else {"format": "toml", "body": self.init_data},
            "runtime-data": {"nonce": nonce, "tee-pubkey": pub},
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": additional},
        }), "/attest")
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise KbsError("KBS attest response has no token", kind="ProtocolError", status=0)
        self._key, self._token, self._expiry = key, token, _token_expiry(token)
        return token

    def _additional_evidence(self, pub: dict[str, Any], nonce: str) -> str:
        """Trustee's ``additional_evidence``: ``""``, or JSON ``{tee: evidence}`` of a composite's
        device attesters, each bound to H(JCS{tee-pubkey, nonce})."""
        if not isinstance(self.attester, CompositeAttester):
            return ""
        bound = device_runtime_data(runtime_data(pub, nonce, ""))
        return json.dumps({a.tee.name: a.evidence(runtime_data_digest(bound, a.tee.name))
                           for a in self.attester.additional})

    def _fresh_token(self) -> str:
        if self._token is None or (self._expiry is not None
                                   and self._expiry - TOKEN_RENEW_MARGIN <= self.clock()):
            return self.attest()
        return self._token

    def get_token(self) -> str:
        return self._fresh_token()

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def get_resource(self, uri: str) -> bytes:
        """Fetch and decrypt a ``kbs:///repo/type/tag`` resource (attesting first if needed)."""
        path = parse_resource_uri(uri)
        for attempt in (0, 1):
            token = self._fresh_token()
            try:
                resp = self._request("GET", f"/resource/{path}", headers={"authorization": f"Bearer {token}"})
            except KbsError as exc:
                if attempt == 0 and exc.kind in REJECTED_TOKEN:
                    self._token = None  # e.g. the broker restarted with another token key
                    continue
                raise
            assert self._key is not None
            try:
                return jwe.decrypt(self._key, _json_body(resp, f"/resource/{path}"))
            except jwe.JweError as exc:
                raise KbsError(f"cannot decrypt resource {path}: {exc}", kind="JweError", status=0) from exc
        raise AssertionError("unreachable")


def _json_body(resp: HttpResponse, path: str) -> Any:
    try:
        return json.loads(resp.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KbsError(f"KBS {path} answered {resp.status} with a body that is not JSON", kind="ProtocolError",
                       status=resp.status) from exc


def _raise_for_error(resp: HttpResponse, path: str) -> None:
    if resp.status == 200:
        return
    kind, detail = "HttpError", resp.body[:300].decode("utf-8", "replace")
    try:
        body = json.loads(resp.body)
        if isinstance(body, dict) and isinstance(body.get("type"), str):
            kind = body["type"].removeprefix(ERROR_TYPE_PREFIX)
            detail = str(body.get("detail", ""))
    except (ValueError, UnicodeDecodeError):
        pass
    raise KbsError(f"KBS {path} failed ({resp.status} {kind}): {detail}", kind=kind, status=resp.status)
