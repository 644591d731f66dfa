"""Sealed secrets in mounted files (a Kubernetes Secret volume): enclave-init opens the files
``$INCLAVARE_SEALED_FILES`` names into ``/run/inclavare/unsealed`` (the container's private tmpfs)
before the workload starts; the mounted file, on the host, keeps only the sealed form. Real sim
enclave containers, a real key broker (the fixtures of test_workload_kbs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import BundleFactory
from tests.enclave.conftest import Rune
from tests.enclave.test_workload_kbs import kbs_and_agent, rune_k, sealing_tenant
from tests.kbs.kbs_harness import KbsProcess
from tests.support.agent import AgentProcess

pytestmark = pytest.mark.root
__all__ = ["kbs_and_agent", "rune_k"]  # fixtures used below

UNSEALED = "/run/inclavare/unsealed/etc/secret"


def secret_volume(directory: Path, files: dict[str, str]) -> Path:
    """The layout kubelet writes: the files in ``..data/``, each name a symlink into it."""
    (directory / "..data").mkdir(parents=True)
    for name, value in files.items():
        (directory / "..data" / name).write_text(value)
        os.symlink(f"..data/{name}", directory / name)
    return directory


def bundle_with(bundle_factory: BundleFactory, volume: Path, cmd: list[str]) -> str:
    bundle = bundle_factory(cmd, annotations={"enclave.type": "sim"},
                            env=["PATH=/bin", "INCLAVARE_SEALED_FILES=/etc/secret/*"])
    spec = json.loads(Path(bundle, "config.json").read_text())
    spec["mounts"].append({"destination": "/etc/secret", "type": "bind", "source": str(volume),
                           "options": ["rbind", "ro", "nosuid", "nodev"]})
    Path(bundle, "config.json").write_text(json.dumps(spec))
    return bundle


def test_sealed_files_are_opened_inside_only_and_a_forged_one_stops_the_start(
        kbs_and_agent: tuple[KbsProcess, AgentProcess], rune_k: Rune, bundle_factory: BundleFactory,
        tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from inclavare.secrets import sealed

    kek = bytes(range(2, 34))
    key, kid = sealing_tenant(kbs_and_agent[0], "tenant/files", b"file-db-pa55word", kek)
    files = {"db": sealed.seal(sealed.Vault("kbs:///tenant/files/db"), key, kid),
             "tls.key": sealed.seal(sealed.envelope(b"-----BEGIN KEY-----\n", kek, "kbs:///tenant/files/kek"),
                                    key, kid),
             "config": "plain setting"}
    volume = secret_volume(tmp_path / "secret", files)
    script = (f'cat {UNSEALED}/db; echo "|"; cat {UNSEALED}/tls.key; ls {UNSEALED}; '
              'head -c 7 /etc/secret/db; echo; cat /etc/secret/config')
    r = rune_k("run", "--bundle", bundle_with(bundle_factory, volume, ["/bin/sh", "-c", script]), "files-ok")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "file-db-pa55word|\n-----BEGIN KEY-----\ndb\ntls.key\nsealed.\nplain setting", r.stdout
    for name, value in files.items():  # the host side: the volume as it was, sealed
        assert (volume / "..data" / name).read_text() == value
    host_bytes = b"".join(p.read_bytes() for p in volume.rglob("*") if p.is_file())
    assert b"file-db-pa55word" not in host_bytes and b"BEGIN KEY" not in host_bytes

    forged = sealed.seal(sealed.Vault("kbs:///tenant/files/db"), ec.generate_private_key(ec.SECP256R1()), kid)
    bad = secret_volume(tmp_path / "forged", {"config": "x", "db": forged})
    r = rune_k("run", "--bundle", bundle_with(bundle_factory, bad, ["/bin/echo", "workload ran"]), "files-forged")
    assert r.returncode == 1 and r.stdout == "", r.stderr
    assert r.stderr.startswith("enclave-init: cannot unseal /etc/secret/db (") and \
        "signature does not verify with kbs:///tenant/files/jwk" in r.stderr and \
        r.stderr.endswith("; the workload is not started\n") and len(r.stderr.splitlines()) == 1, r.stderr

    (tmp_path / "nothing").mkdir()
    r = rune_k("run", "--bundle", bundle_with(bundle_factory, tmp_path / "nothing", ["/bin/echo", "ran"]),
               "files-missing")
    assert (r.returncode, r.stdout) == (1, ""), r.stderr
    assert r.stderr == ("enclave-init: $INCLAVARE_SEALED_FILES: /etc/secret/* matches no file; "
                        "the workload is not started\n"), r.stderr
