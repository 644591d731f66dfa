"""Admin authentication on every admin route: none, wrong and right credentials (walks ROUTES)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from kbs_harness import ADMIN_AUDIENCE, error_type

from inclavare.crypto import jws
from inclavare.crypto.b64 import b64url_encode
from inclavare.policy.reference_values import build_message
from inclavare.services.kbs.app import ROUTES

ADMIN_ROUTES = [r for r in ROUTES if r.access == "admin"]

# A valid request per admin route (so "right credentials" must really succeed).
_EXAMPLES: dict[tuple[str, str], tuple[str, bytes]] = {
    ("resource", "POST"): ("/resource/default/admin/1", b"value"),
    ("resource", "DELETE"): ("/resource/default/admin/1", b""),
    ("attestation-policy", "POST"): ("/attestation-policy", json.dumps(
        {"type": "rego", "policy_id": "default_cpu",
         "policy": b64url_encode(b"package policy\nimport rego.v1\nhardware := 2\n")}).encode()),
    ("resource-policy", "POST"): ("/resource-policy", json.dumps(
        {"policy": b64url_encode(b"package policy\nimport rego.v1\ndefault allow := false\n")}).encode()),
    ("resource-policy", "GET"): ("/resource-policy", b""),
    ("reference-value", "POST"): ("/reference-value", build_message({"svn": ["1"]})),
    ("reference-value", "GET"): ("/reference-value/svn", b""),
}


def test_route_table_is_fully_classified_and_every_admin_route_has_an_example() -> None:
    assert {r.access for r in ROUTES} <= {"public", "session", "attested", "admin"}
    assert len({(r.plugin, r.method) for r in ROUTES}) == len(ROUTES)
    missing = [(r.plugin, r.method) for r in ADMIN_ROUTES if (r.plugin, r.method) not in _EXAMPLES]
    assert not missing, f"admin routes without an auth test: {missing}"
    assert {(r.plugin, r.method) for r in ROUTES if r.access != "admin"} == {
        ("auth", "POST"), ("attest", "POST"), ("resource", "GET")}


def _call(url: str, route, headers: dict[str, str]) -> httpx.Response:
    path, body = _EXAMPLES[(route.plugin, route.method)]
    return httpx.request(route.method, url + "/kbs/v0" + path, content=body or None, headers=headers, timeout=30)


def _bad_credentials(right: ed25519.Ed25519PrivateKey) -> dict[str, dict[str, str]]:
    now = int(time.time())
    good_claims = {"iat": now, "exp": now + 60}
    header_none = b64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return {
        "none": {},
        "not-bearer": {"authorization": "Basic YWRtaW46YWRtaW4="},
        "empty-bearer": {"authorization": "Bearer"},
        "garbage": {"authorization": "Bearer abc.def.ghi"},
        "wrong-ed25519-key": {"authorization": "Bearer " + jws.sign(good_claims, ed25519.Ed25519PrivateKey.generate())},
        "es256-for-eddsa-key": {"authorization": "Bearer " + jws.sign(good_claims, ec.generate_private_key(ec.SECP256R1()))},
        "alg-none": {"authorization": f"Bearer {header_none}.{b64url_encode(json.dumps(good_claims).encode())}."},
        "expired": {"authorization": "Bearer " + jws.sign({"iat": now - 900, "exp": now - 600}, right)},
        "not-yet-valid": {"authorization": "Bearer " + jws.sign({"iat": now, "nbf": now + 600, "exp": now + 900}, right)},
        "no-exp": {"authorization": "Bearer " + jws.sign({"iat": now}, right)},
        "too-long-lived": {"authorization": "Bearer " + jws.sign({"iat": now, "exp": now + 86400 * 30}, right)},
    }


@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=lambda r: f"{r.method}-{r.plugin}")
def test_admin_route_without_or_with_wrong_credentials_is_denied(kbs, route) -> None:
    for name, headers in _bad_credentials(kbs.admin_key).items():
        r = _call(kbs.url, route, headers)
        assert r.status_code == 401, (name, r.text)
        assert error_type(r) == "AdminAuthAccess", (name, r.text)


@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=lambda r: f"{r.method}-{r.plugin}")
def test_admin_route_with_right_credentials_succeeds(make_kbs, route) -> None:
    server = make_kbs()
    if route.method == "DELETE" or route.method == "GET":  # give them something to act on
        assert server.admin("POST", "/resource/default/admin/1", b"value").status_code == 200
        assert server.admin("POST", "/reference-value", build_message({"svn": ["1"]})).status_code == 200
    r = _call(server.url, route, server.admin_headers())
    assert r.status_code == 200, r.text


def test_admin_denied_for_everyone_without_admin_key(make_kbs) -> None:
    server = make_kbs(admin=False)
    key = ed25519.Ed25519PrivateKey.generate()
    from inclavare.services.kbs.admin_auth import make_admin_token

    for route in ADMIN_ROUTES:
        r = _call(server.url, route, {"authorization": "Bearer " + make_admin_token(key, ADMIN_AUDIENCE)})
        assert r.status_code == 401 and error_type(r) == "AdminAuthAccess"
        assert "no admin_public_key" in r.json()["detail"]
    assert "every admin endpoint is denied" in server.stderr()


def test_es256_admin_key_works(make_kbs, tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "es.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    server = make_kbs(f'admin_public_key = "es.pub"\nadmin_audience = "{ADMIN_AUDIENCE}"\n', admin=False)
    from inclavare.services.kbs.admin_auth import make_admin_token

    r = httpx.post(server.url + "/kbs/v0/resource/a/b/c", content=b"x",
                   headers={"authorization": "Bearer " + make_admin_token(key, ADMIN_AUDIENCE)})
    assert r.status_code == 200
