"""The DevicePlugin gRPC service: the device list (ListAndWatch), Allocate and the optional calls.

One device per MiB of EPC, IDs "0".."N-1" (as Alibaba's plugin). The list is rebuilt only when
health changes, and every open ListAndWatch stream gets the full list then (kubelet replaces
its set with each message). Allocate hands a container exactly: the SGX device nodes (on SGX
hosts) and the allowance annotation rune enforces at create — nothing else.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from inclavare.services.deviceplugin import api_pb2 as pb
from inclavare.services.deviceplugin import api_pb2_grpc as rpc
from inclavare.services.deviceplugin.epc import EpcInventory
from inclavare.services.deviceplugin.names import ALLOWANCE_ANNOTATION, HEALTHY, UNHEALTHY

log = logging.getLogger("inclavare.deviceplugin")

MAX_STREAMS = 4  # kubelet keeps one ListAndWatch; a re-registration briefly overlaps the old one
WAKE_INTERVAL = 1.0  # a stream notices a cancelled call or a stopping server at least this often


class EpcDevicePlugin(rpc.DevicePluginServicer):
    def __init__(self, inventory: EpcInventory, healthy: bool = True) -> None:
        self.inventory = inventory
        self._cond = threading.Condition()
        self._healthy = healthy
        self._version = 0
        self._devices = self._build(healthy)
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        self._closed = False

    # -- state -----------------------------------------------------------------------------

    def _build(self, healthy: bool) -> list[pb.Device]:
        health = HEALTHY if healthy else UNHEALTHY
        devices = []
        for i in range(self.inventory.mib):
            node = self.inventory.node_of(i)
            topology = pb.TopologyInfo(nodes=[pb.NUMANode(ID=node)]) if node is not None else None
            devices.append(pb.Device(ID=str(i), health=health, topology=topology))
        return devices

    @property
    def healthy(self) -> bool:
        return self._healthy

    def set_health(self, healthy: bool, reason: str) -> bool:
        """Record the devices' health; streams hear of it only when it changed."""
        with self._cond:
            if healthy == self._healthy:
                return False
            self._healthy = healthy
            self._devices = self._build(healthy)
            self._version += 1
            self._cond.notify_all()
        log.warning("devices %s: %s", HEALTHY if healthy else UNHEALTHY, reason)
        return True

    def close(self) -> None:
        """End every open stream (the server is going away)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- DevicePlugin ----------------------------------------------------------------------

    def GetDevicePluginOptions(self, request: pb.Empty, context: grpc.ServicerContext) -> pb.DevicePluginOptions:
        return pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    def ListAndWatch(self, request: pb.Empty, context: grpc.ServicerContext) -> Iterator[pb.ListAndWatchResponse]:
        if not self._streams.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"at most {MAX_STREAMS} ListAndWatch streams at a time")
        context.add_callback(self._wake)
        try:
            seen = -1
            while context.is_active():
                with self._cond:
                    if self._version == seen and not self._closed:
                        self._cond.wait(WAKE_INTERVAL)
                    if self._closed:
                        return
                    if self._version == seen:
                        continue
                    seen, devices = self._version, self._devices
                yield pb.ListAndWatchResponse(devices=devices)
        finally:
            self._streams.release()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _check_ids(self, ids: Any, context: grpc.ServicerContext) -> list[str]:
        ids = list(ids)
        if not ids:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a container request names no device")
        unknown = [i for i in ids if not (i.isdigit() and i == str(int(i)) and int(i) < self.inventory.mib)]
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unknown device ID {unknown[0][:63]!r} (this node has devices 0..{self.inventory.mib - 1})")
        if len(set(ids)) != len(ids):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a device ID is listed twice")
        return ids

    def GetPreferredAllocation(self, request: pb.PreferredAllocationRequest,
                               context: grpc.ServicerContext) -> pb.PreferredAllocationResponse:
        """Any MiB is as good as another within a NUMA node: must-include first, then the lowest IDs."""
        out = []
        for req in request.container_requests:
            size = req.allocation_size
            must = list(dict.fromkeys(req.must_include_deviceIDs))
            if size < len(must) or size > len(req.available_deviceIDs):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"allocation_size {size} does not fit {len(must)} required and "
                              f"{len(req.available_deviceIDs)} available devices")
            chosen = set(must)
            rest = sorted((i for i in req.available_deviceIDs if i not in chosen),
                          key=lambda i: (len(i), i))
            out.append(pb.ContainerPreferredAllocationResponse(deviceIDs=must + rest[: size - len(must)]))
        return pb.PreferredAllocationResponse(container_responses=out)

    def Allocate(self, request: pb.AllocateRequest, context: grpc.ServicerContext) -> pb.AllocateResponse:
        responses = []
        for req in request.container_requests:
            ids = self._check_ids(req.devices_ids, context)
            devices = [pb.DeviceSpec(container_path=p, host_path=p, permissions="rw")
                       for p in self.inventory.device_nodes]
            responses.append(pb.ContainerAllocateResponse(
                annotations={ALLOWANCE_ANNOTATION: str(len(ids))}, devices=devices))
        log.info("allocated %s MiB of EPC", "+".join(str(len(r.devices_ids)) for r in request.container_requests))
        return pb.AllocateResponse(container_responses=responses)

    def PreStartContainer(self, request: pb.PreStartContainerRequest,
                          context: grpc.ServicerContext) -> pb.PreStartContainerResponse:
        return pb.PreStartContainerResponse()  # not requested in the options; harmless if called
