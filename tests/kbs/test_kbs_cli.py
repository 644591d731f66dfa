"""``inclavare kbs`` command line: keygen, admin client, configuration errors as one line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from kbs_harness import ADMIN_AUDIENCE, KbsProcess, SampleSession, config_text

from inclavare.cli.main import main


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inclavare.cli.main", *args], capture_output=True, text=True, timeout=60)


def test_keygen_writes_ed25519_pair_with_safe_modes(tmp_path) -> None:
    assert main(["kbs", "keygen", "--out", str(tmp_path)]) == 0
    assert stat.S_IMODE(os.stat(tmp_path / "admin.key").st_mode) == 0o600
    assert b"BEGIN PUBLIC KEY" in (tmp_path / "admin.pub").read_bytes()
    assert main(["kbs", "keygen", "--out", str(tmp_path)]) == 2  # refuses to overwrite


def test_admin_cli_end_to_end(tmp_path) -> None:
    assert main(["kbs", "keygen", "--out", str(tmp_path)]) == 0
    server = KbsProcess(str(tmp_path), config_text("sqlite:///kbs.db"), None).start()
    try:
        admin = ["kbs", "admin", "--url", server.url, "--key", str(tmp_path / "admin.key"),
                 "--audience", ADMIN_AUDIENCE]
        (tmp_path / "secret.bin").write_bytes(b"\x00cli secret\xff")
        (tmp_path / "allow.rego").write_text('package policy\nimport rego.v1\ndefault allow := false\nallow if data.plugin == "resource"\n')
        (tmp_path / "att.rego").write_text("package policy\nimport rego.v1\nhardware := 2\nexecutables := 3\n")
        for args in (["resource", "set", "default/cli/1", "--file", str(tmp_path / "secret.bin")],
                     ["resource-policy", "set", str(tmp_path / "allow.rego")],
                     ["attestation-policy", "set", str(tmp_path / "att.rego")],
                     ["reference-value", "set", "svn", "1", "2"]):
            r = _cli(*admin, *args)
            assert r.returncode == 0, r.stderr
        r = _cli(*admin, "resource-policy", "get")
        assert r.stdout == (tmp_path / "allow.rego").read_text()
        r = _cli(*admin, "reference-value", "get", "svn")
        assert '"value": [\n    1,\n    2\n  ]' in r.stdout
        s = SampleSession(server.url)
        s.auth()
        s.attest()
        assert s.decrypt(s.resource("default/cli/1")) == b"\x00cli secret\xff"
        assert _cli(*admin, "resource", "delete", "default/cli/1").returncode == 0
        r = _cli(*admin, "resource", "delete", "default/cli/1")
        assert r.returncode != 0 and r.stderr.startswith("inclavare: error: ") and r.stderr.count("\n") == 1
        # wrong key: one clear line, non-zero
        assert main(["kbs", "keygen", "--out", str(tmp_path / "other")]) == 0
        r = _cli("kbs", "admin", "--url", server.url, "--audience", ADMIN_AUDIENCE,
                 "--key", str(tmp_path / "other" / "admin.key"),
                 "resource", "set", "default/cli/2", "--value", "x")
        assert r.returncode != 0 and "admin access denied" in r.stderr and r.stderr.count("\n") == 1
        r = _cli(*admin, "resource", "set", "../etc/passwd", "--value", "x")
        assert r.returncode != 0 and "invalid" in r.stderr
    finally:
        server.stop()


@pytest.mark.parametrize("config,message", [
    ('listen = "127.0.0.1:0"\nbogus = 1\n', "unknown key 'bogus'"),
    ('listen = "127.0.0.1:0"\n[attestation]\ninsecure_sim_trust_anchor = "x.pem"\n', "go together"),
    ('listen = "127.0.0.1:0"\nadmin_public_key = "missing.pub"\nadmin_audience = "k"\nstore = "sqlite:///k.db"\n',
     "cannot read admin_public_key"),
    ('listen = "127.0.0.1:0"\nadmin_public_key = "admin.pub"\n', "admin_public_key needs admin_audience"),
    ('listen = "127.0.0.1:0"\n[limits]\nrequest_timeout_seconds = 0\n', "request_timeout_seconds must be in"),
    ('listen = "127.0.0.1:0"\n[limits]\nmax_conections = 5\n', "unknown key 'max_conections'"),
    ("listen = \n", "not valid TOML"),
    ('listen = "127.0.0.1:0"\nstore = "postgresql://postgres@/postgres?host=/nonexistent-dir"\n', "PostgreSQL"),
    ('listen = "127.0.0.1:0"\nstore = "sqlite:////proc/kbs/x.db"\n', "cannot open SQLite store"),
])
def test_serve_config_errors_are_one_line(tmp_path, config: str, message: str) -> None:
    (tmp_path / "kbs.toml").write_text(config)
    r = _cli("kbs", "serve", "--config", str(tmp_path / "kbs.toml"))
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("inclavare:")]
    assert len(lines) == 1 and lines[0].startswith("inclavare: error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
