"""Protocol conformance and abuse against a real KBS process on a loopback ephemeral port."""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kbs_harness import ALLOW_ALL, SampleSession, error_type, raw_http, sample_evidence

from inclavare.crypto import jws
from inclavare.crypto.b64 import b64url_decode
from inclavare.crypto.jwk import jwk_from_public_key
from inclavare.errors import KbsError
from inclavare.services.kbs_client import KbsClient
from inclavare.tee.sample import SampleAttester


_sample_attester = SampleAttester()


def _claims(token: str) -> dict:
    return json.loads(b64url_decode(token.split(".")[1]))


def test_library_client_gets_secret_and_token_has_trustee_claims(kbs) -> None:
    with KbsClient(kbs.url, _sample_attester) as client:
        assert client.get_resource("kbs:///default/key/1") == b"top secret"
        token = client.get_token()
    header = json.loads(b64url_decode(token.split(".")[0]))
    assert header["alg"] == "ES256" and header["jwk"]["kty"] == "EC"
    claims = _claims(token)
    assert claims["eat_profile"] == "tag:github.com,2024:confidential-containers/Trustee"
    assert claims["iss"] == "CoCo-Attestation-Service" and claims["exp"] - claims["iat"] == 300
    cpu0 = claims["submods"]["cpu0"]
    assert cpu0["ear.status"] in ("affirming", "warning", "contraindicated", "none")
    assert set(cpu0["ear.trustworthiness-vector"]) == {
        "instance-identity", "configuration", "executables", "file-system", "hardware",
        "runtime-opaque", "storage-opaque", "sourced-data"}
    annotated = cpu0["ear.veraison.annotated-evidence"]
    assert annotated["sample"]["launch_digest"] == "abcde"
    assert annotated["runtime_data_claims"]["tee-pubkey"]["crv"] == "P-256"
    assert "simulated" not in annotated


def test_challenge_and_cookie_format(kbs) -> None:
    s = SampleSession(kbs.url)
    r = s.auth()
    assert r.status_code == 200
    body = r.json()
    assert body["extra-params"] == "" and len(base64.b64decode(body["nonce"], validate=True)) == 32
    assert re.fullmatch(r"kbs-session-id=[0-9a-f]{32}; Expires=.+ GMT; Path=/kbs", r.headers["set-cookie"])
    assert s.auth().json()["nonce"] != body["nonce"]


@pytest.mark.parametrize("version", ["0.3.0", "0.4.1", "1.0.0", "garbage"])
def test_wrong_version_is_401_attestation_error(kbs, version: str) -> None:
    r = SampleSession(kbs.url).auth(version)
    assert r.status_code == 401 and error_type(r) == "AttestationError"
    assert "0.4.0" in r.json()["detail"] or "parse" in r.json()["detail"]


def test_second_attest_returns_same_token(kbs) -> None:
    s = SampleSession(kbs.url)
    s.auth()
    first = s.attest()
    assert first.status_code == 200
    assert s.attest().json()["token"] == first.json()["token"]


def test_wrong_nonce_rejected(kbs) -> None:
    s = SampleSession(kbs.url)
    s.auth()
    other = base64.b64encode(os.urandom(32)).decode()
    r = s.attest(s.attestation(sample_evidence(s.report_data(nonce=other)), nonce=other))
    assert r.status_code == 401 and "nonce" in r.json()["detail"]


def test_replayed_evidence_on_new_session_rejected(kbs) -> None:
    s = SampleSession(kbs.url)
    s.auth()
    old = s.attestation()
    assert s.attest(old).status_code == 200
    s2 = SampleSession(kbs.url)
    s2.auth()
    r = s2.attest(old)  # everything from the first session, verbatim
    assert r.status_code == 401 and error_type(r) == "AttestationError"
    r = s2.attest(dict(old, **{"runtime-data": {"nonce": s2.nonce, "tee-pubkey": s.pub}}))
    assert r.status_code == 401 and "report_data" in r.json()["detail"]


