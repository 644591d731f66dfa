"""The guest-pull unpacker and the pieces around it, without containers: traversal, symlink
escapes, whiteouts, caps; image references; the exec plan from an image config."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from inclavare.errors import EnclaveConfigError
from inclavare.images.guest_pull import GuestPullError, exec_plan
from inclavare.images.reference import config_id, init_data, parse_image_ref
from inclavare.images.unpack import UnpackError, UnpackLimits, ensure_dir, unpack_layer

DIGEST = "sha256:" + "ab" * 32


def _layer(*entries: tuple[str, str, bytes | str]) -> io.BytesIO:
    """A tar layer from (kind, name, data-or-linkname) with kind in file/dir/sym/link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(data, bytes)
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "link": tarfile.LNKTYPE}[kind]
            info.mode = 0o755
            if kind in ("sym", "link"):
                assert isinstance(data, str)
                info.linkname = data
            tar.addfile(info)
    buf.seek(0)
    return buf


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path / "rootfs"


def test_layers_apply_with_whiteouts_and_opaque_directories(root: Path) -> None:
    limits = UnpackLimits()
    unpack_layer(_layer(("dir", "etc", b""), ("file", "etc/a", b"1"), ("file", "etc/b", b"2"),
                        ("dir", "opt/keep", b""), ("file", "opt/keep/x", b"x"), ("sym", "bin", "usr/bin"),
                        ("file", "usr/bin/tool", b"t"), ("link", "etc/c", "etc/a")), str(root), limits)
    assert (root / "bin" / "tool").read_bytes() == b"t" and (root / "etc/c").read_bytes() == b"1"
    unpack_layer(_layer(("file", "etc/.wh.a", b""), ("file", "opt/keep/.wh..wh..opq", b""),
                        ("file", "opt/keep/y", b"y"), ("file", "./etc/b", b"new")), str(root), limits)
    assert not (root / "etc/a").exists() and (root / "etc/b").read_bytes() == b"new"
    assert sorted(os.listdir(root / "opt/keep")) == ["y"]  # opaque: lower entries gone, this layer's kept
    assert limits.entries_used == 12


@pytest.mark.parametrize("entries, message", [
    ([("file", "../escape", b"x")], "climbs out"),
    ([("file", "/abs", b"x")], "absolute path"),
    ([("file", "a/../../escape", b"x")], "climbs out"),
    ([("link", "h", "../outside/x")], "climbs out"),
    ([("link", "h", "missing")], "does not hold"),
    ([("file", ".wh..", b"")], "malformed whiteout"),
])
def test_traversal_is_refused(root: Path, entries: list[tuple[str, str, bytes | str]], message: str) -> None:
    with pytest.raises(UnpackError, match=message):
        unpack_layer(_layer(*entries), str(root), UnpackLimits())
    assert os.listdir(root.parent / "outside") == []


def test_symlinks_are_resolved_inside_the_image_never_out_of_it(root: Path) -> None:
    outside = root.parent / "outside"
    unpack_layer(_layer(("sym", "abs", str(outside)), ("sym", "rel", "../../outside"),
                        ("file", "abs/f", b"a"), ("file", "rel/g", b"b"),
                        ("sym", "loop", "loop")), str(root), UnpackLimits())
    assert os.listdir(outside) == []  # both writes landed inside the image, as a chroot sees them
    assert (root / str(outside).lstrip("/") / "f").read_bytes() == b"a"
    assert (root / "outside" / "g").read_bytes() == b"b"
    with pytest.raises(UnpackError, match="too many symbolic links"):
        unpack_layer(_layer(("file", "loop/x", b"")), str(root), UnpackLimits())
    assert ensure_dir(str(root), "/abs/sub").startswith(str(root) + "/")


def test_caps_bound_bytes_and_entries(root: Path) -> None:
    with pytest.raises(UnpackError, match="unpacks to more than"):
        unpack_layer(_layer(("file", "big", b"x" * 4096)), str(root), UnpackLimits(max_bytes=4095))
    with pytest.raises(UnpackError, match="more than 2 entries"):
        unpack_layer(_layer(("dir", "a", b""), ("dir", "b", b""), ("dir", "c", b"")), str(root),
                     UnpackLimits(max_entries=2))
    with pytest.raises(UnpackError, match="malformed"):
        unpack_layer(io.BytesIO(b"\x1f\x8b not a gzip stream"), str(root), UnpackLimits())


