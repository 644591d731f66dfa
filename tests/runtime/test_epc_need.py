"""An enclave's EPC need (declared, or read from the Occlum/Gramine image) against its allowance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inclavare.errors import EnclaveConfigError
from inclavare.runtime.epc_need import EpcAllowanceError, epc_need, size_to_mib


def spec(annotations: dict[str, str], cwd: str = "/") -> dict[str, object]:
    return {"annotations": annotations, "process": {"cwd": cwd, "args": ["/bin/sh"]}}


def test_declared_need_within_and_over_allowance(tmp_path: Path) -> None:
    need = epc_need(spec({"enclave.epc_mib": "16", "enclave.epc_allowance_mib": "16"}), str(tmp_path), "sim", "")
    assert (need.mib, need.allowance) == (16, 16)
    with pytest.raises(EpcAllowanceError) as err:
        epc_need(spec({"enclave.epc_mib": "64", "enclave.epc_allowance_mib": "16"}), str(tmp_path), "sim", "")
    message = str(err.value)
    assert "\n" not in message and "64 MiB" in message and "16 MiB" in message


def test_undeclared_need_takes_the_allowance_or_nothing(tmp_path: Path) -> None:
    assert epc_need(spec({"enclave.epc_allowance_mib": "24"}), str(tmp_path), "sim", "").mib == 24
    assert epc_need(spec({}), str(tmp_path), "sim", "").mib == 0
    assert epc_need(spec({"enclave.epc_mib": "500"}), str(tmp_path), "sim", "").mib == 500  # no allowance: not checked


@pytest.mark.parametrize("value", ["-1", "1.5", "16MiB", " 16", "99999999999"])
def test_malformed_annotations(value: str, tmp_path: Path) -> None:
    for name in ("enclave.epc_mib", "enclave.epc_allowance_mib"):
        with pytest.raises(EnclaveConfigError, match=name):
            epc_need(spec({name: value}), str(tmp_path), "sim", "")


def test_occlum_need_from_the_instance(tmp_path: Path) -> None:
    instance = tmp_path / "app" / "occlum_instance"
    instance.mkdir(parents=True)
    (instance / "Occlum.json").write_text(json.dumps({"resource_limits": {
        "user_space_size": "300MB", "kernel_space_heap_size": "32MB", "kernel_space_stack_size": "1MB"}}))
    need = epc_need(spec({"enclave.epc_allowance_mib": "512"}, cwd="/app"), str(tmp_path), "occlum", "occlum_instance")
    assert (need.mib, need.source) == (333, "Occlum.json resource_limits")
    with pytest.raises(EpcAllowanceError, match="333 MiB of EPC"):
        epc_need(spec({"enclave.epc_allowance_mib": "256"}, cwd="/app"), str(tmp_path), "occlum", "occlum_instance")
    # the annotation wins over the image
    assert epc_need(spec({"enclave.epc_mib": "8"}, cwd="/app"), str(tmp_path), "occlum", "occlum_instance").mib == 8


def test_gramine_need_from_the_signed_manifest(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "server.manifest.sgx").write_text('[sgx]\nenclave_size = "1G"\nmax_threads = 4\n')
    need = epc_need(spec({}), str(tmp_path), "gramine", "/app/server")
    assert (need.mib, need.source) == (1024, "Gramine sgx.enclave_size")
    (tmp_path / "app" / "server.manifest.sgx").write_text('sgx.enclave_size = "12x"\n')
    with pytest.raises(EnclaveConfigError, match="sgx.enclave_size"):
        epc_need(spec({}), str(tmp_path), "gramine", "/app/server")


def test_image_symlinks_are_not_followed(tmp_path: Path) -> None:
    """A tenant image pointing its config at a host file: nothing is read through the link."""
    outside = tmp_path / "host-secret.json"
    outside.write_text(json.dumps({"resource_limits": {"user_space_size": "900MB"}}))
    rootfs = tmp_path / "rootfs"
    (rootfs / "app").mkdir(parents=True)
    (rootfs / "app" / "Occlum.json").symlink_to(outside)
    assert epc_need(spec({}, cwd="/app"), str(rootfs), "occlum", "").mib == 0
    (rootfs / "link").symlink_to(tmp_path)
    assert epc_need(spec({}, cwd="/link"), str(rootfs), "occlum", "").mib == 0


@pytest.mark.parametrize("text, mib", [("300MB", 300), ("512M", 512), ("1G", 1024), ("64K", 1), ("4096", 1),
                                       ("2GB", 2048)])
def test_sizes(text: str, mib: int) -> None:
    assert size_to_mib(text, "x") == mib
