"""The end-to-end demo: a secret released only to the container that proved what it runs.

1. Start a node agent and a key broker on loopback (simulated TEE, SQLite store). The key broker
   is told — explicitly, and it says so on screen — to trust the simulated TEE's root.
2. Store a secret whose resource policy requires the measurement of the demo container.
3. Run the demo container (busybox only) with rune in a simulated enclave: it asks its enclave
   agent for the secret; the enclave agent — inside the container — generates the TEE key, runs
   the KBS protocol with the container's own evidence (a quote the node agent signs over report
   data the enclave chose) and decrypts the JWE; the node agent only relays opaque bytes. The
   secret is printed, and the node agent's log and state are searched for it (not there).
4. Run a modified container (one file changed, so a different measurement): refused.
5. Print a summary; clean up; exit non-zero if any step misbehaved.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

SECRET = "the tenant's database password: correct-horse-battery-staple"
RESOURCE = "demo/secret/db-password"
BANNER = "!" * 78


class DemoFailure(InclavareError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class Demo:
    def __init__(self, work: Path, rune: str) -> None:
        self.work = work
        self.rune = rune
        self.inclavare = _bin("inclavare")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.steps: list[tuple[str, str]] = []
        self.agent_socket = str(work / "run" / "agent.sock")
        self.env = {**os.environ,
                    "INCLAVARE_AGENT_SOCKET": self.agent_socket,
                    "INCLAVARE_EPM_DIR": str(work / "epm"),
                    "INCLAVARE_RUNE_STATE": str(work / "run" / "rune"),
                    "INCLAVARE_RUNELET_DIR": str(work / "runelet")}
        self.root = str(work / "runc-root")

    def step(self, title: str, detail: str = "") -> None:
        self.steps.append((title, detail))
        print(f"[{len(self.steps)}] {title}" + (f"\n    {detail}" if detail else ""), flush=True)

    def daemon(self, name: str, cmd: list[str], ready: Callable[[], bool], timeout: float = 60) -> None:
        log = open(self.work / f"{name}.log", "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DemoFailure(f"{name} exited at start-up: {(self.work / f'{name}.log').read_text()[-800:]}")
            if ready():
                return
            time.sleep(0.1)
        raise DemoFailure(f"{name} did not become ready in {timeout:g} s")

    def admin(self, url: str, *args: str) -> None:
        r = subprocess.run([self.inclavare, "kbs", "admin", "--url", url, "--key",
                            str(self.work / "kbs" / "admin.key"), *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise DemoFailure(f"kbs admin {' '.join(args)} failed: {r.stderr.strip()}")

    def run_container(self, bundle: str, cid: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.rune, "--root", self.root, "run", "--bundle", bundle, cid],
                              capture_output=True, text=True, env=self.env, stdin=subprocess.DEVNULL, timeout=120)

    def measure(self, bundle: str) -> str:
        r = subprocess.run([self.inclavare, "measure", bundle], capture_output=True, text=True, env=self.env)
        if r.returncode != 0:
            raise DemoFailure(f"measure failed: {r.stderr.strip()}")
        return r.stdout.strip()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def run_demo(rune: str | None = None, keep: bool = False) -> int:
    if os.geteuid() != 0:
        print("demo: needs root (it runs containers with runc)", file=sys.stderr)
        return 1
    rune = rune or _bin("rune")
    work = Path(tempfile.mkdtemp(prefix="inclavare-demo-"))
    demo = Demo(work, rune)
    try:
        _run(demo)
        print("\nSummary")
        for i, (title, detail) in enumerate(demo.steps, 1):
            short = detail if len(detail) <= 72 else detail[:69] + "..."
            print(f"  {i:>2}. {title}" + (f"\n      {short}" if short else ""))
        print("demo passed")
        return 0
    except (InclavareError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr)
        for name in ("agent", "kbs"):
            log = work / f"{name}.log"
            if log.exists():
                print(f"--- last lines of the {name} log ---\n{log.read_text()[-1500:]}", file=sys.stderr)
        return 1
    finally:
        demo.stop()
        if keep:
            print(f"(kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(demo: Demo) -> None:
    from inclavare.sample_images import build_busybox_rootfs, make_bundle
    from inclavare.services.agent import client
    from inclavare.tee.sim_authority import SimAuthority

    work = demo.work
    # -- the simulated TEE and the key broker ---------------------------------------------------
    sim_state = work / "agent-state" / "sim"
    SimAuthority.load_or_create(str(sim_state)).export(str(work / "kbs" / "sim"))
    r = subprocess.run([demo.inclavare, "kbs", "keygen", "--out", str(work / "kbs")], capture_output=True, text=True)
    if r.returncode != 0:
        raise DemoFailure(f"kbs keygen failed: {r.stderr.strip()}")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    (work / "kbs" / "kbs.toml").write_text(f'''# the demo key broker: loopback only, SQLite
listen = "127.0.0.1:{port}"
store = "sqlite:///kbs.db"
admin_public_key = "admin.pub"
admin_audience = "{url}"

[attestation]
# The demo runs on the SIMULATED TEE and trusts it explicitly. Never do this in production.
insecure_sim_trust_anchor = "sim/root-ca.pem"
insecure_sim_collateral = "sim/collateral.json"
''')
    print(BANNER)
    print("!! This demo trusts the SIMULATED TEE (insecure_sim_trust_anchor): its evidence")
    print("!! is real SGX-format quotes signed by a per-installation simulated root. It shows")
    print("!! the protocol end to end; it protects NOTHING. Real deployments trust Intel/AMD.")
    print(BANNER, flush=True)

    def kbs_ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    demo.daemon("kbs", [demo.inclavare, "kbs", "serve", "--config", str(work / "kbs" / "kbs.toml")], kbs_ready)
    demo.step("key broker started", f"{url} (Trustee KBS protocol 0.4.0, SQLite store, sim root trusted explicitly)")

    def agent_ready() -> bool:
        try:
            return bool(client.call(demo.agent_socket, "GET", "/v1/health", timeout=1)["status"] == "ok")
        except InclavareError:
            return False

    demo.daemon("agent", [demo.inclavare, "agent", "serve", "--state-dir", str(work / "agent-state"),
                          "--socket", demo.agent_socket, "--kbs-url", url], agent_ready)
    demo.step("node agent started", f"{demo.agent_socket} (simulated quoting enclave, relay to the key broker)")

    # -- the workload ----------------------------------------------------------------------------
    rootfs = build_busybox_rootfs(str(work / "rootfs"))
    command = ["/run/inclavare/bin/attest", "resource", f"kbs:///{RESOURCE}"]
    bundle = make_bundle(str(work / "app"), command, rootfs=rootfs, annotations={"enclave.type": "sim"})
    measurement = demo.measure(bundle)
    demo.step("built the demo container (busybox only)", f"measurement {measurement}")

    # -- the tenant's secret and policy -------------------------------------------------------------
    policy = work / "release-to-demo.rego"
    policy.write_text(f'''package policy
import rego.v1

default allow := false

evidence := input.submods.cpu0["ear.veraison.annotated-evidence"]

# The demo runs on the simulated TEE: accept it explicitly, and only for this measurement.
allow if {{
	data.plugin == "resource"
	data["resource-path"] == {json.dumps(RESOURCE.split("/"))}
	evidence.simulated == true
	evidence.sgx.mr_enclave == "{measurement}"
}}
''')
    secret_file = work / "secret.txt"
    secret_file.write_text(SECRET)
    demo.admin(url, "resource", "set", RESOURCE, "--file", str(secret_file))
    demo.admin(url, "resource-policy", "set", str(policy))
    demo.step("stored the secret and a policy releasing it only to that measurement", f"kbs:///{RESOURCE}")

    # -- the genuine container gets the secret -------------------------------------------------------
    r = demo.run_container(bundle, "demo-app")
    if r.returncode != 0 or r.stdout.strip() != SECRET:
        raise DemoFailure(f"the demo container did not get the secret (exit {r.returncode}): "
                          f"stdout {r.stdout.strip()!r} stderr {r.stderr.strip()!r}")
    demo.step("ran the container with rune in a simulated enclave: secret released",
              f"container printed: {r.stdout.strip()}")
    relay = next((c.get("relay") for c in client.call(demo.agent_socket, "GET", "/v1/containers")
                  if c.get("id") == "demo-app"), None)
    if not relay or not relay.get("tunnels"):
        raise DemoFailure(f"the node agent relayed nothing for the container: {relay}")
    host_files = [p for p in (work / "agent-state").rglob("*") if p.is_file()] + [work / "agent.log"]
    holders = [str(p) for p in host_files if SECRET.encode() in p.read_bytes()]
    if holders:
        raise DemoFailure(f"the secret is in host files: {holders}")
    demo.step("decrypted inside the enclave: the node agent only relayed opaque bytes",
              f"the container's enclave agent made the TEE key, ran the KBS protocol and opened the JWE; "
              f"the host relayed {relay['bytes_up'] + relay['bytes_down']} bytes in {relay['tunnels']} "
              f"tunnel(s), and its log and state hold no trace of the secret")

    # -- a modified container is refused ---------------------------------------------------------------
    tampered_rootfs = str(work / "rootfs-tampered")
    shutil.copytree(rootfs, tampered_rootfs, symlinks=True)
    Path(tampered_rootfs, "etc", "motd").write_text("one changed file\n")
    tampered = make_bundle(str(work / "app-tampered"), command, rootfs=tampered_rootfs,
                           annotations={"enclave.type": "sim"})
    tampered_measurement = demo.measure(tampered)
    if tampered_measurement == measurement:
        raise DemoFailure("a changed file did not change the measurement")
    r = demo.run_container(tampered, "demo-tampered")
    if r.returncode == 0 or SECRET in r.stdout:
        raise DemoFailure("the modified container got the secret")
    if "PolicyDeny" not in r.stderr:
        raise DemoFailure(f"the modified container failed for an unexpected reason: {r.stderr.strip()}")
    demo.step("ran a modified container (one file changed): refused",
              f"measurement {tampered_measurement}; key broker said: PolicyDeny")
