"""``inclavare secret seal|jwk``: the tenant's commands, against a real key broker for the KEK."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kbs_harness import ADMIN_AUDIENCE, ALLOW_ALL, KbsProcess, SampleSession, config_text

from inclavare.secrets import sealed


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inclavare.cli.main", "secret", *args], capture_output=True,
                          text=True, timeout=60)


def _key(path: Path, curve: ec.EllipticCurve) -> str:
    path.write_bytes(ec.generate_private_key(curve).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(path)


def test_seal_vault_and_envelope_with_a_kek_stored_in_the_broker(tmp_path: Path) -> None:
    from inclavare.cli.main import main

    assert main(["kbs", "keygen", "--out", str(tmp_path)]) == 0
    key = _key(tmp_path / "seal.key", ec.SECP256R1())
    jwk = _cli("jwk", "--signing-key", key)
    assert jwk.returncode == 0, jwk.stderr
    sign = ["--signing-key", key, "--kid", "kbs:///tenant/key/seal"]

    vault = _cli("seal", "--vault", "kbs:///tenant/key/db", *sign)
    assert vault.returncode == 0, vault.stderr
    secret = sealed.parse(vault.stdout.strip())
    secret.verify(json.loads(jwk.stdout))
    assert secret.payload == sealed.Vault("kbs:///tenant/key/db")

    from inclavare.services.kbs.admin_client import load_admin_signing_key

    server = KbsProcess(str(tmp_path), config_text("sqlite:///kbs.db"),
                        load_admin_signing_key(str(tmp_path / "admin.key"))).start()
    try:
        env = _cli("seal", "--envelope", "--value", "pa55word", "--kek", "kbs:///tenant/key/kek",
                   "--kbs-url", server.url, "--admin-key", str(tmp_path / "admin.key"),
                   "--audience", ADMIN_AUDIENCE, *sign)
        assert env.returncode == 0, env.stderr
        assert "stored a fresh 32-byte KEK at kbs:///tenant/key/kek" in env.stderr
        assert "pa55word" not in env.stdout
        server.set_resource_policy(ALLOW_ALL)
        s = SampleSession(server.url)
        s.auth()
        s.attest()
        kek = s.decrypt(s.resource("tenant/key/kek"))  # what an attested enclave gets
        opened = sealed.parse(env.stdout.strip())
        opened.verify(json.loads(jwk.stdout))
        assert isinstance(opened.payload, sealed.Envelope) and opened.payload.open(kek) == b"pa55word"
    finally:
        server.stop()

    (tmp_path / "kek.bin").write_bytes(bytes(32))
    local = _cli("seal", "--envelope", "--value", "x", "--kek", "kbs:///tenant/key/kek",
                 "--kek-file", str(tmp_path / "kek.bin"), *sign)
    assert local.returncode == 0, local.stderr
    payload = sealed.parse(local.stdout.strip()).payload
    assert isinstance(payload, sealed.Envelope) and payload.open(bytes(32)) == b"x"


def test_seal_errors_are_one_line(tmp_path: Path) -> None:
    key = _key(tmp_path / "seal.key", ec.SECP256R1())
    p384 = _key(tmp_path / "p384.key", ec.SECP384R1())
    (tmp_path / "short.kek").write_bytes(b"short")
    kid = ["--kid", "kbs:///t/key/seal"]
    cases = [
        (["--vault", "kbs:///a/b/c", "--signing-key", p384, *kid], "must be an EC P-256 key"),
        (["--vault", "kbs:///a/b/c", "--signing-key", str(tmp_path / "none"), *kid], "cannot read signing key"),
        (["--vault", "http://a/b/c", "--signing-key", key, *kid], "name must be a KBS resource URI"),
        (["--vault", "kbs:///a/b/c", "--signing-key", key, "--kid", "seal.jwk"], "kid must be a KBS resource URI"),
        (["--vault", "kbs:///a/b/c", "--value", "x", "--signing-key", key, *kid], "belong to --envelope"),
        (["--envelope", "--signing-key", key, *kid], "--file FILE or --value STRING"),
        (["--envelope", "--value", "x", "--signing-key", key, *kid], "needs --kek"),
        (["--envelope", "--value", "x", "--kek", "kbs:///a/b/c", "--signing-key", key, *kid], "--kek-file FILE"),
        (["--envelope", "--value", "x", "--kek", "kbs:///a/b/c", "--kek-file", str(tmp_path / "short.kek"),
          "--signing-key", key, *kid], "must be 32 bytes"),
    ]
    for args, message in cases:
        r = _cli("seal", *args)
        assert r.returncode != 0 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
