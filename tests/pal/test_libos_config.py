"""Occlum and Gramine: configuration generation (untested on SGX hardware: none here) and
the adapters' refusals when the image lacks what they need."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from inclavare.errors import ConfigError, NotSupportedError, PalError
from inclavare.runtime.pal.abi import StdioFds
from inclavare.runtime.pal.gramine import GramineEnclaveRuntime, GramineOptions, gramine_manifest
from inclavare.runtime.pal.occlum import (
    OcclumConfig,
    OcclumEnclaveRuntime,
    occlum_config_from_env,
    occlum_json,
)


def test_occlum_defaults_are_safe() -> None:
    doc = occlum_json(occlum_config_from_env([]))
    assert doc["metadata"]["debuggable"] is False  # upstream defaulted to true
    assert doc["resource_limits"] == {"kernel_space_heap_size": "32MB", "kernel_space_stack_size": "1MB",
                                      "user_space_size": "300MB", "max_num_of_threads": 32}
    assert doc["env"] == {"default": ["OCCLUM=yes"], "untrusted": []}
    assert doc["entry_points"] == ["/bin"]


def test_occlum_variables_override() -> None:
    env = ["OCCLUM_USER_SPACE_SIZE=1GB", "OCCLUM_KERNEL_SPACE_HEAP_SIZE=64MB",
           "OCCLUM_KERNEL_SPACE_STACK_SIZE=2MB", "OCCLUM_MAX_NUM_OF_THREADS=64",
           "OCCLUM_PROCESS_DEFAULT_STACK_SIZE=8MB", "OCCLUM_PROCESS_DEFAULT_HEAP_SIZE=64MB",
           "OCCLUM_PROCESS_DEFAULT_MMAP_SIZE=200MB", "OCCLUM_PRODUCT_ID=7",
           "OCCLUM_VERSION_NUMBER=3", "OCCLUM_DEBUGGABLE=true",
           "OCCLUM_DEFAULT_ENV=A=1,B=two", "OCCLUM_UNTRUSTED_ENV=HOME,TERM", "UNRELATED=x"]
    cfg = occlum_config_from_env(env)
    assert cfg == OcclumConfig("1GB", "64MB", "2MB", 64, "8MB", "64MB", "200MB", 7, 3, True,
                               ("A=1", "B=two"), ("HOME", "TERM"))
    doc = occlum_json(cfg)
    assert doc["process"] == {"default_stack_size": "8MB", "default_heap_size": "64MB",
                              "default_mmap_size": "200MB"}
    assert doc["metadata"]["product_id"] == 7 and doc["metadata"]["version_number"] == 3
    assert doc["env"] == {"default": ["A=1", "B=two"], "untrusted": ["HOME", "TERM"]}


@pytest.mark.parametrize("var, value", [
    ("OCCLUM_USER_SPACE_SIZE", "lots"), ("OCCLUM_USER_SPACE_SIZE", "0MB"),
    ("OCCLUM_USER_SPACE_SIZE", "300"), ("OCCLUM_MAX_NUM_OF_THREADS", "0"),
    ("OCCLUM_MAX_NUM_OF_THREADS", "-1"), ("OCCLUM_PRODUCT_ID", "65536"),
    ("OCCLUM_VERSION_NUMBER", "x"), ("OCCLUM_DEBUGGABLE", "yes"),
    ("OCCLUM_DEFAULT_ENV", "NOEQUALS"), ("OCCLUM_UNTRUSTED_ENV", "BAD-NAME"),
])
def test_occlum_rejects_malformed_values(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        occlum_config_from_env({var: value})


def test_occlum_adapter_needs_an_instance_and_the_tool(tmp_path: Path) -> None:
    runtime = OcclumEnclaveRuntime()
    with pytest.raises(PalError, match="occlum not found"):
        runtime.init(str(tmp_path), "info")
    tool = tmp_path / "occlum"
    tool.write_text("#!/bin/sh\necho \"$@\"; echo \"$OCCLUM_LOG_LEVEL\"\n")
    tool.chmod(0o755)
    with pytest.raises(PalError, match="not an Occlum instance"):
        OcclumEnclaveRuntime().init(f"{tmp_path} occlum={tool}", "info")
    with pytest.raises(PalError, match="unknown enclave runtime option"):
        OcclumEnclaveRuntime().init(f"{tmp_path} gramine-sgx={tool}", "info")
    (tmp_path / "Occlum.json").write_text("{}")
    runtime = OcclumEnclaveRuntime()
    runtime.init(f"{tmp_path} occlum={tool}", "warning")
    import os

    r, w = os.pipe()
    pid = runtime.create_process("/bin/hello", ["hello", "world"], ["PATH=/bin"], StdioFds(0, w, 2))
    os.close(w)
    assert runtime.exec(pid) == 0
    assert os.read(r, 200) == b"run /bin/hello world\nwarn\n"  # occlum run, in the instance dir
    os.close(r)
    with pytest.raises(NotSupportedError, match="one process tree per enclave"):
        runtime.create_process("/bin/hello", ["hello"], [], StdioFds())
    runtime.destroy()
    with pytest.raises(NotSupportedError):
        runtime.get_local_report(bytes(512))
    assert runtime.required_devices == ("/dev/sgx_enclave", "/dev/sgx_provision")
    assert runtime.required_mounts == ("/var/run/aesmd",)


def test_gramine_manifest_is_valid_toml_with_fixed_argv() -> None:
    text = gramine_manifest("/usr/bin/app", ["app", "--port", "8080", 'quote"d'],
                            ["PATH=/usr/bin", "GREETING=hi \"there\"\n"])
    doc = tomllib.loads(text)
    assert doc["libos"]["entrypoint"] == "/usr/bin/app"
    assert doc["loader"]["argv"] == ["app", "--port", "8080", 'quote"d']
    assert "insecure__use_cmdline_argv" not in doc["loader"]
    assert doc["loader"]["env"]["GREETING"] == "hi \"there\"\n"
    assert doc["loader"]["env"]["LD_LIBRARY_PATH"] == "/lib:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu"
    assert doc["sgx"]["debug"] is False
    assert doc["sgx"]["remote_attestation"] == "dcap"
    assert doc["sgx"]["enclave_size"] == "512M"
    assert "file:/usr/bin/app" in doc["sgx"]["trusted_files"]
    assert {"path": "/usr/bin", "uri": "file:/usr/bin"} in doc["fs"]["mounts"]
    assert {"type": "tmpfs", "path": "/tmp"} in doc["fs"]["mounts"]
    assert "{{" not in text  # fully rendered: no Jinja for gramine-manifest to interpret


@pytest.mark.parametrize("options, why", [
    (GramineOptions(enclave_size="500M"), "power of two"),
    (GramineOptions(enclave_size="1T"), "power of two"),
    (GramineOptions(max_threads=0), "max_threads"),
    (GramineOptions(remote_attestation="epid"), "remote_attestation"),
    (GramineOptions(log_level="verbose"), "log level"),
    (GramineOptions(runtime_dir="relative"), "absolute"),
])
def test_gramine_rejects_bad_options(options: GramineOptions, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        gramine_manifest("/app", ["app"], [], options)


def test_gramine_rejects_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="absolute"):
        gramine_manifest("app", ["app"])
    with pytest.raises(ConfigError, match="cannot go into a manifest"):
        gramine_manifest("/app", ["app"], {"BAD.NAME": "x"})


def test_gramine_adapter_needs_a_signed_manifest(tmp_path: Path) -> None:
    tool = tmp_path / "gramine-sgx"
    tool.write_text("#!/bin/sh\necho \"$@\"\n")
    tool.chmod(0o755)
    stem = tmp_path / "entrypoint"
    with pytest.raises(PalError, match="entrypoint.manifest.sgx not found"):
        GramineEnclaveRuntime().init(f"{stem} gramine-sgx={tool}", "info")
    with pytest.raises(PalError, match="must name the manifest stem"):
        GramineEnclaveRuntime().init(f"gramine-sgx={tool}", "info")
    (tmp_path / "entrypoint.manifest.sgx").write_text("")
    (tmp_path / "entrypoint.sig").write_text("")
    runtime = GramineEnclaveRuntime()
    runtime.init(f"{stem} gramine-sgx={tool}", "info")
    import os

    r, w = os.pipe()
    pid = runtime.create_process("/ignored", ["ignored"], [], StdioFds(0, w, 2))
    os.close(w)
    assert runtime.exec(pid) == 0
    assert os.read(r, 100) == b"entrypoint\n"
    os.close(r)