def test_image_references_need_a_registry_and_a_digest() -> None:
    ref = parse_image_ref(f"registry.example:5000/tenant/app@{DIGEST}")
    assert (ref.registry, ref.repository, ref.digest) == ("registry.example:5000", "tenant/app", DIGEST)
    assert f'"image" = "{ref}"' in init_data(ref) and len(config_id(ref)) == 64 and config_id(None) == bytes(64)
    for bad, message in [("registry.example/app:latest", "names no digest"),
                         (f"registry.example/app:v1@{DIGEST}", "carries a tag"),
                         (f"app@{DIGEST}", "names no registry"),
                         ("registry.example/app@sha256:ABC", "not sha256"),
                         (f"registry.example/App@{DIGEST}", "not a valid repository")]:
        with pytest.raises(EnclaveConfigError, match=message):
            parse_image_ref(bad)


def test_the_exec_plan_follows_the_image_config(root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n")
    config = {"config": {"Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["A=1"], "WorkingDir": "/app",
                         "User": "app"}}
    plan = exec_plan(json.dumps(config).encode(), str(root))
    assert (plan.args, plan.env, plan.cwd, plan.uid, plan.gid) == (("/bin/app", "--serve"), ("A=1",), "/app",
                                                                   1000, 1001)
    assert plan.encode() == b"inclavare-exec-v1\0/app\x001000\x001001\x002\0/bin/app\0--serve\x001\0A=1\0"
    for cfg, message in [({"config": {}}, "names no command"),
                         ({"config": {"Cmd": ["x"], "User": "nobody"}}, "not in its /etc/passwd"),
                         ({"config": {"Cmd": ["x"], "WorkingDir": "rel"}}, "must be absolute")]:
        with pytest.raises(GuestPullError, match=message):
            exec_plan(json.dumps(cfg).encode(), str(root))


def test_the_relay_reaches_the_key_broker_and_configured_registries_only(tmp_path: Path) -> None:
    from inclavare.services.agent.channel import Channels, Quoter, RelayTarget, registry_targets
    from inclavare.services.agent.registry import Registry
    from inclavare.services.unix_http import HttpError

    registries = registry_targets(["http://127.0.0.1:5000", "https://registry.example"])
    assert sorted(registries) == ["127.0.0.1:5000", "registry.example:443"]
    channels = Channels(Registry(str(tmp_path / "reg")), Quoter(None), RelayTarget.parse("http://127.0.0.1:8080"),
                        registries=registries)
    assert channels._relay_for("kbs:0").port == 8080
    assert channels._relay_for("registry.example:443").host == "registry.example"
    for target in ("127.0.0.1:8080", "registry.example:80", "169.254.169.254:80"):
        with pytest.raises(HttpError, match="configured image registries only") as info:
            channels._relay_for(target)
        assert info.value.status == 403


def test_the_image_setting_is_read_measured_and_sim_only() -> None:
    from inclavare.runtime.enclave_config import read_enclave_request

    ref = f"registry.example:5000/tenant/app@{DIGEST}"
    req = read_enclave_request({"process": {"env": [f"ENCLAVE_IMAGE={ref}", "A=1"]},
                                "annotations": {"enclave.type": "sim", "enclave.image": "ignored"}})
    assert req.config is not None and req.config.image == ref and req.env == ("A=1",)  # env wins, stripped
    assert req.config.as_dict()["image"] == ref  # the measured configuration names it
    plain = read_enclave_request({"annotations": {"enclave.type": "sim"}})
    assert plain.config is not None and "image" not in plain.config.as_dict()  # other measurements unchanged
    with pytest.raises(EnclaveConfigError, match="enclave.type=sim only"):
        read_enclave_request({"annotations": {"enclave.type": "intelSgx", "enclave.runtime.path": "/x.so",
                                              "enclave.image": ref}})
