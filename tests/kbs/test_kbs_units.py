"""Unit tests of the protocol pieces: report_data binding, messages, paths, JWE, JWT, EAR, config."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwcrypto import jwe as jw_jwe
from jwcrypto import jwk as jw_jwk

from inclavare.crypto import jwe, jws
from inclavare.crypto.b64 import b64url_decode, b64url_encode
from inclavare.crypto.jwk import jwk_from_public_key, public_key_from_jwk
from inclavare.errors import ConfigError, FormatError, InclavareError, KbsError
from inclavare.policy import ear
from inclavare.policy.reference_values import active_values, build_message, parse_message
from inclavare.policy.rego_policy import PolicyCache, PolicyError, RegoPolicy
from inclavare.services.kbs.config import parse_config
from inclavare.services.kbs.protocol import (
    expected_report_data,
    parse_attestation,
    parse_request,
    runtime_data,
    runtime_data_digest,
)
from inclavare.services.kbs.resource_path import parse_resource_path

# --- report_data binding (research/attestation.md §1.3) -----------------------------------------


def test_jcs_sha384_vector_from_trustee() -> None:
    digest = hashlib.sha384(rfc8785.dumps({"b": 1, "a": "test", "c": {"d": "e"}})).hexdigest()
    assert digest == (
        "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c"
        "4597480a186427c813ca941da78870c3"
    )


def test_runtime_data_digest_is_sha384_of_sorted_compact_json() -> None:
    pub = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "AAAA", "y": "BBBB"}
    doc = runtime_data(pub, "bm9uY2U=", "")
    manual = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert manual.startswith(b'{"additional-evidence":"","nonce":"bm9uY2U=","tee-pubkey":{"alg":')
    assert runtime_data_digest(doc, "sample") == hashlib.sha384(manual).digest()
    assert runtime_data_digest(doc, "se") == hashlib.sha512(manual).digest()


def test_hardware_report_data_is_zero_padded_sample_is_not() -> None:
    digest = bytes(range(48))
    assert expected_report_data(digest, "sample") == digest
    for tee in ("sgx", "tdx", "snp"):
        assert expected_report_data(digest, tee) == digest + bytes(16)


# --- protocol messages ------------------------------------------------------------------------


def test_request_requires_exact_version() -> None:
    assert parse_request(b'{"version":"0.4.0","tee":"sample","extra-params":{}}').tee == "sample"
    for bad in ("0.3.0", "0.4.1", "1.0.0", "0.4", "v0.4.0", "0.4.0-rc1"):
        with pytest.raises(KbsError) as info:
            parse_request(json.dumps({"version": bad, "tee": "sample"}).encode())
        assert info.value.kind == "AttestationError" and info.value.status == 401


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[]", b"null", b'{"tee":"sample"}', b'{"version":4,"tee":"sample"}',
    b'{"version":"0.4.0","tee":7}', b'{"version":"0.4.0","tee":"quantum"}', b"\xff\xfe",
])
def test_malformed_requests_raise_typed_error(body: bytes) -> None:
    with pytest.raises(KbsError):
        parse_request(body)


@given(st.binary(max_size=300))
def test_request_parser_never_escapes_untyped(body: bytes) -> None:
    try:
        parse_request(body)
    except KbsError:
        pass


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


_VALID_ATTESTATION = {
    "init-data": None,
    "runtime-data": {"nonce": "n", "tee-pubkey": {"kty": "EC"}},
    "tee-evidence": {"primary_evidence": {"svn": "1"}, "additional_evidence": ""},
}
_POINTERS = [("init-data",), ("runtime-data",), ("runtime-data", "nonce"), ("runtime-data", "tee-pubkey"),
             ("tee-evidence",), ("tee-evidence", "additional_evidence"), ("tee-evidence", "primary_evidence")]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_POINTERS), _json_values)
def test_attestation_parser_mutations_raise_typed_or_parse(pointer: tuple, value: object) -> None:
    doc = json.loads(json.dumps(_VALID_ATTESTATION))
    target = doc
    for key in pointer[:-1]:
        target = target[key]
    target[pointer[-1]] = value
    try:
        parsed = parse_attestation(json.dumps(doc).encode())
    except KbsError as exc:
        assert exc.kind == "AttestationError"
    else:
        assert isinstance(parsed.nonce, str) and isinstance(parsed.tee_pubkey, dict)
        assert isinstance(parsed.additional_evidence, str)


# --- resource paths -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["default/key/1", "my-repo/type_x/tag.v1", "a/b/c.d.e", "A-/_/0"])
def test_valid_resource_paths(path: str) -> None:
    assert str(parse_resource_path(path)) == path


@pytest.mark.parametrize("path", [
    "default/key", "default/key/1/2", "../key/1", "default/../1", "default/./1", "default/key/.hidden",
    "default/key/", "/default/key/1", "default//1", "default/key/a%2Fb", "default/key/a%2e%2e",
    "default/k y/1", "default/key/ü", "default/key/a\\b", "default/key/" + "x" * 200,
])
def test_invalid_resource_paths_are_404(path: str) -> None:
    with pytest.raises(KbsError) as info:
        parse_resource_path(path)
    assert (info.value.kind, info.value.status) == ("InvalidRequestPath", 404)


@given(st.text(max_size=60))
def test_accepted_paths_never_escape_the_namespace(text: str) -> None:
    try:
        path = parse_resource_path(text)
    except KbsError:
        return
    for seg in path.segments():
        assert seg not in ("", ".", "..") and not seg.startswith(".")
        assert all(c.isascii() and (c.isalnum() or c in "_-.") for c in seg)


# --- JWE ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_jwe_ec_round_trip_and_jwcrypto_interop(curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    out = jwe.encrypt(key.public_key(), b"secret bytes")
    assert set(out) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
    header = json.loads(b64url_decode(out["protected"]))
    assert header["alg"] == "ECDH-ES+A256KW" and header["enc"] == "A256GCM"
    assert len(b64url_decode(out["encrypted_key"])) == 40
    assert jwe.decrypt(key, out) == b"secret bytes"
    token = jw_jwe.JWE()
    token.deserialize(json.dumps(out), key=jw_jwk.JWK.from_pyca(key))
    assert token.payload == b"secret bytes"


def test_jwe_rsa_oaep_256_interop() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    out = jwe.encrypt(key.public_key(), b"x" * 1000)
    assert json.loads(b64url_decode(out["protected"]))["alg"] == "RSA-OAEP-256"
    token = jw_jwe.JWE()
    token.deserialize(json.dumps(out), key=jw_jwk.JWK.from_pyca(key))
    assert token.payload == b"x" * 1000
    assert jwe.decrypt(key, out) == b"x" * 1000


def test_jwe_from_jwcrypto_decrypts_with_ours() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = jw_jwe.JWE(b"from jwcrypto", json.dumps({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}))
    token.add_recipient(jw_jwk.JWK.from_pyca(key.public_key()))
    assert jwe.decrypt(key, json.loads(token.serialize())) == b"from jwcrypto"


@pytest.mark.parametrize("member", ["protected", "encrypted_key", "iv", "ciphertext", "tag"])
def test_jwe_tamper_any_member_fails_typed(member: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    out = jwe.encrypt(key.public_key(), b"secret")
    raw = bytearray(b64url_decode(out[member]))
    raw[len(raw) // 2] ^= 1
    out[member] = b64url_encode(bytes(raw))
    with pytest.raises(jwe.JweError):
        jwe.decrypt(key, out)


def test_jwe_wrong_key_fails_typed() -> None:
    out = jwe.encrypt(ec.generate_private_key(ec.SECP256R1()).public_key(), b"s")
    with pytest.raises(jwe.JweError):
        jwe.decrypt(ec.generate_private_key(ec.SECP256R1()), out)


@settings(max_examples=150)
@given(st.dictionaries(st.sampled_from(["protected", "encrypted_key", "iv", "ciphertext", "tag", "aad"]),
                       st.text(max_size=40) | st.integers()))
def test_jwe_decrypt_malformed_never_escapes(doc: dict) -> None:
    try:
        jwe.decrypt(ec.generate_private_key(ec.SECP256R1()), doc)
    except jwe.JweError:
        pass


def test_tee_key_checks() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwk = jwk_from_public_key(key, alg="ECDH-ES+A256KW")
    assert jwe.check_recipient_jwk(jwk).public_numbers() == key.public_numbers()
    off_curve = dict(jwk, y=b64url_encode((int.from_bytes(b64url_decode(jwk["y"]), "big") ^ 1).to_bytes(32, "big")))
    for bad in (off_curve, dict(jwk, alg="RSA-OAEP-256"), dict(jwk, crv="P-192"), {"kty": "oct", "k": "AA"},
                dict(jwk, x="!!"), {"kty": "RSA", "n": b64url_encode(b"\x01" * 64), "e": "AQAB"}, "str", None):
        with pytest.raises(FormatError):
            jwe.check_recipient_jwk(bad)


# --- JWT / admin tokens ---------------------------------------------------------------------------


def _forge(header: dict, claims: dict, sig: bytes = b"") -> str:
    return ".".join([b64url_encode(json.dumps(header).encode()), b64url_encode(json.dumps(claims).encode()),
                     b64url_encode(sig)])


def test_jwt_rejects_none_confusion_and_bad_times() -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    now = time.time()
    good = {"iat": int(now), "exp": int(now) + 60}
    assert jws.verify(jws.sign(good, ed), ed.public_key(), now=now).claims == good
    attacks = [
        _forge({"alg": "none"}, good),
        _forge({"alg": "HS256"}, good, b"x" * 32),
        jws.sign(good, ec.generate_private_key(ec.SECP256R1())),  # ES256 to an EdDSA key
        jws.sign(good, ed25519.Ed25519PrivateKey.generate()),  # wrong key
        jws.sign({"iat": int(now) - 600, "exp": int(now) - 300}, ed),  # expired
        jws.sign({"iat": int(now), "exp": int(now) + 60, "nbf": int(now) + 300}, ed),
        jws.sign({"iat": int(now) + 300, "exp": int(now) + 600}, ed),
        jws.sign({"iat": int(now)}, ed),  # no exp
        jws.sign({"iat": "yesterday", "exp": int(now) + 60}, ed),
        jws.sign(good, ed, {"crit": ["x"]}),
        "a.b", "", "...", "x" * 70000,
    ]
    for token in attacks:
        with pytest.raises(jws.JwtError):
            jws.verify(token, ed.public_key(), now=now)


def test_jwt_with_a_repeated_key_is_refused_even_when_signed() -> None:
    """Two ``exp`` (or two ``alg``) mean different things to different parsers: refused, not resolved."""
    ed = ed25519.Ed25519PrivateKey.generate()
    now = int(time.time())

    def signed(header: str, claims: str) -> str:
        signing_input = b64url_encode(header.encode()) + "." + b64url_encode(claims.encode())
        return signing_input + "." + b64url_encode(ed.sign(signing_input.encode()))

    good = signed('{"alg":"EdDSA"}', f'{{"iat":{now},"exp":{now + 60}}}')
    assert jws.verify(good, ed.public_key()).claims["exp"] == now + 60
    for token in (signed('{"alg":"EdDSA"}', f'{{"iat":{now},"exp":{now - 600},"exp":{now + 60}}}'),
                  signed('{"alg":"none","alg":"EdDSA"}', f'{{"iat":{now},"exp":{now + 60}}}')):
        with pytest.raises(jws.JwtError, match="repeat|duplicate"):
            jws.verify(token, ed.public_key())


def test_jwt_signature_bit_flips_fail() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = jws.sign({"exp": time.time() + 60}, key)
    head, body, sig = token.split(".")
    raw = bytearray(b64url_decode(sig))
    for i in range(0, 64, 7):
        raw[i] ^= 0x80
        with pytest.raises(jws.JwtError):
            jws.verify(f"{head}.{body}.{b64url_encode(bytes(raw))}", key.public_key())
        raw[i] ^= 0x80


# --- EAR / policies --------------------------------------------------------------------------------


@pytest.mark.parametrize("value,status", [
    (0, "none"), (1, "none"), (-1, "none"), (2, "affirming"), (31, "affirming"), (32, "warning"),
    (95, "warning"), (96, "contraindicated"), (99, "contraindicated"), (-2, "affirming"), (-96, "contraindicated"),
])
def test_ear_tier(value: int, status: str) -> None:
    assert ear.tier(value) == status


def test_appraisal_is_worst_claim_and_rejects_bad_values() -> None:
    a = ear.appraisal_from_policy_output({"executables": 3, "hardware": 97, "configuration": 2}, "p")
    assert a.status == "contraindicated" and a.vector["hardware"] == 97 and a.vector["file-system"] == 0
    assert ear.appraisal_from_policy_output({}, "p").status == "none"
    assert ear.appraisal_from_policy_output({"trust_claims": {"executables": 2}}, "p").status == "affirming"
    for bad in ({"hardware": "2"}, {"hardware": True}, {"hardware": 1000}, ["x"]):
        with pytest.raises(PolicyError):
            ear.appraisal_from_policy_output(bad, "p")


def test_false_and_undefined_are_both_deny_and_distinguished() -> None:
    src = "package policy\nimport rego.v1\ndefault allow := false\nallow if input.ok == true\n"
    assert RegoPolicy(src, "allow").evaluate({"ok": True}) is True
    assert RegoPolicy(src, "allow").evaluate({"ok": False}) is False
    no_default = "package policy\nimport rego.v1\nallow if input.ok == true\n"
    assert RegoPolicy(no_default, "allow").evaluate({"ok": False}) is None


def test_policy_cache_compiles_once_per_data_and_is_bounded() -> None:
    cache = PolicyCache(limit=3)
    src = 'package policy\nimport rego.v1\nallow if data.plugin == "resource"\n'
    first = cache.get(src, "allow", {"plugin": "resource"})
    assert cache.get(src, "allow", {"plugin": "resource"}) is first
    assert first.evaluate({}) is True
    assert cache.get(src, "allow", {"plugin": "other"}).evaluate({}) is None
    for i in range(5):
        cache.get(src, "allow", {"plugin": str(i)})
    assert len(cache) == 3


@pytest.mark.parametrize("src", ["package other\nallow := true\n", "package policy\nallow if {", "x" * 300_000])
def test_bad_policies_raise_policy_error(src: str) -> None:
    with pytest.raises(PolicyError):
        RegoPolicy(src, "allow")


def test_reference_value_messages() -> None:
    from datetime import datetime, timedelta, timezone

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    values = parse_message(build_message({"svn": ["1"], "launch_digest": ["abcde"]}), now=now)
    assert {v.name: v.value for v in values} == {"svn": ["1"], "launch_digest": ["abcde"]}
    assert active_values(values, now=now) == {"svn": ["1"], "launch_digest": ["abcde"]}
    assert active_values(values, now=now + timedelta(days=400)) == {}
    record = values[0].record()
    assert set(record) == {"version", "name", "expiration", "value"}
    for bad in (b"{}", b"[]", b"nope", json.dumps({"version": "0.1.0", "type": "sample", "payload": "!!"}).encode(),
                json.dumps({"version": "0.1.0", "type": "swid", "payload": ""}).encode(),
                json.dumps({"version": "0.1.0", "type": "sample", "payload": "W10="}).encode(),
                build_message({"bad name!": 1})):
        with pytest.raises(FormatError):
            parse_message(bad, now=now)


# --- config ---------------------------------------------------------------------------------------------


def test_config_defaults_fail_closed(tmp_path) -> None:
    cfg = parse_config({}, str(tmp_path))
    assert cfg.insecure_allow_sample_tee is False and cfg.admin_public_key is None
    assert cfg.session_timeout_seconds == 300 and cfg.payload_limit_bytes == 2 * 1024 * 1024
    assert parse_config({"store": "sqlite:///kbs.db"}, "/etc/x").store == "sqlite:////etc/x/kbs.db"
    assert parse_config({"store": "sqlite:////var/kbs.db"}, "/etc/x").store == "sqlite:////var/kbs.db"


@pytest.mark.parametrize("doc", [
    {"listen": "nohost"}, {"listen": "1.2.3.4:99999"}, {"unknown_key": 1}, {"attestation": {"nope": 1}},
    {"insecure_allow_sample_tee": "yes"}, {"store": "mysql://x"}, {"session_timeout_seconds": 0},
    {"session_timeout_seconds": True}, {"payload_limit_bytes": 10},
    {"attestation": {"insecure_sim_trust_anchor": "root.pem"}}, {"log_level": "loud"},
    {"workers": 0}, {"workers": 65}, {"workers": "2"}, {"workers": True}, {"tls": {"certificate": "c.pem"}},
    {"tls": {"cert": "c.pem"}}, {"tls": {"cert": "c.pem", "key": "missing.pem"}},
    {"tls": {"cert": "c.pem", "key": "k.pem"}, "tls_certificate": "c.pem", "tls_private_key": "k.pem"},
])
def test_config_errors(doc: dict, tmp_path) -> None:
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    with pytest.raises(ConfigError):
        parse_config(doc, str(tmp_path))


def test_config_tls_table_and_its_old_names(tmp_path) -> None:
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    new = parse_config({"tls": {"cert": "c.pem", "key": "k.pem"}, "workers": 4}, str(tmp_path))
    old = parse_config({"tls_certificate": "c.pem", "tls_private_key": "k.pem"}, str(tmp_path))
    assert new.tls_cert == old.tls_cert == str(tmp_path / "c.pem") and new.tls_key == old.tls_key
    assert new.scheme == old.scheme == "https" and new.workers == 4 and old.workers == 1
    assert parse_config({}, str(tmp_path)).scheme == "http"


def test_all_errors_are_inclavare_errors() -> None:
    assert issubclass(jwe.JweError, InclavareError) and issubclass(jws.JwtError, InclavareError)
    assert issubclass(PolicyError, InclavareError)
    assert public_key_from_jwk(jwk_from_public_key(ed25519.Ed25519PrivateKey.generate().public_key()))


def test_client_turns_non_json_and_transport_errors_into_kbs_errors() -> None:
    """A proxy in the way answering HTML, then an unreachable broker: typed errors, no traceback."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from inclavare.services.kbs_client import KbsClient, parse_resource_uri
    from inclavare.tee.sample import SampleAttester

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = b"<html>proxy</html>" if self.path.endswith("/auth") else b"bad gateway"
            self.send_response(200 if self.path.endswith("/auth") else 502)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = KbsClient(f"http://127.0.0.1:{server.server_address[1]}", SampleAttester())
    with pytest.raises(KbsError) as info:
        client.get_token()
    assert info.value.kind == "ProtocolError"
    server.shutdown()
    server.server_close()
    with pytest.raises(KbsError) as info:
        KbsClient(f"http://127.0.0.1:{server.server_address[1]}", SampleAttester()).get_token()
    assert info.value.kind == "Unreachable"
    for uri in ("http:///a/b/c", "kbs:///a/b", "kbs:///a/../c", "kbs:///a/b/c?x=1"):
        with pytest.raises(KbsError):
            parse_resource_uri(uri)
    assert parse_resource_uri("kbs://ignored-host/default/key/1") == "default/key/1"


