"""Host-compromise proof: after a secret is released to an enclave container, the host agent has
never held it, nor the enclave's private key.

A random 32-byte secret is stored in a real key broker whose policy requires the container's
measurement. The enclave container fetches it (its enclave agent runs the KBS protocol through
the node agent's relay). A recording proxy between the node agent and the broker keeps every
byte the host relayed. Then, as the cloud provider could:

* the secret is located in the workload's memory and the enclave's TEE private key in the
  **enclave agent's** memory (the positive control: the scans find what is there — and, in the
  simulated TEE, show that nothing protects that memory from root);
* neither appears — raw, hex or base64 — in the bytes the node agent relayed, its log, its state
  and run directories, or any readable mapping of its process memory (``/proc/<pid>/mem``),
  which does hold the container's id and measurement (the scan works there too).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from inclavare.crypto.b64 import b64url_decode
from inclavare.tee.sim_authority import SimAuthority
from tests.conftest import BundleFactory
from tests.enclave.conftest import Rune, measure
from tests.kbs.kbs_harness import KbsProcess, config_text, write_admin_keys
from tests.support.agent import AgentProcess
from tests.support.recording_proxy import RecordingProxy

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
SCAN_CHUNK = 1 << 22


def forms(secret: bytes) -> list[bytes]:
    """The encodings a leak could take: raw, hex (both cases), base64 and base64url at each of
    the three alignments a larger encoded blob could put it in."""
    out = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for shift in range(3):
        padded = bytes(shift) + secret
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            text = enc(padded).rstrip(b"=")
            out.append(text[(shift * 4 + 2) // 3 + 1:-2])  # a stretch fully determined by the secret
    return [f for f in out if len(f) >= 16]


def readable_memory(pid: int) -> Iterator[tuple[str, bytes]]:
    """Every readable mapping of a process (as root on the host can read it)."""
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read().splitlines()
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            name = fields[5] if len(fields) > 5 else "[anon]"
            if "r" not in fields[1] or name in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
                continue
            for offset in range(start, end, SCAN_CHUNK):
                try:
                    mem.seek(offset)
                    data = mem.read(min(SCAN_CHUNK + 64, end - offset))
                except OSError:
                    break
                yield name, data


def find_private_scalar(pid: int, public: ec.EllipticCurvePublicNumbers) -> int | None:
    """The P-256 private key whose public key is ``public``, searched in a process's writable
    memory (OpenSSL keeps it as a little-endian array of 64-bit limbs)."""
    candidates = set()
    with open(f"/proc/{pid}/maps") as f:
        writable = [line for line in f.read().splitlines() if line.split()[1].startswith("rw")]
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in writable:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except OSError:
                continue
            words = array("Q", data[:len(data) - len(data) % 8])
            # random 256-bit numbers: no limb with zero top bytes (unlike pointers and small
            # ints), and many high-bit bytes (ASCII text has none)
            wide = [w >> 48 != 0 for w in words]
            for i in range(len(words) - 3):
                if wide[i] and wide[i + 1] and wide[i + 2] and wide[i + 3]:
                    window = data[i * 8:i * 8 + 32]
                    if sum(b >= 0x80 for b in window) >= 8:
                        candidates.add(window)
    for window in candidates:
        for d in (int.from_bytes(window, "little"), int.from_bytes(window, "big")):
            if 0 < d < P256_ORDER:
                if ec.derive_private_key(d, ec.SECP256R1()).public_key().public_numbers() == public:
                    return d
    return None


def leaks(haystacks: Iterator[tuple[str, bytes]], needles: dict[str, list[bytes]]) -> list[str]:
    found = []
    for where, data in haystacks:
        for what, variants in needles.items():
            if any(v in data for v in variants):
                found.append(f"{what} in {where}")
    return found


def files_under(*dirs: str) -> Iterator[tuple[str, bytes]]:
    for top in dirs:
        for root, _, names in os.walk(top):
            for name in names:
                path = os.path.join(root, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as f:
                        yield path, f.read()


@pytest.fixture
def node(tmp_path: Path, rune_bin: str) -> Iterator[tuple[KbsProcess, AgentProcess, RecordingProxy]]:
    kbs_dir = tmp_path / "kbs"
    kbs_dir.mkdir()
    (tmp_path / "agent").mkdir()
    agent = AgentProcess(tmp_path / "agent")
    SimAuthority.load_or_create(str(agent.state_dir / "sim")).export(str(kbs_dir / "sim"))
    kbs = KbsProcess(str(kbs_dir), config_text("sqlite:///kbs.db", sample=False, extra=(
        '[attestation]\ninsecure_sim_trust_anchor = "sim/root-ca.pem"\n'
        'insecure_sim_collateral = "sim/collateral.json"\n')), write_admin_keys(str(kbs_dir))).start()
    host, port = kbs.url.removeprefix("http://").split(":")
    proxy = RecordingProxy((host, int(port)))
    agent.kbs_url = proxy.url
    agent.start()
    try:
        yield kbs, agent, proxy
    finally:
        agent.stop()
        proxy.close()
        kbs.stop()


def test_a_released_secret_and_the_enclave_key_never_reach_the_host_agent(
        node: tuple[KbsProcess, AgentProcess, RecordingProxy], rune_bin: str, runc_root: str,
        bundle_factory: BundleFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kbs, agent, proxy = node
    for k, v in agent.env.items():
        monkeypatch.setenv(k, v)
    rune = Rune(rune_bin, runc_root, tmp_path)
    secret = os.urandom(32)
    # the workload keeps the secret (as hex) in its own memory and prints a digest of it
    bundle = bundle_factory(["/bin/sh", "-c", "S=$(/run/inclavare/bin/attest resource kbs:///tenant/key/proof "
                             "| od -An -v -tx1 | tr -d ' \\n'); echo \"$S\" | sha256sum; "
                             "while :; do sleep 1; done"], annotations={"enclave.type": "sim"})
    mr = measure(bundle, agent.env)
    assert kbs.admin("POST", "/resource/tenant/key/proof", secret).status_code == 200
    kbs.set_resource_policy(
        'package policy\nimport rego.v1\ndefault allow := false\n'
        'ev := input.submods.cpu0["ear.veraison.annotated-evidence"]\n'
        f'allow if {{ data.plugin == "resource"; ev.sgx.mr_enclave == "{mr}" }}\n')
    out = rune.create(bundle, "proof")
    assert rune("start", "proof").returncode == 0
    try:
        expected = hashlib.sha256(secret.hex().encode() + b"\n").hexdigest()
        deadline = time.monotonic() + 60
        while expected not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert expected in out.read_text(), out.read_text()  # the enclave got exactly the secret

        workload = int(json.loads(rune("state", "proof").stdout)["pid"])
        # the enclave agent: the runtime folder's interpreter in the container's pid namespace
        # (its supervisor is enclave-init)
        enclave_agent = next(p for p in map(int, json.loads(rune("ps", "--format", "json", "proof").stdout))
                             if os.readlink(f"/proc/{p}/ns/pid") == os.readlink(f"/proc/{workload}/ns/pid")
                             and Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"/run/inclavare/rt/ld.so\0"))

        # the TEE public key the enclave sent, from the bytes the host relayed
        attest = proxy.up[proxy.up.index(b'"tee-pubkey"'):]
        jwk = json.loads(attest[attest.index(b"{"):attest.index(b"}") + 1])
        public = ec.EllipticCurvePublicNumbers(int.from_bytes(b64url_decode(jwk["x"]), "big"),
                                               int.from_bytes(b64url_decode(jwk["y"]), "big"), ec.SECP256R1())

        # positive control: both are inside the enclave — the secret in the workload, the key in
        # the enclave agent — and the scans find them there (simulated: root reads enclave memory)
        assert leaks(readable_memory(workload), {"secret": forms(secret)}), "the scan misses the secret"
        d = find_private_scalar(enclave_agent, public)
        assert d is not None, "the enclave's TEE key was not found in the enclave agent's memory"
        key_forms = forms(d.to_bytes(32, "big")) + [d.to_bytes(32, "little")]

        needles = {"secret": forms(secret), "enclave private key": key_forms}
        agent_pid = agent.proc.pid  # type: ignore[union-attr]
        found = leaks(iter([("relayed bytes up", bytes(proxy.up)), ("relayed bytes down", bytes(proxy.down))]), needles)
        found += leaks(files_under(str(agent.state_dir), str(Path(agent.socket).parent)), needles)
        found += leaks(iter([("agent log", agent.log.read_bytes())]), needles)
        found += leaks(readable_memory(agent_pid), needles)
        assert found == [], found

        # the scans can see: the relay carried the resource (as a JWE) and the host agent's memory
        # holds what it legitimately knows about the container
        assert b'"ciphertext"' in proxy.down and b"/kbs/v0/resource/tenant/key/proof" in proxy.up
        assert leaks(readable_memory(agent_pid), {"measurement": [mr.encode()]})
    finally:
        rune("delete", "--force", "proof")
