"""deploy/: the kustomize base and overlays, rendered with `kubectl kustomize` (kubectl's built-in
kustomize) and validated strictly against the Kubernetes API schemas of the target version
(kubernetes-validate: unknown fields, wrong types and missing required fields fail), plus the
wiring the schemas cannot see (selectors, Secrets, probes, privileges, our own CLI and config)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from inclavare.cli.main import build_parser
from inclavare.services.kbs.config import parse_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCS = DEPLOY.parent / "docs" / "kubernetes.md"
TARGET = "1.32"  # Kubernetes minor the manifests are written for (docs/kubernetes.md)
OVERLAYS = ("sim", "sgx")
# Registered by the device-plugin work (issue 11 item 1), developed in parallel with this.


@cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (whose built-in kustomize renders deploy/) is not installed")
    r = subprocess.run([kubectl, "kustomize", str(DEPLOY / target)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return tuple(d for d in yaml.safe_load_all(r.stdout) if d)


def objects(target: str, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in render(target) if d["kind"] == kind}


def pod_spec(target: str, kind: str, name: str) -> dict[str, Any]:
    return objects(target, kind)[name]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_rendered_manifests_are_valid_for_the_target_version(target: str) -> None:
    import kubernetes_validate

    docs = render(target)
    assert {d["kind"] for d in docs} >= {"Namespace", "RuntimeClass", "DaemonSet", "Deployment", "Service",
                                         "StatefulSet", "PodDisruptionBudget", "ConfigMap", "ServiceAccount"}
    for doc in docs:
        kubernetes_validate.validate(doc, TARGET, strict=True)


def test_the_validator_does_refuse_a_broken_manifest() -> None:
    import kubernetes_validate

    daemonset = objects("overlays/sim", "DaemonSet")["inclavare-node"]
    broken = yaml.safe_load(yaml.safe_dump(daemonset))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilites"] = {}  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, TARGET, strict=True)


def test_runtime_class() -> None:
    rc = objects("overlays/sim", "RuntimeClass")["rune"]
    assert rc["handler"] == "rune" and "namespace" not in rc["metadata"]
    assert rc["scheduling"]["nodeSelector"] == pod_spec("overlays/sim", "DaemonSet", "inclavare-node")["nodeSelector"]
    assert set(rc["overhead"]["podFixed"]) == {"cpu", "memory"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_drops_all_capabilities_and_adds_only_explained_ones(overlay: str) -> None:
    for kind in ("DaemonSet", "Deployment", "StatefulSet"):
        for obj in objects(f"overlays/{overlay}", kind).values():
            spec = obj["spec"]["template"]["spec"]
            for c in spec["containers"] + spec.get("initContainers", []):
                sc = c["securityContext"]
                assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
                assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged"), c["name"]
    added = {c["name"]: c["securityContext"]["capabilities"].get("add", [])
             for c in pod_spec(f"overlays/{overlay}", "DaemonSet", "inclavare-node")["containers"]}
    assert added == {"installer": ["SYS_PTRACE", "SYS_ADMIN", "SYS_CHROOT"], "agent": ["SYS_PTRACE"],
                     "device-plugin": []}
    # ... and each privilege has its reason next to it in the source.
    for source in DEPLOY.rglob("*.yaml"):
        for line in source.read_text().splitlines():
            if re.match(r"\s+- [A-Z_]+\s*(#|$)", line) or re.search(r"(hostPID|runAsUser: 0)\b", line):
                assert "#" in line or line.strip().startswith("hostPID"), f"{source.name}: {line.strip()}"
    assert "# hostPID:" in (DEPLOY / "base/node/daemonset.yaml").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_key_broker_is_highly_available(overlay: str) -> None:
    dep = objects(f"overlays/{overlay}", "Deployment")["inclavare-kbs"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["replicas"] == 2
    pdb = objects(f"overlays/{overlay}", "PodDisruptionBudget")["inclavare-kbs"]["spec"]
    svc = objects(f"overlays/{overlay}", "Service")["inclavare-kbs"]["spec"]
    assert pdb["minAvailable"] == 1 and pdb["selector"]["matchLabels"].items() <= labels.items()
    assert svc["selector"].items() <= labels.items()
    kbs = dep["spec"]["template"]["spec"]["containers"][0]
    assert kbs["readinessProbe"]["httpGet"]["scheme"] == "HTTPS" and "tcpSocket" in kbs["livenessProbe"]
    postgres = objects(f"overlays/{overlay}", "StatefulSet")["inclavare-kbs-postgres"]
    assert postgres["spec"]["serviceName"] in objects(f"overlays/{overlay}", "Service")


@pytest.fixture(scope="module")
def kbs_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real files where the Secrets and ConfigMaps put them (under a temporary root)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.x509.oid import NameOID

    from inclavare.tee.sim_authority import SimAuthority

    root = tmp_path_factory.mktemp("etc-inclavare-kbs")
    for d in ("keys", "tls", "sim", "collateral"):
        (root / d).mkdir()
    pem = serialization.Encoding.PEM
    (root / "keys/admin.pub").write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (root / "keys/token.key").write_bytes(key_pem)
    (root / "tls/tls.key").write_bytes(key_pem)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "inclavare-kbs.inclavare-system.svc")])
    import datetime as dt
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (root / "tls/tls.crt").write_bytes(cert.public_bytes(pem))
    SimAuthority.load_or_create(str(root / "sim-state")).export(str(root / "sim"))
    return root


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_key_broker_config_parses_and_every_file_it_names_is_mounted(overlay: str, kbs_files: Path) -> None:
    target = f"overlays/{overlay}"
    cm = next(d for d in render(target)
              if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("inclavare-kbs-config"))
    text = cm["data"]["kbs.toml"]
    # The broker's own parser (unknown keys are errors; named files must exist and load).
    config = parse_config(tomllib.loads(text.replace("/etc/inclavare/kbs", str(kbs_files))), str(kbs_files))
    assert config.admin_audience == "inclavare-kbs" and config.store.startswith("postgresql://")
    pod = pod_spec(target, "Deployment", "inclavare-kbs")
    assert any(v.get("configMap", {}).get("name") == cm["metadata"]["name"] for v in pod["volumes"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = [m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]
               if "secret" in volumes[m["name"]] or "configMap" in volumes[m["name"]]]
    for path in re.findall(r'"(/etc/inclavare/kbs/[^"]+)"', text):
        assert any(path == m or path.startswith(m + "/") for m in mounted), path


def test_every_secret_the_manifests_need_is_documented() -> None:
    docs = DOCS.read_text()
    for overlay in OVERLAYS:
        for doc in render(f"overlays/{overlay}"):
            for name in re.findall(r"(?:secretName|name): (inclavare-[a-z-]+)", yaml.safe_dump(doc)):
                if name.startswith(("inclavare-kbs-keys", "inclavare-kbs-tls", "inclavare-kbs-postgres",
                                    "inclavare-sim-", "inclavare-dcap-")) and "postgres" not in doc["metadata"]["name"]:
                    assert name in docs, f"{name} (overlay {overlay}) is not in docs/kubernetes.md"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inclavare_commands_in_the_manifests_are_valid(overlay: str) -> None:
    parser = build_parser()
    registered = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    unknown = set()
    for kind in ("DaemonSet", "Deployment"):
        for obj in objects(f"overlays/{overlay}", kind).values():
            spec = obj["spec"]["template"]["spec"]
            for c in spec["containers"] + spec.get("initContainers", []):
                if c["image"].split("/")[-1].split(":")[0] != "inclavare" or "command" in c:
                    continue
                if c["args"][0] not in registered:
                    unknown.add(c["args"][0])
                    continue
                parser.parse_args(c["args"])  # exits (SystemExit) on a bad flag
    assert unknown == set()
    installer = next(c for c in pod_spec(f"overlays/{overlay}", "DaemonSet", "inclavare-node")["containers"]
                     if c["name"] == "installer")
    restart = next(a for a in installer["args"] if a.startswith("--restart-containerd="))
    assert shlex.split(restart.split("=", 1)[1])[:2] == ["nsenter", "--target"]


def test_images_are_set_in_one_place() -> None:
    for overlay in OVERLAYS:
        images = {c["image"] for d in render(f"overlays/{overlay}") if d["kind"] in ("DaemonSet", "Deployment")
                  for c in d["spec"]["template"]["spec"]["containers"]}
        assert images == {"localhost/inclavare:dev"}
