"""Encrypting images for the tenant (issue 14 item 1) on real components: skopeo with our key
provider (cmd and gRPC forms), a docker-registry on loopback, our KBS holding the key."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from inclavare.images.annotation_packet import AnnotationPacket, unwrap
from inclavare.sample_images import build_busybox_rootfs, build_oci_archive
from inclavare.services.kbs_client import KbsClient
from inclavare.tee.sample import SampleAttester
from tests.images.registry import Registry
from tests.kbs.kbs_harness import ADMIN_AUDIENCE, ALLOW_ALL, KbsProcess, config_text, write_admin_keys

pytestmark = pytest.mark.slow

MARKER = b"tenant-marker-7f3c1e9a-plaintext-must-never-reach-the-host"
KID = "kbs:///tenant/key/busybox"
ANNOTATION = "org.opencontainers.image.enc.keys.provider.inclavare"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inclavare.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = str(tmp_path_factory.mktemp("imgenc"))
    key = write_admin_keys(d)
    kbs = KbsProcess(d, config_text("sqlite:///kbs.db"), key).start()
    kbs.set_resource_policy(ALLOW_ALL)
    os.makedirs(os.path.join(d, "registry"))
    registry = Registry(os.path.join(d, "registry")).start()
    rootfs = build_busybox_rootfs(os.path.join(d, "rootfs"), extra_files={"secret/marker.txt": MARKER})
    plain = build_oci_archive(rootfs, os.path.join(d, "plain.tar"), cmd=["/bin/cat", "/secret/marker.txt"])
    # the plaintext as skopeo stores it (it gzips the archive's tar layer, deterministically)
    subprocess.run(["skopeo", "copy", "--quiet", f"oci-archive:{plain}", f"oci:{d}/plain-oci:latest"], check=True,
                   timeout=60)
    world = {"dir": d, "kbs": kbs, "registry": registry, "plain": plain,
             "plain_layers": _oci_layers(f"{d}/plain-oci"),
             "keys": ["--kbs-url", kbs.url, "--admin-key", os.path.join(d, "admin.key"),
                      "--kbs-audience", ADMIN_AUDIENCE, "--key-dir", os.path.join(d, "tenant-keys")]}
    yield world
    registry.stop()
    kbs.stop()


def _manifest(ref: str) -> dict[str, Any]:
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", ref], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def _oci_layers(layout: str) -> list[str]:
    with open(os.path.join(layout, "index.json")) as f:
        digest = json.load(f)["manifests"][0]["digest"]
    with open(os.path.join(layout, "blobs", "sha256", digest[7:])) as f:
        return [layer["digest"] for layer in json.load(f)["layers"]]


def _decrypts_to_the_plaintext(world: dict[str, Any], src: str, name: str) -> None:
    """Tenant-side decryption (cmd form) gives back the plaintext's layer digests."""
    out = os.path.join(world["dir"], name)
    r = _cli("image", "decrypt", src, f"oci:{out}:latest", "--key-dir", world["keys"][-1], "--plain-http")
    assert r.returncode == 0, r.stderr
    assert _oci_layers(out) == world["plain_layers"]


def _one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inclavare: error: "), r.stderr
    return lines[0]