def test_sessions_per_client_are_capped_and_forgotten_when_expired(tmp_path) -> None:
    from inclavare.services.kbs.client_limits import TooManyRequests
    from inclavare.services.kbs.sessions import SessionMap
    from inclavare.services.kbs.store_sqlite import SqliteStore

    now = [1000.0]
    sessions = SessionMap(SqliteStore(str(tmp_path / "s.db")), 60, 100, clock=lambda: now[0], max_per_client=3)
    for _ in range(3):
        sessions.create("sample", "n", "10.0.0.1")
    with pytest.raises(TooManyRequests) as exc:
        sessions.create("sample", "n", "10.0.0.1")
    assert exc.value.status == 429 and exc.value.retry_after == 60
    sessions.create("sample", "n", "10.0.0.2")  # another client is unaffected
    now[0] += 61
    sessions.create("sample", "n", "10.0.0.3")  # purges the expired ones, their clients with them
    assert len(sessions) == 1 and sessions.count("10.0.0.1") == 0 and sessions.count("10.0.0.2") == 0


def test_token_buckets_refill_and_stay_bounded() -> None:
    from inclavare.services.kbs.client_limits import TokenBuckets, client_key

    now = [0.0]
    buckets = TokenBuckets(rate=2, burst=2, max_clients=10, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.5]
    now[0] += 0.5
    assert buckets.take("a") == 0.0
    for i in range(50):
        buckets.take(f"c{i}")
    assert len(buckets) == 10
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff") == "2001:db8::/64"
    assert client_key("::ffff:10.1.2.3") == "10.1.2.3" and client_key(None) == ""


