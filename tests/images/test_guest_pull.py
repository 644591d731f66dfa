"""Guest pull end to end (issue 14 item 2), on real components: docker-registry on loopback,
skopeo and `inclavare image encrypt`, our KBS trusting the simulated root, the node agent relaying
to the registry through a recording proxy, real runc through rune.

The enclave container names only its image (``enclave.image=REG/REPO@sha256:…``); the enclave
pulls, verifies, obtains the layer key with its own evidence, decrypts, unpacks and runs the
image's entrypoint. The key-release policy pins the image through the init-data claim."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BundleFactory
from tests.enclave.conftest import Rune
from tests.images.conftest import MARKER, PLAIN_MARKER, image_digest, policy
from tests.images.registry import Registry

pytestmark = [pytest.mark.root, pytest.mark.slow]

CAP_SYS_CHROOT = 18


@pytest.fixture
def rune_g(world: dict[str, Any], rune_bin: str, runc_root: str, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Rune:
    for k, v in world["agent"].env.items():
        monkeypatch.setenv(k, v)
    return Rune(rune_bin, runc_root, tmp_path)


RUN = os.urandom(3).hex()  # container ids unique to this run (runc names cgroups after them)


def _id(name: str) -> str:
    return f"{name}-{RUN}"


def _enclave(bundle_factory: BundleFactory, image: str, tmp_path: Path, **extra: str) -> str:
    """A bootstrap bundle: an empty root filesystem, args that are never run."""
    empty = tmp_path / f"empty-rootfs-{len(list(tmp_path.iterdir()))}"
    empty.mkdir()
    return bundle_factory(["/never/run"], rootfs=str(empty),
                          annotations={"enclave.type": "sim", "enclave.image": image, **extra})


def test_encrypted_image_is_pulled_decrypted_and_run_inside_the_enclave_only(
        world: dict[str, Any], rune_g: Rune, bundle_factory: BundleFactory, tmp_path: Path) -> None:
    kbs, proxy = world["kbs"], world["proxy"]
    kbs.set_resource_policy(policy(f'ev.init_data_claims.image == "{world["image"]}"'))
    r = rune_g("run", "--bundle", _enclave(bundle_factory, world["image"], tmp_path), _id("gp-ok"), timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.encode() == MARKER  # cat marker.txt in WorkingDir /secret: the image's entrypoint ran
    progress = [line for line in r.stderr.splitlines() if line.startswith("guest-pull: ")]
    assert any("decrypted (key kbs:///tenant/key/app)" in line for line in progress), r.stderr
    assert any("ready" in line for line in progress), r.stderr

    # the host never held the plaintext: relayed bytes, the agent's files, the registry's storage
    relayed = bytes(proxy.up) + bytes(proxy.down)
    assert len(proxy.down) > 1000 and MARKER not in relayed
    for base in (world["agent"].work, Path(world["registry"].storage)):
        for root, _dirs, files in os.walk(base):
            for name in files:
                path = os.path.join(root, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    assert MARKER not in Path(path).read_bytes(), path
    assert MARKER not in world["agent"].log.read_bytes()


@pytest.mark.parametrize("condition", [
    'ev.init_data_claims.image == "127.0.0.1:1/tenant/app@sha256:' + "0" * 64 + '"',
    'ev.sgx.mr_enclave == "' + "0" * 64 + '"',
], ids=["another-image-digest", "another-measurement"])
def test_a_policy_for_another_image_or_measurement_releases_no_key_and_nothing_runs(
        world: dict[str, Any], rune_g: Rune, bundle_factory: BundleFactory, tmp_path: Path, condition: str) -> None:
    world["kbs"].set_resource_policy(policy(condition))
    r = rune_g("run", "--bundle", _enclave(bundle_factory, world["image"], tmp_path), _id("gp-deny"), timeout=120)
    assert r.returncode != 0 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    failure = [line for line in r.stderr.splitlines() if "the workload is not started" in line]
    assert len(failure) == 1 and "PolicyDeny" in failure[0], r.stderr


def test_an_unencrypted_image_by_digest_runs_with_its_integrity_checked(
        world: dict[str, Any], rune_g: Rune, bundle_factory: BundleFactory, tmp_path: Path) -> None:
    """No key is needed (none is released); process.env is layered over the image's Env but the
    image keeps its PATH; the workload reaches its enclave agent at the usual paths."""
    world["kbs"].set_resource_policy(policy("false"))
    bundle = _enclave(bundle_factory, world["plain_image"], tmp_path)
    spec = json.loads(Path(bundle, "config.json").read_text())
    spec["process"]["env"] = ["FROM_SPEC=yes", "PATH=/bootstrap/only"]
    Path(bundle, "config.json").write_text(json.dumps(spec))
    r = rune_g("run", "--bundle", bundle, _id("gp-plain"), timeout=120)
    assert r.returncode == 0, r.stderr
    out, rest = r.stdout.encode().split(b"agent-reachable\n")
    assert out == PLAIN_MARKER + b"\nfrom-the-image yes /bin\n"
    *caps, token = rest.decode().splitlines()
    # the workload's own attestation carries the image claim too (the agent sends the init-data)
    claims = json.loads(base64.urlsafe_b64decode(json.loads(token)["token"].split(".")[1] + "=="))
    evidence = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert evidence["init_data_claims"] == {"image": world["plain_image"]}
    # rune granted CAP_SYS_CHROOT for enclave-init's chroot only: the workload holds it in no set
    sets = dict(line.split(":\t") for line in caps)
    assert len(sets) == 3 and all(not int(v, 16) >> CAP_SYS_CHROOT & 1 for v in sets.values()), sets
    assert int(sets["CapEff"], 16) != 0  # the spec's other capabilities are kept


def _push_app(world: dict[str, Any], tmp_path: Path, name: str, script: str, run_link: str = "") -> str:
    """An unencrypted busybox image running ``script``, pushed; its reference through the relay.
    ``run_link``: the image's /run is a symlink to it."""
    from inclavare.sample_images import build_busybox_rootfs, build_oci_archive

    rootfs = build_busybox_rootfs(str(tmp_path / f"{name}-rootfs"))
    if run_link:
        run = Path(rootfs, "run")
        if run.is_dir() and not run.is_symlink():
            run.rmdir()
        run.symlink_to(run_link)
    archive = build_oci_archive(rootfs, str(tmp_path / f"{name}.tar"), cmd=["/bin/sh", "-c", script], env=["PATH=/bin"])
    registry = world["registry"].address
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{archive}",
                    f"docker://{registry}/tenant/{name}:v1"], check=True, timeout=60)
    digest = image_digest(f"docker://{registry}/tenant/{name}:v1")
    return world["image"].split("/", 1)[0] + f"/tenant/{name}@{digest}"


