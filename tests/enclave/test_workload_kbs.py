"""A workload's own evidence buys its secrets: the agent runs the KBS protocol for it.

`attest token` / `attest resource` inside busybox-only sim enclave containers, against a real
key broker process trusting the simulated root (explicitly) with a measurement policy.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.tee.sim_authority import SimAuthority
from tests.conftest import BundleFactory
from tests.enclave.conftest import Rune, measure, rune_with
from tests.kbs.kbs_harness import KbsProcess, config_text, write_admin_keys
from tests.support.agent import AgentProcess
from tests.support.enclave_kbs import agent_and_kbs

pytestmark = pytest.mark.root

ATTEST = "/run/inclavare/bin/attest"
SIM = {"enclave.type": "sim"}


@pytest.fixture(scope="module")
def kbs_and_agent(tmp_path_factory: pytest.TempPathFactory, rune_bin: str) -> Iterator[tuple[KbsProcess, AgentProcess]]:
    with agent_and_kbs(tmp_path_factory.mktemp("workload-kbs"), attestation=(
            'insecure_sim_trust_anchor = "sim/root-ca.pem"\ninsecure_sim_collateral = "sim/collateral.json"\n')) as both:
        yield both


@pytest.fixture
def rune_k(kbs_and_agent: tuple[KbsProcess, AgentProcess], monkeypatch: pytest.MonkeyPatch, rune_bin: str, runc_root: str,
           tmp_path: Path) -> Rune:
    return rune_with(kbs_and_agent[1], monkeypatch, rune_bin, runc_root, tmp_path)


def test_token_and_resource_released_to_the_measured_container_only(
        kbs_and_agent: tuple[KbsProcess, AgentProcess], rune_k: Rune, bundle_factory: BundleFactory) -> None:
    kbs, agent = kbs_and_agent
    good = bundle_factory([ATTEST, "resource", "kbs:///tenant/key/app"], annotations=SIM)
    other = bundle_factory([ATTEST, "resource", "kbs:///tenant/key/app"], annotations={**SIM, "enclave.runtime.args": "x"})
    mr = measure(good, agent.env)
    assert kbs.admin("POST", "/resource/tenant/key/app", b"s3cret-bytes\x00\xff").status_code == 200
    kbs.set_resource_policy(
        'package policy\nimport rego.v1\ndefault allow := false\n'
        'ev := input.submods.cpu0["ear.veraison.annotated-evidence"]\n'
        f'allow if {{ data.plugin == "resource"; ev.simulated == true; ev.sgx.mr_enclave == "{mr}" }}\n')

    import subprocess

    raw = subprocess.run([rune_k.binary, "--root", rune_k.root, "run", "--bundle", good, "kbs-good"],
                         capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    assert (raw.returncode, raw.stdout) == (0, b"s3cret-bytes\x00\xff"), raw.stderr  # binary-safe
    r = rune_k("run", "--bundle", other, "kbs-other")  # another measurement
    assert r.returncode == 1 and "PolicyDeny" in r.stderr and r.stdout == ""

    t = rune_k("run", "--bundle", bundle_factory([ATTEST, "token"], annotations=SIM), "kbs-token")
    assert t.returncode == 0, t.stderr
    token = json.loads(t.stdout)["token"]
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    evidence = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert evidence["simulated"] is True and "sgx" in evidence
    assert claims["iss"] == "CoCo-Attestation-Service"


def test_without_a_key_broker_the_answer_says_so(rune: Rune, bundle_factory: BundleFactory) -> None:
    r = rune("run", "--bundle", bundle_factory([ATTEST, "resource", "kbs:///a/b/c"], annotations=SIM), "nokbs")
    assert r.returncode == 1
    assert "no key broker is configured" in r.stderr


def test_bad_resource_uris_are_refused_in_the_container(rune: Rune, bundle_factory: BundleFactory) -> None:
    for uri in ("http://x/a/b/c", "kbs:///a/b", "kbs:///a/../c", "kbs:///a/b/c/d"):
        r = rune("run", "--bundle", bundle_factory([ATTEST, "resource", uri], annotations=SIM), "baduri")
        assert r.returncode == 2 and "kbs:///REPO/TYPE/TAG" in r.stderr, uri


def _tls_material(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it (the broker's), as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test key broker CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "ca.pem", directory / "tls.pem", directory / "tls.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_https_key_broker_pinned_by_the_image_leaves_the_relay_only_ciphertext(
        tmp_path_factory: pytest.TempPathFactory, rune_bin: str, runc_root: str, busybox_rootfs: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With an https broker whose CA the image pins (/etc/inclavare/kbs-ca.pem, measured with
    the image), TLS runs end to end from the enclave agent: the host relays TLS records only —
    no request line, path, token or JWE. An image without the CA refuses the broker."""
    import shutil
    import subprocess

    from inclavare.sample_images import make_bundle
    from tests.support.recording_proxy import RecordingProxy

    work = tmp_path_factory.mktemp("https-kbs")
    kbs_dir = work / "kbs"
    kbs_dir.mkdir()
    (work / "agent").mkdir()
    ca, cert, key = _tls_material(kbs_dir)
    agent = AgentProcess(work / "agent")
    SimAuthority.load_or_create(str(agent.state_dir / "sim")).export(str(kbs_dir / "sim"))
    kbs = KbsProcess(str(kbs_dir), config_text("sqlite:///kbs.db", sample=False, extra=(
        f'tls_certificate = "{cert}"\ntls_private_key = "{key}"\n'
        '[attestation]\ninsecure_sim_trust_anchor = "sim/root-ca.pem"\n'
        'insecure_sim_collateral = "sim/collateral.json"\n')), write_admin_keys(str(kbs_dir)), ca=str(ca)).start()
    assert kbs.url.startswith("https://127.0.0.1:")
    proxy = RecordingProxy(("127.0.0.1", int(kbs.url.rsplit(":", 1)[1])))
    agent.kbs_url = proxy.url.replace("http://", "https://")
    agent.start()
    try:
        for k, v in agent.env.items():
            monkeypatch.setenv(k, v)
        pinned = str(tmp_path / "rootfs-pinned")
        shutil.copytree(busybox_rootfs, pinned, symlinks=True)
        Path(pinned, "etc", "inclavare").mkdir(parents=True)
        shutil.copy(ca, Path(pinned, "etc", "inclavare", "kbs-ca.pem"))
        command = [ATTEST, "resource", "kbs:///tenant/key/tls"]
        good = make_bundle(str(tmp_path / "pinned"), command, rootfs=pinned, annotations=SIM)
        unpinned = make_bundle(str(tmp_path / "unpinned"), command, rootfs=busybox_rootfs, annotations=SIM)
        secret = b"only-inside-the-enclave-" + bytes(range(8))
        assert kbs.admin("POST", "/resource/tenant/key/tls", secret).status_code == 200
        kbs.set_resource_policy(
            'package policy\nimport rego.v1\ndefault allow := false\n'
            'ev := input.submods.cpu0["ear.veraison.annotated-evidence"]\n'
            f'allow if {{ data.plugin == "resource"; ev.sgx.mr_enclave == "{measure(good, agent.env)}" }}\n')

        r = subprocess.run([rune_bin, "--root", runc_root, "run", "--bundle", good, "tls-good"],
                           capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        assert (r.returncode, r.stdout) == (0, secret), r.stderr
        relayed = bytes(proxy.up) + bytes(proxy.down)
        assert proxy.up[:1] == b"\x16" and proxy.down[:1] == b"\x16"  # TLS handshake records
        for plaintext in (b"HTTP/1.1", b"/kbs/v0", b"tee-pubkey", b"ciphertext", b"Bearer", secret):
            assert plaintext not in relayed, plaintext

        bad = subprocess.run([rune_bin, "--root", runc_root, "run", "--bundle", unpinned, "tls-unpinned"],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        assert bad.returncode == 1 and bad.stdout == ""
        assert "CERTIFICATE_VERIFY_FAILED" in bad.stderr or "certificate verify failed" in bad.stderr, bad.stderr
    finally:
        agent.stop()
        proxy.close()
        kbs.stop()


SIM_RESOURCE_POLICY = ('package policy\nimport rego.v1\ndefault allow := false\n'
                       'ev := input.submods.cpu0["ear.veraison.annotated-evidence"]\n'
                       'allow if { data.plugin == "resource"; ev.simulated == true }\n')


def sealing_tenant(kbs: KbsProcess, repo: str, vault_value: bytes, kek: bytes) -> tuple[Any, str]:
    """A tenant's signing key with its JWK at ``kbs:///REPO/jwk``, a vault resource at
    ``REPO/db`` and a KEK at ``REPO/kek``, released to any sim enclave: ``(key, kid)``."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from inclavare.crypto.jwk import jwk_from_public_key

    key = ec.generate_private_key(ec.SECP256R1())
    for path, data in ((f"{repo}/jwk", json.dumps(jwk_from_public_key(key.public_key())).encode()),
                       (f"{repo}/db", vault_value), (f"{repo}/kek", kek)):
        assert kbs.admin("POST", f"/resource/{path}", data).status_code == 200
    kbs.set_resource_policy(SIM_RESOURCE_POLICY)
    return key, f"kbs:///{repo}/jwk"


def test_sealed_secrets_open_inside_the_enclave_only_when_signed_by_the_kid(
        kbs_and_agent: tuple[KbsProcess, AgentProcess], rune_k: Rune, bundle_factory: BundleFactory) -> None:
    """`attest unseal` in a sim enclave container: the enclave agent fetches the kid's JWK, checks
    the signature and opens a vault or envelope secret with its own evidence; a wrong kid or a
    forged signature is refused with one line."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from inclavare.secrets import sealed

    kek = bytes(range(32))
    key, kid = sealing_tenant(kbs_and_agent[0], "tenant/seal", b"vault-plaintext\x00\xff", kek)
    forger = ec.generate_private_key(ec.SECP256R1())
    cases = {
        "vault": (sealed.seal(sealed.Vault("kbs:///tenant/seal/db"), key, kid), 0, "vault-plaintext\x00\ufffd"),
        "envelope": (sealed.seal(sealed.envelope(b"envelope-plaintext", kek, "kbs:///tenant/seal/kek"), key, kid),
                     0, "envelope-plaintext"),
        "wrong-kid": (sealed.seal(sealed.Vault("kbs:///tenant/seal/db"), key, "kbs:///tenant/seal/nothing"), 1,
                      "cannot get the verification key kbs:///tenant/seal/nothing"),
        "forged": (sealed.seal(sealed.Vault("kbs:///tenant/seal/db"), forger, kid), 1,
                   "signature does not verify with kbs:///tenant/seal/jwk"),
        "malformed": ("sealed.e30.e30.AAAA", 1, "alg must be 'ES256'"),
    }
    for name, (text, rc, expected) in cases.items():
        r = rune_k("run", "--bundle", bundle_factory([ATTEST, "unseal", text], annotations=SIM), f"unseal-{name}",
                   errors="replace")
        assert r.returncode == rc, (name, r.stderr)
        if rc == 0:
            assert r.stdout == expected, name
        else:
            assert expected in r.stderr and r.stdout == "", (name, r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


def test_sealed_environment_variables_reach_the_workload_in_plaintext_only_inside(
        kbs_and_agent: tuple[KbsProcess, AgentProcess], rune_k: Rune, bundle_factory: BundleFactory) -> None:
    """enclave-init unseals NAME=sealed.… before the workload starts: the bundle (what the host
    and the cluster admin hold) has only the sealed string; a secret that does not open stops
    the start with one line, and the workload never runs."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from inclavare.secrets import sealed

    kek = bytes(range(1, 33))
    key, kid = sealing_tenant(kbs_and_agent[0], "tenant/env", b"db-pa55word", kek)
    vault = sealed.seal(sealed.Vault("kbs:///tenant/env/db"), key, kid)
    env_secret = sealed.seal(sealed.envelope(b"api token\n", kek, "kbs:///tenant/env/kek"), key, kid)
    script = 'printf "%s|%s|%s|" "$DB" "$TOKEN" "$PLAIN"; env | grep -c "=sealed\\." || true'
    bundle = bundle_factory(["/bin/sh", "-c", script], annotations=SIM,
                            env=["PATH=/bin", f"DB={vault}", f"TOKEN={env_secret}", "PLAIN=sealed-not"])
    config = Path(bundle, "config.json").read_text()
    assert vault in config and "db-pa55word" not in config and "api token" not in config
    r = rune_k("run", "--bundle", bundle, "env-unsealed")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "db-pa55word|api token\n|sealed-not|0\n"

    forged = sealed.seal(sealed.Vault("kbs:///tenant/env/db"), ec.generate_private_key(ec.SECP256R1()), kid)
    bad = bundle_factory(["/bin/echo", "workload ran"], annotations=SIM, env=["PATH=/bin", f"DB={forged}"])
    r = rune_k("run", "--bundle", bad, "env-forged")
    assert r.returncode == 1 and r.stdout == "", r.stderr
    assert "cannot unseal $DB" in r.stderr and "signature does not verify with kbs:///tenant/env/jwk" in r.stderr
    assert "the workload is not started" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