def test_cmd_form_encrypts_to_the_registry_and_decrypts_back(world: dict[str, Any]) -> None:
    reg: Registry = world["registry"]
    dst = f"docker://{reg.address}/tenant/busybox:enc"
    r = _cli("image", "encrypt", f"oci-archive:{world['plain']}", dst, "--key", KID, *world["keys"], "--plain-http")
    assert r.returncode == 0, r.stderr

    # inspect: every layer encrypted, our provider's annotation naming our key id
    r = _cli("image", "inspect", dst, "--plain-http", "--json")
    assert r.returncode == 0, r.stderr
    layers = json.loads(r.stdout)["layers"]
    assert layers and all(x["encrypted"] and x["providers"] == {"inclavare": [KID]} for x in layers)
    assert all(x["media_type"].endswith("+encrypted") for x in layers)
    assert "encrypted" in _cli("image", "inspect", dst, "--plain-http").stdout

    # the annotation is CoCo's AnnotationPacket, exactly: kid, wrapped_data, iv, wrap_type
    layer = _manifest(dst)["layers"][0]
    packet_json = base64.b64decode(layer["annotations"][ANNOTATION])
    assert list(json.loads(packet_json)) == ["kid", "wrapped_data", "iv", "wrap_type"]
    packet = AnnotationPacket.from_json(packet_json)
    assert packet.kid == KID and packet.wrap_type == "A256GCM" and len(packet.iv) == 12
    assert "org.opencontainers.image.enc.pubopts" in layer["annotations"]

    # the KBS holds the key: an attested workload obtains it and it opens the wrapped layer key
    with KbsClient(world["kbs"].url, SampleAttester()) as client:
        kek = client.get_resource(KID)
    opts = json.loads(unwrap(packet, kek))
    assert set(opts) >= {"symkey", "cipheroptions"}

    # the registry's storage never holds the plaintext marker (while the plaintext image does)
    with open(world["plain"], "rb") as f:
        assert MARKER in f.read()
    assert reg.blobs() and not any(MARKER in blob for blob in reg.blobs())

    # tenant-side decryption round-trips to the plaintext layer digests
    _decrypts_to_the_plaintext(world, dst, "dec-cmd")


def test_grpc_form_encrypts_and_the_cmd_form_decrypts(world: dict[str, Any]) -> None:
    reg: Registry = world["registry"]
    sock = os.path.join(world["dir"], "kp.sock")
    server = subprocess.Popen([sys.executable, "-m", "inclavare.cli.main", "image", "keyprovider-serve",
                               "--listen", f"unix://{sock}", *world["keys"]], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        assert server.stdout is not None
        assert "listening on unix://" in server.stdout.readline().decode()
        assert os.stat(sock).st_mode & 0o777 == 0o600
        dst = f"docker://{reg.address}/tenant/busybox:grpc"
        r = _cli("image", "encrypt", f"oci-archive:{world['plain']}", dst, "--key", KID, "--grpc",
                 f"unix://{sock}", "--plain-http")
        assert r.returncode == 0, r.stderr
        # a refusal travels back over gRPC as one line
        line = _one_line_error(_cli("image", "decrypt", dst, f"oci:{world['dir']}/g:latest", "--grpc",
                                    f"unix://{world['dir']}/absent.sock", "--plain-http"))
        assert "(gRPC)" in line
    finally:
        server.terminate()
        server.wait(10)
    assert server.returncode == 0, server.stderr.read() if server.stderr else ""
    layers = _manifest(dst)["layers"]
    assert all(x["mediaType"].endswith("+encrypted") and ANNOTATION in x["annotations"] for x in layers)
    _decrypts_to_the_plaintext(world, dst, "dec-grpc")


def test_wrong_or_missing_key_is_refused_in_one_line(world: dict[str, Any]) -> None:
    reg: Registry = world["registry"]
    src = f"docker://{reg.address}/tenant/busybox:enc"
    if not _manifest_exists(src):
        r = _cli("image", "encrypt", f"oci-archive:{world['plain']}", src, "--key", KID, *world["keys"],
                 "--plain-http")
        assert r.returncode == 0, r.stderr
    # a tenant key directory without that key id
    empty = os.path.join(world["dir"], "no-keys")
    line = _one_line_error(_cli("image", "decrypt", src, f"oci:{world['dir']}/x:latest", "--key-dir", empty,
                                "--plain-http"))
    assert f"no key {KID}" in line
    # the same key id holding another key
    other = os.path.join(world["dir"], "other-keys", "tenant", "key")
    os.makedirs(other)
    with open(os.path.join(other, "busybox"), "wb") as f:
        f.write(os.urandom(32))
    line = _one_line_error(_cli("image", "decrypt", src, f"oci:{world['dir']}/y:latest", "--key-dir",
                                os.path.dirname(os.path.dirname(other)), "--plain-http"))
    assert "wrong key" in line
    # a key id that is not a KBS resource path: refused before skopeo runs
    line = _one_line_error(_cli("image", "encrypt", f"oci-archive:{world['plain']}", src, "--key",
                                "kbs:///only/two", *world["keys"], "--plain-http"))
    assert "must look like kbs:///REPO/key/TAG" in line


def _manifest_exists(ref: str) -> bool:
    return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", ref], capture_output=True,
                          timeout=60).returncode == 0