def _with_sealed_volume(bundle: str, secrets: Path) -> None:
    spec = json.loads(Path(bundle, "config.json").read_text())
    spec["process"]["env"] = ["INCLAVARE_SEALED_FILES=/etc/secret/db"]
    spec["mounts"].append({"destination": "/etc/secret", "type": "bind", "source": str(secrets),
                           "options": ["rbind", "ro"]})
    Path(bundle, "config.json").write_text(json.dumps(spec))


def test_sealed_files_reach_the_pulled_workload_inside_its_root(
        world: dict[str, Any], rune_g: Rune, bundle_factory: BundleFactory, tmp_path: Path) -> None:
    """A mounted sealed secret ($INCLAVARE_SEALED_FILES) is opened before enclave-init enters the
    pulled image's root, into that root's /run/inclavare/unsealed; the mounted file stays sealed.
    An image whose /run is a symlink is refused (nothing is written through it)."""
    from inclavare.secrets import sealed
    from tests.enclave.test_workload_kbs import sealing_tenant

    key, kid = sealing_tenant(world["kbs"], "tenant/pulled", b"db-pa55word-for-the-pulled-app", bytes(32))
    image = _push_app(world, tmp_path, "sealed-app", "cat /run/inclavare/unsealed/etc/secret/db; echo; "
                                                     "head -c 7 /etc/secret/db")

    secrets = tmp_path / "secret-volume"
    secrets.mkdir()
    (secrets / "db").write_text(sealed.seal(sealed.Vault("kbs:///tenant/pulled/db"), key, kid))
    bundle = _enclave(bundle_factory, image, tmp_path)
    _with_sealed_volume(bundle, secrets)
    r = rune_g("run", "--bundle", bundle, _id("gp-sealed-file"), timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "db-pa55word-for-the-pulled-app\nsealed.", r.stdout
    assert (secrets / "db").read_text().startswith("sealed.")  # the host-side file keeps the sealed form

    linked = _enclave(bundle_factory, _push_app(world, tmp_path, "run-link-app", "echo ran", run_link="/tmp"),
                      tmp_path)
    _with_sealed_volume(linked, secrets)
    r = rune_g("run", "--bundle", linked, _id("gp-sealed-link"), timeout=120)
    assert r.returncode != 0 and "ran" not in r.stdout, (r.stdout, r.stderr)
    assert "the pulled image's /run is a symlink" in r.stderr, r.stderr


def test_a_tag_is_refused_at_create(world: dict[str, Any], rune_g: Rune, bundle_factory: BundleFactory,
                                    tmp_path: Path) -> None:
    via = world["image"].split("/", 1)[0]
    r = rune_g("create", "--bundle", _enclave(bundle_factory, f"{via}/tenant/app:enc", tmp_path), _id("gp-tag"))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "names no digest" in lines[0], r.stderr


def test_a_registry_the_node_does_not_relay_to_is_refused_in_one_line(
        world: dict[str, Any], rune_g: Rune, bundle_factory: BundleFactory, tmp_path: Path) -> None:
    image = f"{world['registry'].address}/tenant/app@{world['enc_digest']}"  # not through the configured proxy
    r = rune_g("run", "--bundle", _enclave(bundle_factory, image, tmp_path), _id("gp-unrelayed"), timeout=120)
    assert r.returncode == 1 and r.stdout == ""
    ours = [line for line in r.stderr.splitlines() if line.startswith(("guest-pull:", "enclave-init:"))]
    assert ours == [
        f"guest-pull: the node agent relays to no registry {world['registry'].address} (configured: "
        f"{world['image'].split('/', 1)[0]}; start it with --registry URL); the workload is not started"]


def test_a_layer_tampered_in_the_registry_is_refused(
        world: dict[str, Any], rune_g: Rune, bundle_factory: BundleFactory, tmp_path: Path) -> None:
    """Runs last in this module: it corrupts the encrypted image's layer in the registry."""
    world["kbs"].set_resource_policy(policy(f'ev.init_data_claims.image == "{world["image"]}"'))
    registry: Registry = world["registry"]
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{registry.address}/tenant/app@{world['enc_digest']}"],
                         capture_output=True, check=True, timeout=60).stdout
    layer = json.loads(raw)["layers"][0]["digest"][7:]
    data = Path(registry.storage, "docker/registry/v2/blobs/sha256", layer[:2], layer, "data")
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 1
    data.write_bytes(bytes(blob))
    r = rune_g("run", "--bundle", _enclave(bundle_factory, world["image"], tmp_path), _id("gp-tamper"), timeout=120)
    assert r.returncode != 0 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    failure = [line for line in r.stderr.splitlines() if "the workload is not started" in line]
    assert len(failure) == 1 and "does not match its digest" in failure[0], r.stderr
