"""Calling a key provider the way ocicrypt does: ``OCICRYPT_KEYPROVIDER_CONFIG``'s ``cmd`` entry
(JSON on stdin, answer on stdout) or ``grpc`` entry (``KeyProviderService``), same JSON both ways.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

from inclavare.crypto.b64 import b64std_decode, b64std_encode
from inclavare.errors import ConfigError, FormatError
from inclavare.formats.strict_json import loads_strict, require_object
from inclavare.images.annotation_packet import ImageKeyError
from inclavare.images.keyprovider import MAX_REQUEST

CALL_TIMEOUT = 60.0  # one layer key; the provider may wait on the KBS


@dataclass(frozen=True)
class ProviderClient:
    name: str
    entry: dict[str, Any]  # {"cmd": {"path": …, "args": […]}} or {"grpc": ADDRESS}

    @classmethod
    def from_config(cls, config: Any, name: str) -> ProviderClient:
        providers = config.get("key-providers") if isinstance(config, dict) else None
        entry = providers.get(name) if isinstance(providers, dict) else None
        if not isinstance(entry, dict) or not (isinstance(entry.get("grpc"), str) or
                                               isinstance(entry.get("cmd"), dict)):
            raise ConfigError(f"key provider configuration has no usable entry for {name!r} (cmd or grpc)")
        return cls(name, entry)

    def wrap(self, kid: str, optsdata: bytes) -> bytes:
        out = self._call("keywrap", {
            "op": "keywrap",
            "keywrapparams": {"ec": {"Parameters": {self.name: [b64std_encode(kid.encode())]},
                                     "DecryptConfig": {"Parameters": {}}}, "optsdata": b64std_encode(optsdata)},
            "keyunwrapparams": {"dc": None, "annotation": None}})
        return self._field(out, "keywrapresults", "annotation")

    def unwrap(self, annotation: bytes) -> bytes:
        out = self._call("keyunwrap", {
            "op": "keyunwrap", "keywrapparams": {"ec": None, "optsdata": None},
            "keyunwrapparams": {"dc": {"Parameters": {self.name: []}}, "annotation": b64std_encode(annotation)}})
        return self._field(out, "keyunwrapresults", "optsdata")

    def _field(self, answer: bytes, section: str, key: str) -> bytes:
        try:
            doc = require_object(loads_strict(answer, f"key provider {self.name} answer"), "key provider answer")
            return b64std_decode(require_object(doc.get(section), section).get(key), f"{section}.{key}")
        except FormatError as exc:
            raise ImageKeyError(f"key provider {self.name}: {exc}") from None

    def _call(self, op: str, request: dict[str, Any]) -> bytes:
        body = json.dumps(request).encode()
        if "grpc" in self.entry:
            return self._grpc(op, body)
        cmd = self.entry["cmd"]
        argv = [str(cmd.get("path", "")), *[str(a) for a in cmd.get("args") or []]]
        try:
            r = subprocess.run(argv, input=body, capture_output=True, timeout=CALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ImageKeyError(f"key provider {self.name} did not answer in {CALL_TIMEOUT:.0f} s") from None
        except OSError as exc:
            raise ConfigError(f"key provider {self.name}: cannot run {argv[0]}: {exc.strerror}") from None
        if r.returncode != 0:
            lines = r.stderr.decode("utf-8", "replace").strip().splitlines() or ["failed"]
            raise ImageKeyError(f"key provider {self.name}: {lines[-1].removeprefix('inclavare: error: ')[:500]}")
        return r.stdout[:MAX_REQUEST + 1]

    def _grpc(self, op: str, body: bytes) -> bytes:
        import grpc

        from inclavare.images import keyprovider_pb2 as pb
        from inclavare.images import keyprovider_pb2_grpc as rpc

        with grpc.insecure_channel(self.entry["grpc"], options=[
                ("grpc.max_receive_message_length", MAX_REQUEST)]) as channel:
            stub = rpc.KeyProviderServiceStub(channel)
            method = stub.WrapKey if op == "keywrap" else stub.UnWrapKey
            try:
                out = method(pb.keyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=body),
                             timeout=CALL_TIMEOUT)
            except grpc.RpcError as exc:
                detail = exc.details() if hasattr(exc, "details") else str(exc)
                raise ImageKeyError(f"key provider {self.name} (gRPC): {str(detail)[:500]}") from None
        return bytes(out.KeyProviderKeyWrapProtocolOutput)
