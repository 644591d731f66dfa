"""Real KBS server processes on loopback ephemeral ports, for the tests in this directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from inclavare.tee.sample import SampleAttester

ADMIN_AUDIENCE = "kbs-under-test"  # admin_audience of every broker config_text writes
ALLOW_ALL = 'package policy\nimport rego.v1\ndefault allow := false\nallow if data.plugin == "resource"\n'


def write_admin_keys(directory: str) -> ed25519.Ed25519PrivateKey:
    key = ed25519.Ed25519PrivateKey.generate()
    with open(os.path.join(directory, "admin.key"), "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    with open(os.path.join(directory, "admin.pub"), "wb") as fh:
        fh.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


@dataclass
class KbsProcess:
    directory: str
    config_text: str
    admin_key: ed25519.Ed25519PrivateKey | None
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    stderr_path: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    ca: str | None = None  # CA file to verify an https broker with
    nofile: int | None = None  # RLIMIT_NOFILE of the broker (to make descriptor exhaustion reachable)

    def start(self, timeout: float = 20.0) -> KbsProcess:
        config = os.path.join(self.directory, "kbs.toml")
        with open(config, "w") as fh:
            fh.write(self.config_text)
        self.stderr_path = os.path.join(self.directory, f"kbs-{time.monotonic_ns()}.err")
        err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inclavare.cli.main", "kbs", "serve", "--config", config],
            stdout=subprocess.PIPE, stderr=err, env={**os.environ, **self.extra_env},
            preexec_fn=self._limit_fds if self.nofile else None,
        )
        err.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline().decode()
        if "listening on " not in line:
            self.proc.wait(5)
            raise RuntimeError(f"kbs did not start: {line!r} {self.stderr()}")
        self.url = line.split("listening on ", 1)[1].strip()
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/kbs/v0/", timeout=1, verify=self._verify())
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("kbs did not answer")

    def _limit_fds(self) -> None:
        import resource

        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def _verify(self) -> Any:
        import ssl

        return ssl.create_default_context(cafile=self.ca) if self.ca else True

    def stderr(self) -> str:
        with open(self.stderr_path, errors="replace") as fh:
            return fh.read()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def admin_headers(self, key: Any = None) -> dict[str, str]:
        from inclavare.services.kbs.admin_auth import make_admin_token

        return {"authorization": "Bearer " + make_admin_token(key or self.admin_key, ADMIN_AUDIENCE)}

    def admin(self, method: str, path: str, body: bytes | None = None, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + "/kbs/v0" + path, content=body,
                             headers=self.admin_headers(), timeout=30, verify=self._verify(), **kw)

    def set_resource_policy(self, text: str) -> None:
        from inclavare.crypto.b64 import b64url_encode
        import json

        r = self.admin("POST", "/resource-policy", json.dumps({"policy": b64url_encode(text.encode())}).encode())
        assert r.status_code == 200, r.text


def config_text(store: str, *, sample: bool = True, admin: bool = True, extra: str = "") -> str:
    lines = ['listen = "127.0.0.1:0"', f'store = "{store}"', f"insecure_allow_sample_tee = {str(sample).lower()}"]
    if admin:
        lines += ['admin_public_key = "admin.pub"', f'admin_audience = "{ADMIN_AUDIENCE}"']
    return "\n".join(lines) + "\n" + extra


def sample_evidence(report_data: bytes) -> dict[str, Any]:
    return SampleAttester().evidence(report_data)


def raw_http(url: str, request_line: str, headers: dict[str, str] | None = None, body: bytes = b"") -> tuple[int, bytes]:
    """Send one request with an exact (unnormalised) request target; returns (status, body)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    head = [request_line, f"Host: {parts.hostname}:{parts.port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        head.append(f"Content-Length: {len(body)}")
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


class SampleSession:
    """A protocol session driven step by step (server tests; the interop test has its own)."""

    def __init__(self, url: str, tee: str = "sample") -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        from inclavare.crypto.jwk import jwk_from_public_key

        self.url = url + "/kbs/v0"
        self.http = httpx.Client(timeout=30)
        self.tee = tee
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.pub = jwk_from_public_key(self.key.public_key(), alg="ECDH-ES+A256KW")
        self.nonce = ""

    def auth(self, version: str = "0.4.0") -> httpx.Response:
        r = self.http.post(self.url + "/auth", json={"version": version, "tee": self.tee, "extra-params": {}})
        if r.status_code == 200:
            self.nonce = r.json()["nonce"]
        return r

    def report_data(self, nonce: str | None = None, pub: dict | None = None) -> bytes:
        from inclavare.services.kbs.protocol import runtime_data, runtime_data_digest

        return runtime_data_digest(runtime_data(pub or self.pub, nonce or self.nonce, ""), self.tee)

    def attestation(self, evidence: Any = None, *, nonce: str | None = None, pub: dict | None = None) -> dict:
        if evidence is None:
            evidence = sample_evidence(self.report_data())
        return {"init-data": None,
                "runtime-data": {"nonce": nonce or self.nonce, "tee-pubkey": pub or self.pub},
                "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""}}

    def attest(self, doc: dict | None = None) -> httpx.Response:
        return self.http.post(self.url + "/attest", json=doc or self.attestation())

    def resource(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(self.url + "/resource/" + path, **kw)

    def decrypt(self, response: httpx.Response) -> bytes:
        from inclavare.crypto import jwe

        return jwe.decrypt(self.key, response.json())

    def close(self) -> None:
        self.http.close()


def error_type(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"type", "detail"}, body
    prefix = "https://github.com/confidential-containers/kbs/errors/"
    assert body["type"].startswith(prefix)
    return str(body["type"][len(prefix):])
