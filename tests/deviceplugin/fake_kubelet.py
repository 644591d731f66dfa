"""A fake kubelet: the Registration service and the device manager's calls, over the real protocol.

It does what kubelet's device manager does with a plugin (kubernetes/pkg/kubelet/cm/devicemanager):
serves ``Registration.Register`` on ``DIR/kubelet.sock``; on a Register it checks the version,
dials the plugin's endpoint back *before answering* and calls GetDevicePluginOptions, then
keeps a ListAndWatch stream open, replacing its device set with each message. Allocate is
called by the test, as kubelet calls it when a container starts. Restarting it the way the
kubelet restarts (every socket in DIR deleted, a new kubelet.sock) is :meth:`restart`.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc

from inclavare.services.deviceplugin import api_pb2 as pb
from inclavare.services.deviceplugin import api_pb2_grpc as rpc


@dataclass
class PluginEndpoint:
    """What the fake kubelet knows of one registered plugin."""

    request: Any
    options: Any
    channel: grpc.Channel
    stub: rpc.DevicePluginStub
    updates: list[dict[str, str]] = field(default_factory=list)  # device ID -> health, per message
    topologies: list[list[int]] = field(default_factory=list)  # NUMA nodes of device "0", per message
    cond: threading.Condition = field(default_factory=threading.Condition)
    stream_error: str = ""

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.updates and predicate(self.updates[-1]):
                    return self.updates[-1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching ListAndWatch update in {timeout} s "
                                         f"(last: {summary(self.updates[-1]) if self.updates else None}, "
                                         f"stream error: {self.stream_error or None})")
                self.cond.wait(left)

    def allocate(self, ids: list[list[str]]) -> Any:
        return self.stub.Allocate(pb.AllocateRequest(container_requests=[
            pb.ContainerAllocateRequest(devices_ids=i) for i in ids]), timeout=10)


def summary(devices: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for health in devices.values():
        out[health] = out.get(health, 0) + 1
    return out


class FakeKubelet(rpc.RegistrationServicer):
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.socket = os.path.join(directory, "kubelet.sock")
        self.registrations: list[PluginEndpoint] = []
        self._cond = threading.Condition()
        self._server: grpc.Server | None = None

    def start(self) -> "FakeKubelet":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        rpc.add_RegistrationServicer_to_server(self, server)
        assert server.add_insecure_port(f"unix://{self.socket}") != 0
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None
        for ep in self.registrations:
            ep.channel.close()

    def restart(self) -> None:
        """As the kubelet restarts: stop, delete every socket in the directory, serve anew."""
        self.stop()
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.endswith(".sock") or name == "kubelet.sock":
                os.unlink(path)
        self.start()

    # -- Registration ---------------------------------------------------------------------------

    def Register(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.version != "v1beta1":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported version {request.version}")
        if "/" not in request.resource_name or "/" in request.endpoint:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad resource name or endpoint")
        channel = grpc.insecure_channel(f"unix://{os.path.join(self.directory, request.endpoint)}")
        stub = rpc.DevicePluginStub(channel)
        try:  # kubelet dials back (10 s) and asks for the options before it answers Register
            options = stub.GetDevicePluginOptions(pb.Empty(), timeout=10, wait_for_ready=True)
        except grpc.RpcError as exc:
            channel.close()
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot reach the plugin: {exc}")
        ep = PluginEndpoint(request, options, channel, stub)
        threading.Thread(target=self._watch, args=(ep,), daemon=True).start()
        with self._cond:
            self.registrations.append(ep)
            self._cond.notify_all()
        return pb.Empty()

    def _watch(self, ep: PluginEndpoint) -> None:
        try:
            for message in ep.stub.ListAndWatch(pb.Empty()):
                with ep.cond:
                    ep.updates.append({d.ID: d.health for d in message.devices})
                    first = message.devices[0] if message.devices else None
                    ep.topologies.append([n.ID for n in first.topology.nodes] if first is not None else [])
                    ep.cond.notify_all()
        except grpc.RpcError as exc:
            with ep.cond:
                ep.stream_error = f"{exc.code().name}" if isinstance(exc, grpc.Call) else str(exc)
                ep.cond.notify_all()

    def wait_registrations(self, count: int, timeout: float = 15.0) -> PluginEndpoint:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.registrations) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.registrations)} registrations after {timeout} s, "
                                         f"expected {count}")
                self._cond.wait(left)
            return self.registrations[count - 1]
