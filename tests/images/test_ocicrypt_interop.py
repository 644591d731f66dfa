"""Our layer cipher against real ocicrypt (Debian skopeo's, JWE recipients): each side opens what
the other encrypted, so the layers our provider's images carry are ocicrypt's format byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from inclavare.crypto import jwe
from inclavare.errors import InclavareError
from inclavare.images.layout import Layout, decrypt_layout, encrypt_layout
from inclavare.sample_images import build_busybox_rootfs, build_oci_archive

pytestmark = pytest.mark.slow

JWE_KEYS = "org.opencontainers.image.enc.keys.jwe"


def _skopeo(*args: str) -> None:
    r = subprocess.run(["skopeo", "copy", "--quiet", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _layers(root: Path, ref: str = "latest") -> list[dict]:
    return Layout(str(root), ref).layers()


@pytest.fixture(scope="module")
def keys_and_plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ec.EllipticCurvePrivateKey, Path]:
    d = tmp_path_factory.mktemp("interop")
    key = ec.generate_private_key(ec.SECP256R1())
    (d / "priv.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    (d / "pub.pem").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    archive = build_oci_archive(build_busybox_rootfs(str(d / "rootfs")), str(d / "plain.tar"))
    _skopeo(f"oci-archive:{archive}", f"oci:{d}/plain:latest")
    return d, key, d / "plain"


def test_skopeo_decrypts_layers_we_encrypted(keys_and_plain: tuple[Path, ec.EllipticCurvePrivateKey, Path]) -> None:
    d, key, plain = keys_and_plain
    _skopeo(f"oci:{plain}:latest", f"oci:{d}/ours:latest")
    n = encrypt_layout(str(d / "ours"), "latest", JWE_KEYS,
                       lambda opts: json.dumps(jwe.encrypt(key.public_key(), opts)).encode())
    assert n == 1 and all(x["mediaType"].endswith("+encrypted") for x in _layers(d / "ours"))
    _skopeo("--decryption-key", str(d / "priv.pem"), f"oci:{d}/ours:latest", f"oci:{d}/theirs-dec:latest")
    assert [x["digest"] for x in _layers(d / "theirs-dec")] == [x["digest"] for x in _layers(plain)]


def test_we_decrypt_layers_skopeo_encrypted(keys_and_plain: tuple[Path, ec.EllipticCurvePrivateKey, Path]) -> None:
    d, key, plain = keys_and_plain
    _skopeo("--encryption-key", f"jwe:{d}/pub.pem", f"oci:{plain}:latest", f"oci:{d}/theirs:latest")
    n = decrypt_layout(str(d / "theirs"), "latest", JWE_KEYS, lambda ann: jwe.decrypt(key, json.loads(ann)))
    assert n == 1
    layers = _layers(d / "theirs")
    assert [x["digest"] for x in layers] == [x["digest"] for x in _layers(plain)]
    assert all("annotations" not in x for x in layers)


def test_a_tampered_layer_is_refused(keys_and_plain: tuple[Path, ec.EllipticCurvePrivateKey, Path]) -> None:
    d, key, plain = keys_and_plain
    _skopeo(f"oci:{plain}:latest", f"oci:{d}/tamper:latest")
    encrypt_layout(str(d / "tamper"), "latest", JWE_KEYS,
                   lambda opts: json.dumps(jwe.encrypt(key.public_key(), opts)).encode())
    layout = Layout(str(d / "tamper"), "latest")
    blob = layout.blob(layout.layers()[0]["digest"])
    data = bytearray(Path(blob).read_bytes())
    data[len(data) // 2] ^= 1
    Path(blob).write_bytes(bytes(data))
    with pytest.raises(InclavareError, match="HMAC does not match"):
        decrypt_layout(str(d / "tamper"), "latest", JWE_KEYS, lambda ann: jwe.decrypt(key, json.loads(ann)))
    assert os.path.exists(blob)