def test_evidence_bound_to_another_key_rejected(kbs) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    s = SampleSession(kbs.url)
    s.auth()
    attacker = jwk_from_public_key(ec.generate_private_key(ec.SECP256R1()).public_key(), alg="ECDH-ES+A256KW")
    evidence = sample_evidence(s.report_data())  # bound to the genuine key
    r = s.attest(s.attestation(evidence, pub=attacker))
    assert r.status_code == 401 and "report_data" in r.json()["detail"]


@pytest.mark.parametrize("rd", [os.urandom(48), b"", os.urandom(64)])
def test_report_data_mismatch_rejected(kbs, rd: bytes) -> None:
    s = SampleSession(kbs.url)
    s.auth()
    r = s.attest(s.attestation(sample_evidence(rd)))
    assert r.status_code == 401 and error_type(r) == "AttestationError"


def test_attest_without_or_with_unknown_cookie(kbs) -> None:
    s = SampleSession(kbs.url)
    s.auth()
    doc = s.attestation()
    r = httpx.post(kbs.url + "/kbs/v0/attest", json=doc)
    assert r.status_code == 401 and "cookie" in r.json()["detail"]
    r = httpx.post(kbs.url + "/kbs/v0/attest", json=doc, cookies={"kbs-session-id": "0" * 32})
    assert r.status_code == 401 and "session" in r.json()["detail"]


def test_resource_without_token_is_token_not_found(kbs) -> None:
    r = httpx.get(kbs.url + "/kbs/v0/resource/default/key/1")
    assert r.status_code == 401 and error_type(r) == "TokenNotFound"
    s = SampleSession(kbs.url)
    s.auth()  # authed, not attested
    r = s.resource("default/key/1")
    assert r.status_code == 401 and error_type(r) == "TokenNotFound"


def test_missing_resource_is_401_like_trustee(kbs) -> None:
    s = SampleSession(kbs.url)
    s.auth()
    s.attest()
    r = s.resource("default/key/does-not-exist")
    assert r.status_code == 401 and error_type(r) == "PluginInternalError"


