"""The runelet runtime folder (contents, idempotence, content keys, self-sufficiency) and
the launch planner's spec rewrite."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inclavare.errors import ConfigError
from inclavare.runtime.pal import container_layout as layout
from inclavare.runtime.pal.runelet_config import RuneletConfig
from inclavare.runtime.pal.runelet_rt import ensure_runelet_rt, plan_runelet_launch, runelet_exec_args
from inclavare.runtime.pal.runelet_launch import add_device_nodes
from inclavare.sample_images import default_spec

from .runc_harness import Skeletons


def _files(rt_dir: str) -> set[str]:
    out = set()
    for top, _, names in os.walk(rt_dir):
        out.update(os.path.relpath(os.path.join(top, n), rt_dir) for n in names)
    return out


def test_folder_holds_exactly_the_curated_slice(rt_dir: str) -> None:
    files = _files(rt_dir)
    assert {"ld.so", "bin/python", "MANIFEST.json"} <= files
    libs = set(os.listdir(os.path.join(rt_dir, "lib")))
    assert {"libc.so.6", "libffi.so.8"} <= libs
    assert not any("site-packages" in f or "/test/" in f or "tkinter" in f or "idlelib" in f
                   or "ensurepip" in f for f in files)
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = f"lib/{pyver}/"
    assert f"{stdlib}os.py" in files and f"{stdlib}encodings/utf_8.py" in files
    assert any(f.startswith(f"{stdlib}lib-dynload/_ctypes.") for f in files)
    assert f"{stdlib}inclavare/runtime/pal/runelet_init.py" in files
    # the planner and the folder builder are host-only: not in the container
    assert f"{stdlib}inclavare/runtime/pal/runelet_rt.py" not in files
    manifest = json.loads(Path(rt_dir, "MANIFEST.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    assert listed == {f for f in files if not f.endswith((".pyc", "MANIFEST.json"))}


def test_folder_is_read_only(rt_dir: str) -> None:
    for top, dirs, names in os.walk(rt_dir):
        for name in dirs + names:
            mode = os.stat(os.path.join(top, name)).st_mode
            assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), name


def test_the_folder_alone_runs_the_runelet(rt_dir: str) -> None:
    cmd = [os.path.join(rt_dir, "ld.so"), "--library-path", os.path.join(rt_dir, "lib"),
           os.path.join(rt_dir, "bin/python"), *layout.INTERPRETER_ARGS[:-2], "-c",
           "import json, sys, inclavare.runtime.pal.runelet_init as m; "
           "print(m.__file__); print(json.dumps(sys.path))"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={}, check=True).stdout
    assert out.startswith(rt_dir)
    assert all(p.startswith(rt_dir) for p in json.loads(out.splitlines()[1]) if p)


def test_ensure_is_idempotent_and_fast(rt_cache: Path, rt_dir: str) -> None:
    started = time.monotonic()
    assert ensure_runelet_rt(str(rt_cache)) == rt_dir
    assert time.monotonic() - started < 0.5


def test_content_key_changes_with_pal_libraries(rt_cache: Path, rt_dir: str, skeletons: Skeletons) -> None:
    with_pal = ensure_runelet_rt(str(rt_cache), pal_libraries=[skeletons.get(2)])
    # the skeleton needs only libc, already present: same content, same folder
    assert with_pal == rt_dir


def test_a_changed_source_rebuilds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import inclavare.runtime.pal.runelet_rt as rt_mod

    first = ensure_runelet_rt(str(tmp_path))
    fake_pkg = tmp_path / "pkg"
    src_pkg = Path(rt_mod._package_parent()) / "inclavare"
    import shutil

    shutil.copytree(src_pkg, fake_pkg / "inclavare",
                    ignore=shutil.ignore_patterns("__pycache__"))
    runelet = fake_pkg / "inclavare/runtime/pal/runelet.py"
    runelet.write_text(runelet.read_text() + "\n# upgraded\n")
    monkeypatch.setattr(rt_mod, "_package_parent", lambda: str(fake_pkg))
    second = ensure_runelet_rt(str(tmp_path))
    assert second != first and os.path.isdir(first)
    text = Path(second, f"lib/python{sys.version_info.major}.{sys.version_info.minor}",
                "inclavare/runtime/pal/runelet.py").read_text()
    assert text.endswith("# upgraded\n")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".build-")]


# -- the planner --------------------------------------------------------------------------

def _spec() -> dict:
    spec = default_spec(["sh", "-c", "echo hi"], env=["PATH=/bin", "LD_PRELOAD=/evil.so"])
    spec["process"]["cwd"] = "/srv"
    spec["process"]["user"] = {"uid": 1000, "gid": 1001}
    return spec


def test_plan_for_a_c_pal(rt_dir: str, skeletons: Skeletons, tmp_path: Path) -> None:
    spec = _spec()
    pal = skeletons.get(3)
    plan_runelet_launch(spec, runtime_ref=pal, runtime_args="a b", log_level="debug",
                        rt_dir=rt_dir, private_dir=str(tmp_path / "private"))
    process = spec["process"]
    assert process["args"] == layout.runelet_command("init", layout.CONFIG)
    assert process["env"] == []  # nothing of the payload's environment reaches the runelet
    assert process["cwd"] == "/srv"
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert mounts[layout.RT]["source"] == rt_dir
    assert mounts[layout.PAL]["source"] == pal
    for dest in (layout.RT, layout.PAL, layout.CONFIG):
        assert {"ro", "nosuid", "nodev"} <= set(mounts[dest]["options"])
    assert mounts[layout.RUN]["type"] == "tmpfs"
    assert {"mode=0700", "uid=1000", "gid=1001", "noexec"} <= set(mounts[layout.RUN]["options"])
    assert mounts[layout.ROOT]["type"] == "tmpfs"
    config_path = mounts[layout.CONFIG]["source"]
    st = os.stat(config_path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o400, 1000, 1001)
    config = RuneletConfig.from_json(Path(config_path).read_bytes())
    assert config.runtime.kind == "pal" and config.runtime.path == layout.PAL
    assert config.payload.args == ("sh", "-c", "echo hi")
    assert config.payload.env == ("PATH=/bin", "LD_PRELOAD=/evil.so")
    assert (config.args, config.log_level, config.socket) == ("a b", "debug", layout.SOCKET)


def test_plan_for_a_python_runtime_maps_user_namespace_ids(rt_dir: str, tmp_path: Path) -> None:
    spec = _spec()
    spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    plan_runelet_launch(spec, runtime_ref="sim", runtime_args="", log_level="info",
                        rt_dir=rt_dir, private_dir=str(tmp_path))
    assert not any(m["destination"] == layout.PAL for m in spec["mounts"])
    config_file = tmp_path / "runelet.json"
    assert (config_file.stat().st_uid, config_file.stat().st_gid) == (101000, 201001)
    config = RuneletConfig.from_json(config_file.read_bytes())
    assert config.runtime.target == "inclavare.runtime.pal.sim:SimEnclaveRuntime"


@pytest.mark.parametrize("runtime", ["occlum", "gramine"])
def test_plan_fails_closed_without_sgx(rt_dir: str, tmp_path: Path, runtime: str) -> None:
    if os.path.exists("/dev/sgx_enclave"):
        pytest.skip("this host has SGX")
    with pytest.raises(ConfigError, match=f"/dev/sgx_enclave, needed by enclave runtime {runtime}, "
                                          "is not present"):
        plan_runelet_launch(_spec(), runtime_ref=runtime, runtime_args="", log_level="info",
                            rt_dir=rt_dir, private_dir=str(tmp_path))


def test_device_nodes_are_declared_with_cgroup_rules() -> None:
    spec = _spec()
    add_device_nodes(spec, ["/dev/null"], "test")
    st = os.stat("/dev/null")
    assert {"path": "/dev/null", "type": "c", "major": os.major(st.st_rdev),
            "minor": os.minor(st.st_rdev), "fileMode": 0o666, "uid": 0, "gid": 0} in spec["linux"]["devices"]
    assert spec["linux"]["resources"]["devices"][-1]["allow"] is True
    with pytest.raises(ConfigError, match="not a device node"):
        add_device_nodes(spec, ["/etc/passwd"], "test")


def test_plan_refusals(rt_dir: str, skeletons: Skeletons, tmp_path: Path) -> None:
    private = str(tmp_path)
    with pytest.raises(ConfigError, match="unknown enclave runtime"):
        plan_runelet_launch(_spec(), runtime_ref="nope", runtime_args="", log_level="info",
                            rt_dir=rt_dir, private_dir=private)
    with pytest.raises(ConfigError, match="does not exist"):
        plan_runelet_launch(_spec(), runtime_ref="/no/pal.so", runtime_args="", log_level="info",
                            rt_dir=rt_dir, private_dir=private)
    with pytest.raises(ConfigError, match="not a runelet runtime folder"):
        plan_runelet_launch(_spec(), runtime_ref="sim", runtime_args="", log_level="info",
                            rt_dir=str(tmp_path), private_dir=private)
    spec = _spec()
    spec["mounts"].append({"destination": "/.inclavare/x", "type": "bind", "source": "/tmp"})
    with pytest.raises(ConfigError, match="reserved"):
        plan_runelet_launch(spec, runtime_ref="sim", runtime_args="", log_level="info",
                            rt_dir=rt_dir, private_dir=private)
    spec = _spec()
    spec["process"]["args"] = []
    with pytest.raises(ConfigError, match="must not be empty"):
        plan_runelet_launch(spec, runtime_ref="sim", runtime_args="", log_level="info",
                            rt_dir=rt_dir, private_dir=private)


def test_plan_refuses_a_pal_whose_libraries_the_folder_lacks(rt_dir: str, tmp_path: Path) -> None:
    import shutil

    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc)")
    src = tmp_path / "p.c"
    src.write_text("#include <zlib.h>\nint pal_init(void *a) { return zlibVersion() ? 0 : -1; }\n"
                   "int pal_exec(void) { return 0; }\nint pal_destroy(void) { return 0; }\n")
    pal = tmp_path / "liberpal-z.so"
    if subprocess.run([cc, "-shared", "-fPIC", "-o", str(pal), str(src), "-lz"],
                      capture_output=True).returncode != 0:
        pytest.skip("zlib development files not installed")
    if "libz.so.1" in os.listdir(os.path.join(rt_dir, "lib")):
        pytest.skip("this interpreter's folder already carries libz")
    with pytest.raises(ConfigError, match="needs libz.so.1, which the runelet runtime folder"):
        plan_runelet_launch(_spec(), runtime_ref=str(pal), runtime_args="", log_level="info",
                            rt_dir=rt_dir, private_dir=str(tmp_path / "p"))


def test_exec_args() -> None:
    args = runelet_exec_args(["ls", "-l"], env=["A=1", "B=2"], cwd="/srv")
    assert args[:4] == [layout.LOADER, "--library-path", layout.LIBDIR, layout.PYTHON]
    tail = args[args.index("exec"):]
    assert tail == ["exec", "--socket", layout.SOCKET, "--cwd", "/srv", "--env", "A=1", "--env", "B=2",
                    "--", "ls", "-l"]
    assert runelet_exec_args(["true"])[-3:] == [layout.SOCKET, "--", "true"]
    with pytest.raises(ConfigError):
        runelet_exec_args([])
    with pytest.raises(ConfigError):
        runelet_exec_args(["x"], cwd="relative")
