"""A minimal CRI client (what crictl would do), generated at test time from cri_subset.proto."""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

PROTO = Path(__file__).with_name("cri_subset.proto")
_generated: tuple[ModuleType, ModuleType] | None = None


def generated() -> tuple[ModuleType, ModuleType]:
    """Compile the proto once per process with grpcio-tools and import the modules."""
    global _generated
    if _generated is None:
        from grpc_tools import protoc

        out = tempfile.mkdtemp(prefix="cri-stubs-")
        rc = protoc.main(["protoc", f"-I{PROTO.parent}", f"--python_out={out}", f"--grpc_python_out={out}", str(PROTO)])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {PROTO}")
        sys.path.insert(0, out)
        _generated = (importlib.import_module("cri_subset_pb2"), importlib.import_module("cri_subset_pb2_grpc"))
    return _generated


class CRIClient:
    def __init__(self, socket: str) -> None:
        self.pb, rpc = generated()
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.runtime = rpc.RuntimeServiceStub(self.channel)
        self.images = rpc.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def sandbox_config(self, name: str, log_dir: str, annotations: dict[str, str] | None = None) -> Any:
        pb = self.pb
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default"),
            log_directory=log_dir, annotations=annotations or {},
            linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.NODE))))  # hostNetwork: no CNI needed

    def run_pod(self, config: Any, handler: str) -> str:
        return self.runtime.RunPodSandbox(self.pb.RunPodSandboxRequest(config=config, runtime_handler=handler),
                                          timeout=60).pod_sandbox_id

    def create_container(self, pod_id: str, pod_config: Any, name: str, image: str, command: list[str],
                         annotations: dict[str, str] | None = None, env: dict[str, str] | None = None,
                         own_pid_namespace: bool = False) -> str:
        """``own_pid_namespace``: what the kubelet asks unless the pod sets shareProcessNamespace."""
        pb = self.pb
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=image),
                                 command=command, log_path=f"{name}.log", annotations=annotations or {},
                                 envs=[pb.KeyValue(key=k, value=v) for k, v in (env or {}).items()])
        if own_pid_namespace:
            cfg.linux.security_context.namespace_options.pid = pb.CONTAINER
        return self.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=cfg, sandbox_config=pod_config), timeout=60).container_id

    def start(self, cid: str) -> None:
        self.runtime.StartContainer(self.pb.StartContainerRequest(container_id=cid), timeout=60)

    def status(self, cid: str) -> Any:
        return self.runtime.ContainerStatus(self.pb.ContainerStatusRequest(container_id=cid), timeout=30).status

    def wait_exited(self, cid: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(cid)
            if st.state == self.pb.CONTAINER_EXITED:
                return st
            time.sleep(0.05)
        raise AssertionError(f"container {cid} did not exit")

    def exec_sync(self, cid: str, cmd: list[str], timeout: int = 10) -> Any:
        return self.runtime.ExecSync(self.pb.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout),
                                     timeout=timeout + 20)

    def remove_container(self, cid: str) -> None:
        self.runtime.StopContainer(self.pb.StopContainerRequest(container_id=cid, timeout=1), timeout=60)
        self.runtime.RemoveContainer(self.pb.RemoveContainerRequest(container_id=cid), timeout=60)

    def remove_pod(self, pod_id: str) -> None:
        self.runtime.StopPodSandbox(self.pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        self.runtime.RemovePodSandbox(self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