def test_bearer_token_works_without_session_and_forgeries_fail(kbs) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    s = SampleSession(kbs.url)
    s.auth()
    token = s.attest().json()["token"]
    fresh = httpx.get(kbs.url + "/kbs/v0/resource/default/key/1", headers={"authorization": f"Bearer {token}"})
    assert fresh.status_code == 200 and s.decrypt(fresh) == b"top secret"
    # A token self-signed by an attacker (with its own jwk in the header) is not ours.
    evil = ec.generate_private_key(ec.SECP256R1())
    forged = jws.sign(_claims(token), evil, {"jwk": jwk_from_public_key(evil.public_key())})
    head, body, sig = token.split(".")
    claims = _claims(token)
    claims["submods"]["cpu0"]["ear.status"] = "affirming"
    from inclavare.crypto.b64 import b64url_encode

    spliced = f"{head}.{b64url_encode(json.dumps(claims).encode())}.{sig}"
    for bad in (forged, spliced, "not.a.token", token + "x"):
        r = httpx.get(kbs.url + "/kbs/v0/resource/default/key/1", headers={"authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and error_type(r) == "TokenVerifierError", bad


@pytest.mark.parametrize("target", [
    "/kbs/v0/resource/../../etc/passwd", "/kbs/v0/resource/default/key/..", "/kbs/v0/resource/default/../key/1",
    "/kbs/v0/resource/default/key%2F1/x", "/kbs/v0/resource/default/key/%2e%2e", "/kbs/v0/resource/default/key",
    "/kbs/v0/resource/default/key/1/extra", "/kbs/v0/resource/default/k%20y/1", "/kbs/v0/resource/default/key/.env",
    "/kbs/v0/resource//key/1", "/kbs/v0/resource/default/key/a;b",
])
def test_path_traversal_and_bad_paths_are_404(kbs, target: str) -> None:
    status, body = raw_http(kbs.url, f"GET {target} HTTP/1.1")
    assert status == 404, body
    assert json.loads(body)["type"].endswith("/InvalidRequestPath")


def test_unknown_plugin_or_method_is_404(kbs) -> None:
    r = httpx.get(kbs.url + "/kbs/v0/nebula-ca/x")
    assert r.status_code == 404 and error_type(r) == "PluginNotFound"
    r = httpx.put(kbs.url + "/kbs/v0/resource/default/key/1", content=b"x")
    assert r.status_code == 404 and error_type(r) == "PluginNotFound"
    r = httpx.get(kbs.url + "/kbs/v0/auth")
    assert r.status_code == 404


def test_oversized_bodies_get_413(kbs) -> None:
    big = b"{" + b" " * (2 * 1024 * 1024 + 10) + b"}"
    r = httpx.post(kbs.url + "/kbs/v0/auth", content=big)
    assert r.status_code == 413 and error_type(r) == "PayloadTooLarge"

    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    r = httpx.post(kbs.url + "/kbs/v0/attest", content=chunks())  # chunked, no Content-Length
    assert r.status_code == 413
    r = kbs.admin("POST", "/resource/default/big/1", big)
    assert r.status_code == 413
    assert kbs.admin("POST", "/resource/default/big/2", b"y" * (2 * 1024 * 1024 - 100)).status_code == 200


_BODIES = [b"", b"null", b"[]", b"{", b"\xff\xfe\x00", b'{"version":"0.4.0"}', b'{"version":["0.4.0"],"tee":"sample"}',
           b'{"version":"0.4.0","tee":{"x":1}}', b'{"version":"0.4.0","tee":"sample","extra-params":' + b"[" * 5000 + b"]" * 5000 + b"}",
           b'{"runtime-data":7}', b'{"runtime-data":{"nonce":1,"tee-pubkey":{}}}', b'"string"', b"1e999999"]


@pytest.mark.parametrize("endpoint", ["/auth", "/attest", "/attestation-policy", "/resource-policy", "/reference-value"])
@pytest.mark.parametrize("body", _BODIES)
def test_malformed_json_never_500(kbs, endpoint: str, body: bytes) -> None:
    s = SampleSession(kbs.url)
    s.auth()
    headers = kbs.admin_headers() if endpoint not in ("/auth", "/attest") else {}
    r = s.http.post(s.url + endpoint, content=body, headers=headers)
    assert r.status_code in (401, 404), r.text
    error_type(r)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(evidence=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                             lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["svn", "report_data", "quote", "x"]), inner, max_size=3),
                             max_leaves=8),
       tee_key=st.sampled_from([None, {}, {"kty": "EC"}, {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, "x", 5]))
def test_malformed_evidence_and_keys_are_typed_401(kbs, evidence, tee_key) -> None:
    s = SampleSession(kbs.url)
    s.auth()
    doc = s.attestation()
    doc["tee-evidence"]["primary_evidence"] = evidence  # never the valid evidence
    if tee_key is not None:
        doc["runtime-data"]["tee-pubkey"] = tee_key
    r = s.attest(doc)
    assert r.status_code == 401, r.text
    assert error_type(r) == "AttestationError"
    s.close()


def test_concurrent_clients(kbs) -> None:
    results: list[bytes | Exception] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            with KbsClient(kbs.url, _sample_attester) as c:
                for _ in range(3):
                    value = c.get_resource("kbs:///default/key/1")
            with lock:
                results.append(value)
        except Exception as exc:  # collected and asserted below
            with lock:
                results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [b"top secret"] * 16


def test_default_resource_policy_denies_sample(make_kbs) -> None:
    server = make_kbs()
    assert server.admin("POST", "/resource/default/key/1", b"s").status_code == 200
    with pytest.raises(KbsError) as info:
        KbsClient(server.url, _sample_attester).get_resource("kbs:///default/key/1")
    assert (info.value.kind, info.value.status) == ("PolicyDeny", 401)