@pytest.mark.parametrize("debug, configuration, status", [(False, 2, "affirming"), (True, 96, "contraindicated")])
def test_default_appraisal_contraindicates_an_snp_guest_with_debug_allowed(
        debug: bool, configuration: int, status: str) -> None:
    """The default resource policy denies contraindicated appraisals, so a debug SNP guest (whose
    memory the host can read) gets no secret by default; SGX/TDX debug is refused earlier, by the
    verifier."""
    from inclavare.services.kbs.attestation_service import default_attestation_policy

    output = RegoPolicy(default_attestation_policy(), "", {"reference": {}}).evaluate({"snp": {"debug": debug}})
    assert output["configuration"] == configuration
    assert ear.appraisal_from_policy_output({"configuration": output["configuration"]}, "p").status == status


@pytest.mark.parametrize("src, where", [
    ("package policy\nimport rego.v1\n\ndefault allow := false\n\nallow if {\n  input.x == 1\n", "line 6, column 10: this is unclosed"),
    ("package policy\nimport rego.v1\n# é\nallow if { input.x == }\n", "line 4, column 20: Invalid boolean operator"),
])
def test_policy_compile_errors_name_the_line_and_print_nothing(src: str, where: str, capfd: pytest.CaptureFixture[str]) -> None:
    """Not regopy's S-expression with a byte offset (`(rego-errorseq (error 11:policy.rego|64|2 …`),
    and nothing written to the server's stdout."""
    with pytest.raises(PolicyError) as caught:
        RegoPolicy(src, "allow")
    assert str(caught.value) == f"policy does not compile: {where}"
    out, err = capfd.readouterr()
    assert out == "" and err == ""
