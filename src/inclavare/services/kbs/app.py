"""The KBS HTTP API (Starlette): Trustee's ``/kbs/v0/<plugin>/...`` surface and error bodies.

Every route is declared in ``ROUTES`` with its access class (public, session, attested, admin);
the dispatcher enforces the class before the handler runs, so an admin route cannot forget its
check. Unknown plugin or method -> 404 ``PluginNotFound``; bad resource path -> 404
``InvalidRequestPath``; everything else a client can get wrong -> 401 with Trustee's error type,
bodies over the payload limit -> 413, a client over its own limits -> 429 with ``Retry-After``.
Unexpected failures -> 500 without a traceback to the client, and one log line (the traceback
only at debug level); a client that goes away mid-request is one INFO line, not an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from inclavare.crypto import jwe
from inclavare.errors import InclavareError, KbsError, StoreError
from inclavare.policy.explain import appraised_evidence, default_denial_reasons
from inclavare.services.kbs.admin_auth import AdminAuth
from inclavare.services.kbs.attestation_service import BuiltinAttestationService
from inclavare.services.kbs.client_limits import TooManyRequests, client_key
from inclavare.services.kbs.metrics import Metrics
from inclavare.services.kbs.protocol import KBS_PREFIX, SESSION_COOKIE, error_body
from inclavare.services.kbs.rcar import RcarHandshake
from inclavare.services.kbs.resource_path import parse_resource_path
from inclavare.services.kbs.resource_policy import ResourcePolicyEngine
from inclavare.services.kbs.sessions import Session
from inclavare.services.kbs.store import KbsStore
from inclavare.services.kbs.token_verifier import TokenVerifier, tee_public_key
from inclavare.services.logs import event, request_id

log = logging.getLogger("inclavare.kbs")
JSON = "application/json"


@dataclass
class KbsService:
    """Everything a request handler needs; built by ``server.build_service``."""

    store: KbsStore
    rcar: RcarHandshake
    attestation: BuiltinAttestationService
    resource_policy: ResourcePolicyEngine
    tokens: TokenVerifier
    admin: AdminAuth
    payload_limit: int
    session_timeout_s: float
    metrics: Metrics = field(default_factory=Metrics)


@dataclass(frozen=True)
class Call:
    request: Request
    rest: str  # path after the plugin segment, without leading slash (raw, not percent-decoded)
    query: dict[str, str]
    service: KbsService


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    plugin: str
    method: str
    handler: Handler
    access: str  # "public" | "session" | "attested" | "admin"


# --- helpers ------------------------------------------------------------------------------------
def _json(doc: Any, status: int = 200, cookie: Session | None = None) -> Response:
    resp = Response(json.dumps(doc, separators=(",", ":")), status_code=status, media_type=JSON)
    if cookie is not None:
        expires = formatdate(cookie.expires, usegmt=True)
        resp.headers.append("set-cookie", f"{SESSION_COOKIE}={cookie.id}; Expires={expires}; Path=/kbs")
    return resp


def error_response(exc: KbsError) -> Response:
    resp = _json(error_body(exc.kind, str(exc)), status=exc.status)
    if isinstance(exc, TooManyRequests):
        resp.headers["retry-after"] = str(exc.retry_after)
    return resp


def _client(call: Call) -> str:
    peer = call.request.client
    return client_key(peer.host if peer is not None else None)


async def read_body(call: Call) -> bytes:
    limit = call.service.payload_limit
    declared = call.request.headers.get("content-length")
    too_large = KbsError(f"request body exceeds the payload limit of {limit} bytes",
                         kind="PayloadTooLarge", status=413)
    if declared is not None:
        if not declared.isdigit():
            raise KbsError("invalid Content-Length", kind="InvalidRequest", status=400)
        if int(declared) > limit:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in call.request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


# --- handlers -----------------------------------------------------------------------------------
async def handle_auth(call: Call) -> Response:
    metrics = call.service.metrics
    metrics.inc("kbs_auth_requests_total")
    client = _client(call)
    try:
        call.service.rcar.admit(client)
        session, challenge = call.service.rcar.auth(await read_body(call), client)
    except KbsError:
        metrics.inc("kbs_auth_errors_total")
        raise
    metrics.inc("kbs_auth_successes_total")
    return _json(challenge, cookie=session)


async def handle_attest(call: Call) -> Response:
    metrics = call.service.metrics
    metrics.inc("kbs_attestation_requests_total")
    body = await read_body(call)
    sid = call.request.cookies.get(SESSION_COOKIE)
    known = call.service.rcar.sessions.get(sid)
    tee = known.tee if known is not None else "unknown"
    decision = request_id()
    try:
        session = call.service.rcar.attest(sid, body, known)
    except KbsError as exc:
        metrics.inc("kbs_attestation_failures_total", tee_type=tee)
        event(log, "attest", "attestation %s refused (%s evidence from %s): %s", decision, tee, _client(call), exc,
              level=logging.WARNING, decision_id=decision, tee=tee, client=_client(call), verdict="refused",
              reason=str(exc), error_type=exc.kind)
        raise
    metrics.inc("kbs_attestation_successes_total", tee_type=tee)
    facts = decision_facts(session.claims)
    event(log, "attest", "attestation %s: %s evidence%s, measurement %s, TCB %s: appraisal %s", decision, tee,
          " (SIMULATED)" if facts["simulated"] else "", facts["measurement"], facts["tcb_status"],
          facts["appraisal"], decision_id=decision, client=_client(call), verdict="token", **facts)
    return _json({"token": session.token}, cookie=session)


def decision_facts(claims: Any) -> dict[str, Any]:
    """What a decision was about, from the EAR claims: the TEE, its measurement, whether only a
    simulated root vouched for it, its TCB status, the appraisal and the trust vector."""
    appraised = appraised_evidence(claims)
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True, separators=(",", ":"), default=str).encode())
    if appraised is None:
        return {"tee": "-", "measurement": "-", "simulated": False, "tcb_status": "-", "appraisal": "-",
                "trust_vector": {}, "claims_digest": digest.hexdigest()}
    tee_claims = appraised.tee_claims
    measurement = next((str(tee_claims[k]) for k in ("mr_enclave", "mr_td", "measurement", "launch_digest")
                        if k in tee_claims), "-")
    return {"tee": appraised.tee, "measurement": measurement, "simulated": bool(appraised.evidence.get("simulated")),
            "tcb_status": tee_claims.get("tcb_status", "-"), "appraisal": appraised.status,
            "trust_vector": dict(appraised.vector), "claims_digest": digest.hexdigest()}


def _token_claims(call: Call) -> tuple[dict[str, Any], Any]:
    session = call.service.rcar.sessions.get(call.request.cookies.get(SESSION_COOKIE))
    if session is not None and session.attested and session.claims is not None:
        return session.claims, session.tee_key
    auth = call.request.headers.get("authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        raise KbsError("Attestation Token not found", kind="TokenNotFound")
    claims = call.service.tokens.verify(auth[7:].strip())
    return claims, tee_public_key(claims)


async def get_resource(call: Call) -> Response:
    path = parse_resource_path(call.rest)
    claims, tee_key = _token_claims(call)
    metrics = call.service.metrics
    metrics.inc("kbs_policy_evals_total")
    decision = request_id()
    try:
        call.service.resource_policy.check(claims, "resource", path.segments(), call.query)
    except KbsError as exc:
        metrics.inc("kbs_policy_violations_total" if exc.kind == "PolicyDeny" else "kbs_policy_errors_total")
        if exc.kind != "PolicyDeny":
            raise
        facts = decision_facts(claims)
        default = call.service.resource_policy.is_default()
        facts["policy"] = "default" if default else "custom"
        facts["reasons"] = default_denial_reasons(claims) if default else ["the configured resource policy's rules"]
        # the claims themselves (not the token: a bearer credential) so `inclavare explain --decision` replays it
        event(log, "deny", "resource %s denied to %s measurement %s%s (decision %s)", path, facts["tee"],
              facts["measurement"], " (SIMULATED)" if facts["simulated"] else "", decision, level=logging.WARNING,
              decision_id=decision, resource=str(path), client=_client(call), verdict="denied", claims=claims,
              **facts)
        raise KbsError(f"Access denied by policy (decision {decision}: {facts['tee']} measurement "
                       f"{facts['measurement']}{', SIMULATED evidence' if facts['simulated'] else ''}, appraisal "
                       f"{facts['appraisal']}; `inclavare explain --token` says why)", kind="PolicyDeny") from None
    metrics.inc("kbs_policy_approvals_total")
    facts = decision_facts(claims)
    event(log, "release", "resource %s released to %s measurement %s%s (decision %s)", path, facts["tee"],
          facts["measurement"], " (SIMULATED)" if facts["simulated"] else "", decision, decision_id=decision,
          resource=str(path), client=_client(call), verdict="released", **facts)
    data = call.service.store.get_resource(str(path))
    if data is None:
        raise KbsError(f"Plugin internal error: resource {path} not found", kind="PluginInternalError")
    try:
        return _json(jwe.encrypt(tee_key, data))
    except jwe.JweError as exc:
        raise KbsError(f"JWE failed: {exc}", kind="JweError") from exc


async def set_resource(call: Call) -> Response:
    path = parse_resource_path(call.rest)
    body = await read_body(call)
    call.service.store.put_resource(str(path), body)
    log.info("resource %s set (%d bytes)", path, len(body))
    return Response(status_code=200)


async def delete_resource(call: Call) -> Response:
    path = parse_resource_path(call.rest)
    if not call.service.store.delete_resource(str(path)):
        raise KbsError(f"Plugin internal error: resource {path} not found", kind="PluginInternalError")
    log.info("resource %s deleted", path)
    return Response(status_code=200)


async def set_attestation_policy(call: Call) -> Response:
    call.service.attestation.set_policy(await read_body(call))
    return Response(status_code=200)


async def set_resource_policy(call: Call) -> Response:
    call.service.resource_policy.set_policy(await read_body(call))
    return Response(status_code=200)


async def get_resource_policy(call: Call) -> Response:
    return Response(call.service.resource_policy.get_policy(), media_type="text/plain")


async def set_reference_value(call: Call) -> Response:
    names = call.service.attestation.register_reference_values(await read_body(call))
    return _json({"registered": names})


async def get_reference_value(call: Call) -> Response:
    values = call.service.attestation.reference_values()
    if not call.rest:
        return _json(values)
    if call.rest not in values:
        raise KbsError(
            f"RVPS configuration failed: Failed to get reference_values: {call.rest[:128]} not found",
            kind="RvpsError",
        )
    return _json(values[call.rest])


ROUTES: tuple[Route, ...] = (
    Route("auth", "POST", handle_auth, "public"),
    Route("attest", "POST", handle_attest, "session"),
    Route("resource", "GET", get_resource, "attested"),
    Route("resource", "POST", set_resource, "admin"),
    Route("resource", "DELETE", delete_resource, "admin"),
    Route("attestation-policy", "POST", set_attestation_policy, "admin"),
    Route("resource-policy", "POST", set_resource_policy, "admin"),
    Route("resource-policy", "GET", get_resource_policy, "admin"),
    Route("reference-value", "POST", set_reference_value, "admin"),
    Route("reference-value", "GET", get_reference_value, "admin"),
)
_TABLE = {(r.plugin, r.method): r for r in ROUTES}
_PLUGINS = {r.plugin for r in ROUTES}


def _split(request: Request) -> tuple[str, str]:
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    try:
        text = raw.decode("ascii").split("?", 1)[0]
    except UnicodeDecodeError as exc:
        raise KbsError("Request path is invalid", kind="InvalidRequestPath", status=404) from exc
    rest = text[len(KBS_PREFIX) + 1:] if text.startswith(KBS_PREFIX + "/") else ""
    plugin, _, tail = rest.partition("/")
    return plugin, tail


def make_dispatcher(service: KbsService) -> Callable[[Request], Awaitable[Response]]:
    async def dispatch(request: Request) -> Response:
        started = time.perf_counter()
        try:
            plugin, rest = _split(request)
            route = _TABLE.get((plugin, request.method))
            if route is None:
                if not plugin:
                    raise KbsError("Request path is invalid", kind="InvalidRequestPath", status=404)
                raise KbsError(f"Plugin {plugin[:64]} not found", kind="PluginNotFound", status=404)
            if route.access == "admin":
                service.admin.check(request.headers.get("authorization"), f"{KBS_PREFIX}/{plugin}")
            query = dict(parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True))
            return await route.handler(Call(request, rest, query, service))
        except KbsError as exc:
            return error_response(exc)
        except StoreError as exc:
            log.error("store failure: %s", exc)
            return _json(error_body("StorageError", "storage backend failure; nothing was changed"), 503)
        except InclavareError as exc:
            return _json(error_body("InvalidRequest", str(exc)), 401)
        except ClientDisconnect:  # nobody is left to answer; not the broker's fault
            log.info("%s %s: client went away before the request was complete",
                     request.method, request.url.path)
            return Response(status_code=400)
        except Exception as exc:  # a bug: log it, never leak a traceback to the client
            log.error("internal error on %s %s: %s: %s", request.method, request.url.path,
                      type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            return _json(error_body("InternalError", "internal error (see the server log)"), 500)
        finally:
            elapsed = time.perf_counter() - started
            service.metrics.inc("kbs_http_requests_total")
            service.metrics.observe(elapsed)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s %s %.2f ms", request.method, request.scope["path"], elapsed * 1000)

    return dispatch


METHODS = frozenset({r.method for r in ROUTES} | {"PUT", "PATCH", "HEAD"})


def create_app(service: KbsService) -> Callable[[Any, Any, Any], Awaitable[None]]:
    """The ASGI application: ``/kbs/v0[/...]`` to the dispatcher, ``GET /metrics``, else 404.

    A bare ASGI callable rather than a Starlette application: the dispatcher already routes and
    catches everything, and Starlette's router and middleware layers cost a tenth of a request.
    """
    dispatch = make_dispatcher(service)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == KBS_PREFIX or path.startswith(KBS_PREFIX + "/"):
            if method in METHODS:
                response = await dispatch(Request(scope, receive))
            else:
                response = PlainTextResponse("Method Not Allowed", 405,
                                             headers={"allow": ", ".join(sorted(METHODS))})
        elif path == "/metrics" and method in ("GET", "HEAD"):
            response = Response(service.metrics.render(), media_type="text/plain; version=0.0.4")
        else:
            response = PlainTextResponse("Not Found", 404)
        await response(scope, receive, send)

    return app
