#!/usr/bin/env python3
"""Guest pull of a ~100 MB encrypted image inside a sim enclave container vs host-side decryption.

One image, encrypted once (ocicrypt's AES-256-CTR + HMAC layers), its layer keys wrapped twice: for
our KBS (the enclave's AnnotationPacket) and for a JWE recipient (what Debian's skopeo, ocicrypt
1.0.3, can open). Both sides pull the same bytes from the same docker-registry on loopback:

* enclave: `rune run` of a container naming only `enclave.image=REG/bench@sha256:…`; the enclave
  attests to the KBS, pulls through the node agent's relay, decrypts and unpacks into its tmpfs;
  the time is the pull step's own ("ready: … in X s"), and the whole container run is reported too;
* host: `skopeo copy --decryption-key priv.pem docker://REG/bench@sha256:… oci:DIR` (download,
  decrypt, write the decrypted layer; no unpacking).

The throughput is the enclave pull's (layer bytes / pull time) next to `openssl speed -evp
aes-256-ctr` (16 KiB blocks) and AES-256-CTR through `cryptography` in this process. Progress goes
to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from inclavare.sample_images import build_busybox_rootfs, build_oci_archive, make_bundle  # noqa: E402
from tests.images.registry import Registry  # noqa: E402
from tests.kbs.kbs_harness import KbsProcess, config_text, write_admin_keys  # noqa: E402
from tests.support.agent import AgentProcess  # noqa: E402

KID = "kbs:///bench/key/app"
POLICY = ('package policy\nimport rego.v1\ndefault allow := false\n'
          'allow if { data.plugin == "resource"; '
          'input.submods.cpu0["ear.veraison.annotated-evidence"].simulated == true }\n')


def encrypt_twice(layout: str, kek: bytes, work: Path) -> None:
    """Encrypt the layout's layers once; wrap each layer key for a JWE recipient and for the KBS."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from inclavare.crypto import jwe
    from inclavare.crypto.b64 import b64std_encode
    from inclavare.images.annotation_packet import wrap
    from inclavare.images.layout import Layout, encrypt_layout

    key = ec.generate_private_key(ec.SECP256R1())
    (work / "priv.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    opts: list[bytes] = []

    def jwe_wrap(private_opts: bytes) -> bytes:
        opts.append(private_opts)
        return json.dumps(jwe.encrypt(key.public_key(), private_opts)).encode()

    encrypt_layout(layout, "latest", "org.opencontainers.image.enc.keys.jwe", jwe_wrap)
    lay = Layout(layout, "latest")
    for layer, private_opts in zip(lay.layers(), opts):
        layer["annotations"]["org.opencontainers.image.enc.keys.provider.inclavare"] = b64std_encode(
            wrap(KID, kek, private_opts).to_json())
    lay.save()


def openssl_mb_s() -> float:
    out = subprocess.run(["openssl", "speed", "-evp", "aes-256-ctr", "-bytes", "16384", "-seconds", "2"],
                         capture_output=True, text=True, timeout=60).stdout
    line = next(ln for ln in out.splitlines() if ln.lower().startswith("aes-256-ctr"))
    return float(re.findall(r"([0-9.]+)k", line)[-1]) * 1000 / 1e6


def cryptography_mb_s(mb: int = 256) -> float:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    data = os.urandom(1 << 20)
    ctr = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).decryptor()
    t0 = time.perf_counter()
    for _ in range(mb):
        ctr.update(data)
    return mb * (1 << 20) / 1e6 / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=100, help="MB of (incompressible) files in the image")
    ap.add_argument("--runs", type=int, default=3, help="pairs of enclave pull / host decrypt")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (runc)")
    rune = str(Path(sys.executable).parent / "rune")
    work = Path(tempfile.mkdtemp(prefix="bench-image-pull-"))
    for d in ("kbs", "registry", "agent"):
        (work / d).mkdir()
    agent = AgentProcess(work / "agent")
    kbs = registry = None
    try:
        from inclavare.tee.sim_authority import SimAuthority

        SimAuthority.load_or_create(str(agent.state_dir / "sim")).export(str(work / "kbs" / "sim"))
        kbs = KbsProcess(str(work / "kbs"), config_text("sqlite:///kbs.db", sample=False, extra=(
            '[attestation]\ninsecure_sim_trust_anchor = "sim/root-ca.pem"\n'
            'insecure_sim_collateral = "sim/collateral.json"\n')), write_admin_keys(str(work / "kbs"))).start()
        kbs.set_resource_policy(POLICY)
        kek = os.urandom(32)
        assert kbs.admin("POST", "/resource/bench/key/app", kek).status_code == 200
        registry = Registry(str(work / "registry")).start()
        agent.kbs_url = kbs.url
        agent.registries = [f"http://{registry.address}"]
        agent.start()

        print(f"building and encrypting an image with {args.mb} MB of files", file=sys.stderr)
        rootfs = build_busybox_rootfs(str(work / "rootfs"))
        Path(rootfs, "data").mkdir()
        for i in range(args.mb):
            Path(rootfs, "data", f"blob{i:03d}.bin").write_bytes(os.urandom(1 << 20))
        archive = build_oci_archive(rootfs, str(work / "image.tar"), cmd=["/bin/true"])
        shutil.rmtree(rootfs)
        subprocess.run(["skopeo", "copy", "--quiet", f"oci-archive:{archive}", f"oci:{work}/layout:latest"],
                       check=True, timeout=300)
        os.unlink(archive)
        encrypt_twice(str(work / "layout"), kek, work)
        dest = f"docker://{registry.address}/bench/app:enc"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{work}/layout:latest", dest],
                       check=True, timeout=300)
        shutil.rmtree(work / "layout")
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", dest], capture_output=True,
                             check=True, timeout=60).stdout
        import hashlib

        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        layer_bytes = sum(layer["size"] for layer in json.loads(raw)["layers"])
        image = f"{registry.address}/bench/app@{digest}"
        empty = work / "empty-rootfs"
        empty.mkdir()
        bundle = make_bundle(str(work / "bundle"), ["/never/run"], rootfs=str(empty),
                             annotations={"enclave.type": "sim", "enclave.image": image})
        env = {**os.environ, **agent.env}
        root = str(work / "runc-root")

        def enclave(i: int) -> tuple[float, float]:
            t0 = time.perf_counter()
            r = subprocess.run([rune, "--root", root, "run", "--bundle", bundle, f"pull{i}"], env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
            total = time.perf_counter() - t0
            if r.returncode != 0:
                raise SystemExit(f"enclave pull failed: {r.stderr[-800:]}")
            ready = re.search(r"ready: \d+ bytes in ([0-9.]+) s", r.stderr)
            assert ready, r.stderr
            return float(ready.group(1)), total

        def host(i: int) -> float:
            out = work / f"host-{i}"
            t0 = time.perf_counter()
            subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--decryption-key",
                            str(work / "priv.pem"), f"docker://{image}", f"oci:{out}:latest"], check=True,
                           timeout=600, capture_output=True)
            seconds = time.perf_counter() - t0
            shutil.rmtree(out)
            return seconds

        pulls, totals, hosts = [], [], []
        for i in range(args.runs + 1):  # the first pair warms caches (and the runtime folder)
            if i % 2:
                h = host(i)
                p, t = enclave(i)
            else:
                p, t = enclave(i)
                h = host(i)
            print(f"run {i}: enclave pull {p:.2f} s (container {t:.2f} s), host skopeo decrypt {h:.2f} s",
                  file=sys.stderr)
            if i:
                pulls.append(p)
                totals.append(t)
                hosts.append(h)
        pull_s, host_s = statistics.median(pulls), statistics.median(hosts)
        result = {
            "image_mb": round(layer_bytes / 1e6, 1),
            "enclave_pull_s": round(pull_s, 3),
            "enclave_container_s": round(statistics.median(totals), 3),
            "host_decrypt_s": round(host_s, 3),
            "ratio": round(pull_s / host_s, 3),
            "container_ratio": round(statistics.median(totals) / host_s, 3),
            "enclave_throughput_mb_s": round(layer_bytes / 1e6 / pull_s, 1),
            "openssl_aes_256_ctr_mb_s": round(openssl_mb_s(), 1),
            "cryptography_aes_256_ctr_mb_s": round(cryptography_mb_s(), 1),
            "runs": args.runs,
            "target_ratio": 1.5,
        }
        print(json.dumps(result))
        return 0
    finally:
        agent.stop()
        if registry:
            registry.stop()
        if kbs:
            kbs.stop()
        subprocess.run(["runc", "--root", str(work / "runc-root"), "list", "-q"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
