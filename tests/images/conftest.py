"""The guest-pull world shared by the runc-level and the engine-level tests (issue 14 item 2):
docker-registry on loopback, our KBS trusting the node's simulated root, the node agent relaying
to the registry through a recording proxy, and two images pushed by digest (one encrypted with
``inclavare image encrypt``, one plain). Module-scoped: a module that tampers with the registry
gets its own."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inclavare.sample_images import build_busybox_rootfs, build_oci_archive
from inclavare.tee.sim_authority import SimAuthority
from tests.images.registry import Registry
from tests.kbs.kbs_harness import ADMIN_AUDIENCE, KbsProcess, config_text, write_admin_keys
from tests.support.agent import AgentProcess
from tests.support.recording_proxy import RecordingProxy

MARKER = b"guest-pull-marker-5b9e2d71-plaintext-only-inside-the-enclave"
PLAIN_MARKER = b"guest-pull-plain-image-marker-0c4f"
KID = "kbs:///tenant/key/app"
# the unencrypted image's command: its marker, the environment it got, and its enclave agent
PLAIN_SCRIPT = ('cat /plain.txt; echo; echo "$GREETING $FROM_SPEC $PATH"; '
                '/run/inclavare/bin/attest evidence --runtime-data x | grep -q quote && echo agent-reachable; '
                'grep -E "^Cap(Eff|Prm|Bnd)" /proc/self/status; /run/inclavare/bin/attest token')


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inclavare.cli.main", *args], capture_output=True, text=True,
                          timeout=120)


def image_digest(ref: str) -> str:
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", ref], capture_output=True,
                         timeout=60, check=True).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def policy(condition: str) -> str:
    return ('package policy\nimport rego.v1\ndefault allow := false\n'
            'ev := input.submods.cpu0["ear.veraison.annotated-evidence"]\n'
            f'allow if {{ data.plugin == "resource"; ev.simulated == true; {condition} }}\n')


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, rune_bin: str) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("guest-pull")
    (work / "kbs").mkdir()
    (work / "registry").mkdir()
    (work / "agent-home").mkdir()
    agent = AgentProcess(work / "agent-home")
    SimAuthority.load_or_create(str(agent.state_dir / "sim")).export(str(work / "kbs" / "sim"))
    key = write_admin_keys(str(work / "kbs"))
    kbs = KbsProcess(str(work / "kbs"), config_text("sqlite:///kbs.db", sample=False, extra=(
        '[attestation]\ninsecure_sim_trust_anchor = "sim/root-ca.pem"\n'
        'insecure_sim_collateral = "sim/collateral.json"\n')), key).start()
    registry = Registry(str(work / "registry")).start()
    host, port = registry.address.split(":")
    proxy = RecordingProxy((host, int(port)))  # what the host relays, kept
    via = proxy.url.split("//", 1)[1]  # the registry as the enclave names it (through the recording proxy)
    agent.kbs_url = kbs.url
    agent.registries = [proxy.url]
    agent.start()

    rootfs = build_busybox_rootfs(str(work / "image-rootfs"), extra_files={"secret/marker.txt": MARKER})
    os.makedirs(os.path.join(rootfs, "app"), exist_ok=True)
    plain = build_oci_archive(rootfs, str(work / "app.tar"), cmd=["/bin/cat", "marker.txt"],
                              env=["PATH=/bin", "GREETING=from-the-image"])
    # WorkingDir /secret: the image config's directory is honoured
    subprocess.run(["skopeo", "copy", "--quiet", f"oci-archive:{plain}", f"oci:{work}/app-oci:latest"], check=True,
                   timeout=60)
    set_workdir(str(work / "app-oci"), "/secret")
    r = cli("image", "encrypt", f"oci:{work}/app-oci:latest", f"docker://{registry.address}/tenant/app:enc",
             "--key", KID, "--kbs-url", kbs.url, "--admin-key", str(work / "kbs" / "admin.key"),
             "--kbs-audience", ADMIN_AUDIENCE, "--key-dir", str(work / "tenant-keys"), "--plain-http")
    assert r.returncode == 0, r.stderr
    enc_digest = image_digest(f"docker://{registry.address}/tenant/app:enc")

    plain_rootfs = build_busybox_rootfs(str(work / "plain-rootfs"), extra_files={"plain.txt": PLAIN_MARKER})
    plain_tar = build_oci_archive(plain_rootfs, str(work / "plain.tar"), cmd=["/bin/sh", "-c", PLAIN_SCRIPT],
                                  env=["PATH=/bin", "GREETING=from-the-image", "FROM_SPEC=overridden"])
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{plain_tar}",
                    f"docker://{registry.address}/tenant/plain:v1"], check=True, timeout=60)
    plain_digest = image_digest(f"docker://{registry.address}/tenant/plain:v1")
    try:
        yield {"work": work, "kbs": kbs, "agent": agent, "registry": registry, "proxy": proxy,
               "image": f"{via}/tenant/app@{enc_digest}", "plain_image": f"{via}/tenant/plain@{plain_digest}",
               "enc_digest": enc_digest}
    finally:
        agent.stop()
        proxy.close()
        registry.stop()
        kbs.stop()


def set_workdir(layout: str, workdir: str) -> None:
    """Rewrite the (single) image's config in an OCI layout with another WorkingDir."""
    def blob(digest: str) -> str:
        return os.path.join(layout, "blobs", "sha256", digest[7:])

    def put(doc: dict[str, Any]) -> tuple[str, int]:
        data = json.dumps(doc).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        Path(blob(digest)).write_bytes(data)
        return digest, len(data)

    index = json.loads(Path(layout, "index.json").read_text())
    manifest = json.loads(Path(blob(index["manifests"][0]["digest"])).read_text())
    config = json.loads(Path(blob(manifest["config"]["digest"])).read_text())
    config["config"]["WorkingDir"] = workdir
    manifest["config"]["digest"], manifest["config"]["size"] = put(config)
    index["manifests"][0]["digest"], index["manifests"][0]["size"] = put(manifest)
    Path(layout, "index.json").write_text(json.dumps(index))
