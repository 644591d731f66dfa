"""C PAL libraries (liberpal-skeleton v1/v2/v3) selected by annotations and driven through rune.

tests/pal covers the runelet and the ABI in depth with runc directly; this checks rune wires
them: the annotation picks the library, the payload runs through the PAL inside the
container, exit codes and `rune kill` reach it, `rune exec` runs inside the enclave.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BundleFactory
from tests.enclave.conftest import Rune, measure
from tests.pal.runc_harness import Skeletons

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def skeletons(tmp_path_factory: pytest.TempPathFactory) -> Skeletons:
    return Skeletons(tmp_path_factory.mktemp("skeleton"))


def pal_bundle(bundle_factory: BundleFactory, tmp_path: Path, pal: str, args: list[str],
               etype: str = "intelSgx") -> tuple[str, Path]:
    record_dir = tmp_path / f"record-{Path(pal).stem}-{len(list(tmp_path.iterdir()))}"
    record_dir.mkdir()
    bundle = bundle_factory(args, annotations={"enclave.type": etype, "enclave.runtime.path": pal,
                                               "enclave.runtime.args": "record=/record/calls.jsonl,mode=rune",
                                               "enclave.runtime.loglevel": "debug"})
    spec = json.loads(Path(bundle, "config.json").read_text())
    spec["mounts"].append({"destination": "/record", "type": "bind", "source": str(record_dir),
                           "options": ["rbind", "rw"]})
    Path(bundle, "config.json").write_text(json.dumps(spec))
    return bundle, record_dir / "calls.jsonl"


def calls(record: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


@pytest.mark.parametrize("version", [1, 2, 3])
def test_annotations_select_the_pal_and_the_payload_runs_through_it(
        rune: Rune, skeletons: Skeletons, bundle_factory: BundleFactory, tmp_path: Path, version: int) -> None:
    bundle, record = pal_bundle(bundle_factory, tmp_path, skeletons.get(version),
                                ["/bin/sh", "-c", "echo through-the-pal; exit 3"])
    r = rune("run", "--bundle", bundle, f"pal{version}")
    assert (r.returncode, r.stdout) == (3, "through-the-pal\n"), r.stderr
    seq = calls(record)
    names = [c["call"] for c in seq]
    expected = ["pal_init", "pal_exec", "pal_destroy"] if version == 1 else \
        ["pal_get_version", "pal_init", "pal_create_process", "pal_exec", "pal_destroy"]
    assert names == expected
    init = next(c for c in seq if c["call"] == "pal_init")
    assert init["args"] == "record=/record/calls.jsonl mode=rune"  # commas became spaces
    assert init["log_level"] == "debug"
    if version == 3:
        assert (init["fd"], init["addr"]) == (-1, 0)


@pytest.mark.parametrize("version", [2, 3])
def test_rune_kill_and_exec_reach_the_enclave(
        rune: Rune, skeletons: Skeletons, bundle_factory: BundleFactory, tmp_path: Path, version: int) -> None:
    bundle, record = pal_bundle(bundle_factory, tmp_path, skeletons.get(version),
                                ["/bin/sh", "-c", "echo ready; exec sleep 300"])
    cid = f"palk{version}"
    out = rune.create(bundle, cid)
    try:
        assert rune("start", cid).returncode == 0
        for _ in range(200):
            if "ready" in out.read_text():
                break
            time.sleep(0.05)
        e = rune("exec", cid, "/bin/sh", "-c", "echo exec-in-enclave; exit 6")
        assert (e.returncode, e.stdout) == (6, "exec-in-enclave\n"), e.stderr
        creates = [c for c in calls(record) if c["call"] == "pal_create_process"]
        assert creates[-1]["argv"] == ["/bin/sh", "-c", "echo exec-in-enclave; exit 6"]
        assert rune("kill", cid, "TERM").returncode == 0
        for _ in range(300):
            if json.loads(rune("state", cid).stdout)["status"] == "stopped":
                break
            time.sleep(0.05)
        assert json.loads(rune("state", cid).stdout)["status"] == "stopped"
        assert {"call": "pal_kill", "pid": -1, "sig": signal.SIGTERM} in calls(record)
        assert calls(record)[-1]["call"] == "pal_destroy"
    finally:
        rune("delete", "--force", cid)


def test_pal_library_is_part_of_the_measurement(
        skeletons: Skeletons, bundle_factory: BundleFactory, tmp_path: Path, enclave_env: dict[str, str]) -> None:
    a, _ = pal_bundle(bundle_factory, tmp_path, skeletons.get(3), ["/bin/true"], etype="sim")
    b, _ = pal_bundle(bundle_factory, tmp_path, skeletons.get(2), ["/bin/true"], etype="sim")
    copy = tmp_path / "liberpal-copy.so"
    copy.write_bytes(Path(skeletons.get(3)).read_bytes() + b"\0")
    c, _ = pal_bundle(bundle_factory, tmp_path, str(copy), ["/bin/true"], etype="sim")
    assert len({measure(x, enclave_env) for x in (a, b, c)}) == 3


def test_unknown_runtime_name_is_refused(rune: Rune, bundle_factory: BundleFactory) -> None:
    bundle = bundle_factory(["/bin/true"], annotations={"enclave.type": "intelSgx", "enclave.runtime.path": "nosuch"})
    r = rune("run", "--bundle", bundle, "unk")
    assert r.returncode == 1 and "unknown enclave runtime 'nosuch'" in r.stderr and "sim" in r.stderr