def test_sample_tee_disabled_by_default_and_warning_logged(make_kbs) -> None:
    server = make_kbs(sample=False)
    r = SampleSession(server.url).auth()
    assert r.status_code == 401 and "insecure_allow_sample_tee" in r.json()["detail"]
    assert "INSECURE" not in server.stderr()


def test_insecure_sample_logged_as_warning(kbs) -> None:
    assert "WARNING" in kbs.stderr() and "insecure_allow_sample_tee" in kbs.stderr()


def test_expired_session(make_kbs) -> None:
    server = make_kbs("session_timeout_seconds = 0.5\n")
    server.set_resource_policy(ALLOW_ALL)
    assert server.admin("POST", "/resource/default/key/1", b"s").status_code == 200
    s = SampleSession(server.url)
    sid = re.search(r"kbs-session-id=([0-9a-f]+)", s.auth().headers["set-cookie"]).group(1)
    time.sleep(0.7)
    r = s.attest()  # the client dropped the expired cookie itself
    assert r.status_code == 401 and "cookie not found" in r.json()["detail"]
    r = httpx.post(server.url + "/kbs/v0/attest", json=s.attestation(), headers={"cookie": f"kbs-session-id={sid}"})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    s2 = SampleSession(server.url)
    sid2 = re.search(r"kbs-session-id=([0-9a-f]+)", s2.auth().headers["set-cookie"]).group(1)
    cookie = {"cookie": f"kbs-session-id={sid2}"}
    assert httpx.post(server.url + "/kbs/v0/attest", json=s2.attestation(), headers=cookie).status_code == 200
    assert httpx.get(server.url + "/kbs/v0/resource/default/key/1", headers=cookie).status_code == 200
    time.sleep(0.7)
    r = httpx.get(server.url + "/kbs/v0/resource/default/key/1", headers={"cookie": f"kbs-session-id={sid2}"})
    assert r.status_code == 401 and error_type(r) == "TokenNotFound"  # the session is gone server-side


def test_reference_values_and_attestation_policy_drive_the_appraisal(make_kbs) -> None:
    from inclavare.crypto.b64 import b64url_encode
    from inclavare.policy.reference_values import build_message

    server = make_kbs()

    def status() -> dict:
        s = SampleSession(server.url)
        s.auth()
        return _claims(s.attest().json()["token"])["submods"]["cpu0"]

    assert status()["ear.status"] == "contraindicated"
    rvs = build_message({"svn": ["1"], "launch_digest": ["abcde"], "major_version": 1, "minimum_minor_version": 1})
    assert server.admin("POST", "/reference-value", rvs).status_code == 200
    cpu0 = status()
    assert cpu0["ear.status"] == "affirming"
    assert cpu0["ear.trustworthiness-vector"]["executables"] == 3
    got = server.admin("GET", "/reference-value/svn")
    assert got.status_code == 200 and got.json()["value"] == ["1"]
    policy = "package policy\nimport rego.v1\ndefault executables := 96\nhardware := 2\n"
    doc = {"type": "rego", "policy_id": "default_cpu", "policy": b64url_encode(policy.encode())}
    assert server.admin("POST", "/attestation-policy", json.dumps(doc).encode()).status_code == 200
    cpu0 = status()
    assert cpu0["ear.trustworthiness-vector"]["executables"] == 96 and cpu0["ear.status"] == "contraindicated"
    bad = dict(doc, policy=b64url_encode(b"package policy\nhardware := {"))
    r = server.admin("POST", "/attestation-policy", json.dumps(bad).encode())
    assert r.status_code == 401 and "compile" in r.json()["detail"]


def test_resource_policy_sees_path_and_denies_with_401(make_kbs) -> None:
    server = make_kbs()
    server.set_resource_policy(
        'package policy\nimport rego.v1\ndefault allow := false\n'
        'allow if { data.plugin == "resource"; data["resource-path"] == ["default", "key", "1"] }\n')
    for path in ("default/key/1", "default/key/2"):
        assert server.admin("POST", f"/resource/{path}", path.encode()).status_code == 200
    s = SampleSession(server.url)
    s.auth()
    s.attest()
    assert s.decrypt(s.resource("default/key/1")) == b"default/key/1"
    r = s.resource("default/key/2")
    assert r.status_code == 401 and error_type(r) == "PolicyDeny"
    got = server.admin("GET", "/resource-policy")
    assert b'["default", "key", "1"]' in b64url_decode(got.text)


