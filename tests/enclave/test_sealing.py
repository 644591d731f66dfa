"""Data sealed to the enclave's identity, end to end: `attest seal|unseal` in real sim enclave
containers (rune, runc), the key from the node agent's simulated EGETKEY over the container's
own channel, the sealed blob on a host directory bind-mounted into the containers.

Every container runs the same entrypoint (``sh -c 'eval "$CMD"'``; the environment is not
measured), so the measurement changes only with the identity runtime args.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from tests.conftest import BundleFactory
from tests.enclave.conftest import Rune, measure
from tests.enclave.test_identity import (CHANNEL_REFUSED, HOST_SOCKET, SLEEP, Containers, assert_refused, call,
                                         containers, python_rootfs)
from tests.support.agent import AgentProcess

pytestmark = pytest.mark.root
__all__ = ["containers", "python_rootfs"]  # fixtures used below

ATTEST = "/run/inclavare/bin/attest"
SIGNER = "5e" * 32
V2 = f"mrsigner={SIGNER},isvprodid=7,isvsvn=2"
KEY_REQUEST = json.dumps({"policy": "mrenclave", "key_id": base64.b64encode(bytes(32)).decode()})


def sealing_bundle(bundle_factory: BundleFactory, data: Path, args: str, cmd: str) -> str:
    bundle = bundle_factory(["/bin/sh", "-c", 'eval "$CMD"'], env=["PATH=/bin", f"CMD={cmd}"],
                            annotations={"enclave.type": "sim", "enclave.runtime.args": args})
    spec = json.loads(Path(bundle, "config.json").read_text())
    spec["mounts"].append({"destination": "/data", "type": "bind", "source": str(data),
                           "options": ["rbind", "rw", "nosuid", "nodev"]})
    Path(bundle, "config.json").write_text(json.dumps(spec))
    return bundle


def run(rune: Rune, bundle_factory: BundleFactory, data: Path, args: str, cmd: str, cid: str) -> tuple[int, str, str]:
    r = rune("run", "--bundle", sealing_bundle(bundle_factory, data, args, cmd), cid, errors="replace")
    return r.returncode, r.stdout, r.stderr


def assert_refused_line(result: tuple[int, str, str], reason: str) -> None:
    rc, out, err = result
    assert rc == 1 and out == "", (rc, out, err)
    assert reason in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_sealed_data_opens_only_for_the_same_identity_across_recreation_and_agent_restart(
        rune: Rune, agent: AgentProcess, bundle_factory: BundleFactory, enclave_env: dict[str, str],
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    seal = (f"printf 'by-mrenclave' | {ATTEST} seal - /data/e && "
            f"printf 'by-signer' | {ATTEST} seal --policy mrsigner - /data/s && "
            f"printf 'for-v1' | {ATTEST} seal --policy mrsigner --svn 1 - /data/v1 && "
            f"printf 'too-new' | {ATTEST} seal --policy mrsigner --svn 3 - /data/x")
    rc, out, err = run(rune, bundle_factory, data, V2, seal, "seal-v2")
    assert rc == 1 and "ISV SVN 3 is refused to an enclave with ISV SVN 2" in err, err
    assert not (data / "x").exists()
    for name, plain in (("e", b"by-mrenclave"), ("s", b"by-signer"), ("v1", b"for-v1")):
        blob = (data / name).read_bytes()
        assert blob.startswith(b"INCLSEAL") and plain not in blob
    assert not [p for p in data.iterdir() if ".tmp." in p.name]

    opened = f"{ATTEST} unseal /data/e && echo && {ATTEST} unseal /data/s"
    same = sealing_bundle(bundle_factory, data, V2, opened)
    assert measure(same, enclave_env) == measure(sealing_bundle(bundle_factory, data, V2, seal), enclave_env)
    assert run(rune, bundle_factory, data, V2, opened, "open-recreated") == (0, "by-mrenclave\nby-signer", "")
    agent.stop()
    agent.start()  # the sealing secret persists in the state directory
    assert run(rune, bundle_factory, data, V2, opened, "open-restarted") == (0, "by-mrenclave\nby-signer", "")

    # an upgrade (SVN 3, hence another measurement): not MRENCLAVE data, MRSIGNER data of older versions
    v3 = f"mrsigner={SIGNER},isvprodid=7,isvsvn=3"
    assert_refused_line(run(rune, bundle_factory, data, v3, f"{ATTEST} unseal /data/e /data/e.out", "v3-e"),
                        "the sealed data does not open in this enclave: it was sealed to another MRENCLAVE")
    assert not (data / "e.out").exists()
    assert run(rune, bundle_factory, data, v3, f"{ATTEST} unseal /data/s", "v3-s") == (0, "by-signer", "")
    # an older version never opens newer data, but opens what was sealed for its SVN
    v1 = f"mrsigner={SIGNER},isvprodid=7,isvsvn=1"
    assert_refused_line(run(rune, bundle_factory, data, v1, f"{ATTEST} unseal - < /data/s", "v1-s"),
                        "ISV SVN 2 is refused to an enclave with ISV SVN 1")
    assert run(rune, bundle_factory, data, v1, f"{ATTEST} unseal /data/v1", "v1-v1") == (0, "for-v1", "")
    # another product or another signer
    assert_refused_line(run(rune, bundle_factory, data, f"mrsigner={SIGNER},isvprodid=8,isvsvn=2",
                            f"{ATTEST} unseal /data/s", "p8-s"), "sealed by product 7; this enclave is product 8")
    assert_refused_line(run(rune, bundle_factory, data, f"mrsigner={'ee' * 32},isvprodid=7,isvsvn=2",
                            f"{ATTEST} unseal /data/s", "other-signer"), "sealed to another MRSIGNER and product")
    assert_refused_line(run(rune, bundle_factory, data, "isvsvn=2", f"printf x | {ATTEST} seal --policy mrsigner",
                            "no-signer"), "declares no signer")


def test_a_tampered_blob_is_refused_and_nothing_is_written(
        rune: Rune, bundle_factory: BundleFactory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert run(rune, bundle_factory, data, V2, f"printf secret | {ATTEST} seal - /data/b", "tamper-seal")[0] == 0
    blob = (data / "b").read_bytes()
    for i in (8, 20, 55, len(blob) - 20, len(blob) - 1):  # version, key id, nonce, ciphertext, tag
        bad = bytearray(blob)
        bad[i] ^= 0x80
        (data / f"b{i}").write_bytes(bytes(bad))
    cmd = f"for i in 8 20 55 {len(blob) - 20} {len(blob) - 1}; do {ATTEST} unseal /data/b$i /data/out$i; done; exit 1"
    rc, out, err = run(rune, bundle_factory, data, V2, cmd, "tamper-open")
    lines = err.strip().splitlines()
    assert rc == 1 and out == "" and len(lines) == 5, err
    assert "sealed data version 129 is not supported" in lines[0]
    assert all("sealed to another MRENCLAVE, or modified" in line for line in lines[1:]), err
    assert not list(data.glob("out*"))
    assert run(rune, bundle_factory, data, V2, f"{ATTEST} unseal /data/b", "tamper-intact") == (0, "secret", "")


def test_only_the_enclave_containers_own_processes_get_a_sealing_key(containers: Containers) -> None:
    """The host, a plain container bind-mounting the channel and another enclave are refused;
    the same request from inside succeeds, and another enclave's own channel gives another key."""
    a = containers.start("a", SLEEP, enclave=True)
    status, body = containers.client(a, HOST_SOCKET, "POST", "/v1/sealing-key", KEY_REQUEST)
    assert status == 200, body
    key = json.loads(body)["key"]
    assert len(base64.b64decode(key)) == 32 and json.loads(body)["isv_svn"] == 0
    assert_refused(*call(os.path.join(a.channel, "host.sock"), "POST", "/v1/sealing-key", KEY_REQUEST),
                   CHANNEL_REFUSED, None)
    plain = containers.start("plain", SLEEP, enclave=False, bind={"/mnt/a": a.channel})
    assert_refused(*containers.client(plain, "/mnt/a/host.sock", "POST", "/v1/sealing-key", KEY_REQUEST),
                   CHANNEL_REFUSED, None)
    other = containers.start("other", ["/bin/sleep", "301"], enclave=True, bind={"/mnt/a": a.channel})
    assert other.measurement != a.measurement
    assert_refused(*containers.client(other, "/mnt/a/host.sock", "POST", "/v1/sealing-key", KEY_REQUEST),
                   CHANNEL_REFUSED, None)
    status, body = containers.client(other, HOST_SOCKET, "POST", "/v1/sealing-key", KEY_REQUEST)
    assert status == 200 and json.loads(body)["key"] != key, body