_ENGINE_CRASHER = ('package policy\nimport rego.v1\ndefault allow := false\nhelper if input.x == 1\n'
                   'helper2 if helper\nallow if { helper2 with input as {"x": 1} }\n')


def test_policy_that_crashes_the_rego_engine_is_refused_and_server_survives(make_kbs) -> None:
    from inclavare.crypto.b64 import b64url_encode

    server = make_kbs()
    r = server.admin("POST", "/resource-policy", json.dumps({"policy": b64url_encode(_ENGINE_CRASHER.encode())}).encode())
    assert r.status_code == 401 and "crashes the Rego engine" in r.json()["detail"]
    doc = {"type": "rego", "policy_id": "default_cpu", "policy": b64url_encode(_ENGINE_CRASHER.encode())}
    r = server.admin("POST", "/attestation-policy", json.dumps(doc).encode())
    assert r.status_code == 401 and "crashes the Rego engine" in r.json()["detail"]
    assert server.proc.poll() is None
    assert SampleSession(server.url).auth().status_code == 200


def test_session_table_is_bounded(make_kbs) -> None:
    server = make_kbs("max_sessions = 3\n")
    codes = [SampleSession(server.url).auth().status_code for _ in range(4)]
    assert codes == [200, 200, 200, 503]


def test_rsa_tee_key_gets_rsa_oaep_jwe(kbs) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from inclavare.crypto import jwe

    s = SampleSession(kbs.url)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    s.pub = jwk_from_public_key(key.public_key(), alg="RSA-OAEP-256")
    s.auth()
    assert s.attest().status_code == 200
    r = s.resource("default/key/1")
    assert json.loads(b64url_decode(r.json()["protected"]))["alg"] == "RSA-OAEP-256"
    assert jwe.decrypt(key, r.json()) == b"top secret"


def test_init_data_is_hashed_and_exposed_in_claims(kbs) -> None:
    import hashlib

    toml = 'algorithm = "sha384"\nversion = "0.1.0"\n[data]\n"aa.toml" = "[token_configs]\\nx = 1\\n"\npolicy = "p"\n'
    s = SampleSession(kbs.url)
    s.auth()
    doc = s.attestation()
    doc["init-data"] = {"format": "toml", "body": toml}
    r = s.attest(doc)
    assert r.status_code == 200, r.text
    ev = _claims(r.json()["token"])["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert ev["init_data"] == hashlib.sha384(toml.encode()).hexdigest()
    assert ev["init_data_claims"]["aa.toml"] == {"token_configs": {"x": 1}}
    for bad in ({"format": "json", "body": "{}"}, {"format": "toml", "body": "algorithm = "},
                {"format": "toml", "body": 'algorithm = "md5"'}, {"format": "toml"}):
        s = SampleSession(kbs.url)
        s.auth()
        doc = s.attestation()
        doc["init-data"] = bad
        r = s.attest(doc)
        assert r.status_code == 401 and error_type(r) == "AttestationError", bad


def test_metrics_use_trustee_names_and_count(make_kbs) -> None:
    server = make_kbs()
    s = SampleSession(server.url)
    s.auth()
    s.attest()
    s.resource("default/key/1")  # default policy: violation (the harness readiness probe is request 1)
    SampleSession(server.url).auth("0.1.0")
    text = httpx.get(server.url + "/metrics").text
    for line in ("kbs_auth_requests_total 2", "kbs_auth_successes_total 1", "kbs_auth_errors_total 1",
                 'kbs_attestation_successes_total{tee_type="sample"} 1', "kbs_policy_violations_total 1",
                 'kbs_http_request_duration_seconds_bucket{le="+Inf"} 5'):
        assert line in text.splitlines(), line
