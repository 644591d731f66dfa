"""The keyprovider protocol (cmd and gRPC forms) and its refusals, without a KBS."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import pytest

from inclavare.errors import ConfigError, InclavareError
from inclavare.images.annotation_packet import AnnotationPacket
from inclavare.images.keyprovider import MAX_REQUEST, TenantKeys, handle
from inclavare.images.keyprovider_grpc import check_listen, start_server
from inclavare.images.provider_client import ProviderClient
from tests.support.grpc_stubs import assert_stubs_match_proto

KID = "kbs:///tenant/key/one"
OPTS = b'{"symkey":"AAAA","digest":"sha256:00","cipheroptions":{"nonce":"AAAA"}}'


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def keys(tmp_path: Path) -> TenantKeys:
    (tmp_path / "tenant" / "key").mkdir(parents=True)
    (tmp_path / "tenant" / "key" / "one").write_bytes(os.urandom(32))
    return TenantKeys(str(tmp_path))


def _wrap_request(kid: str = KID, name: str = "inclavare") -> bytes:
    return json.dumps({"op": "keywrap", "keywrapparams": {"ec": {"Parameters": {name: [_b64(kid.encode())]}},
                                                           "optsdata": _b64(OPTS)}}).encode()


def _unwrap_request(annotation: bytes) -> bytes:
    return json.dumps({"op": "keyunwrap", "keyunwrapparams": {"dc": {"Parameters": {"inclavare": []}},
                                                               "annotation": _b64(annotation)}}).encode()


def test_wrap_writes_cocos_annotation_packet_and_unwrap_opens_it(keys: TenantKeys) -> None:
    out = json.loads(handle(_wrap_request(), keys))
    packet_json = base64.b64decode(out["keywrapresults"]["annotation"])
    assert list(json.loads(packet_json)) == ["kid", "wrapped_data", "iv", "wrap_type"]
    packet = AnnotationPacket.from_json(packet_json)
    assert packet.kid == KID and packet.wrap_type == "A256GCM" and len(packet.wrapped_data) == len(OPTS) + 16
    back = json.loads(handle(_unwrap_request(packet_json), keys))
    assert base64.b64decode(back["keyunwrapresults"]["optsdata"]) == OPTS


@pytest.mark.parametrize("request_, message", [
    (b"not json", "not valid JSON"),
    (b'{"op":"keydance"}', "neither keywrap nor keyunwrap"),
    (_wrap_request(name="other"), "no key id given"),
    (_wrap_request(kid="kbs:///two/parts"), "must look like kbs:///REPO/key/TAG"),
    (_wrap_request(kid="https://example/tenant/key/one"), "must look like kbs:///REPO/key/TAG"),
    (_wrap_request(kid="kbs:///tenant/key/absent"), "no key kbs:///tenant/key/absent"),
    (b'{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"inclavare":["%%%"]}},"optsdata":""}}', "base64"),
    (_unwrap_request(b'{"kid":"kbs:///tenant/key/one","wrapped_data":"AAAA","iv":"AAAAAAAAAAAAAAAA",'
                     b'"wrap_type":"A256CTR"}'), "A256CTR' is not supported"),
    (_unwrap_request(b'{"kid":"kbs:///tenant/key/one","wrapped_data":"AAAA","iv":"AAAA","wrap_type":"A256GCM"}'),
     "iv is 3 bytes"),
    (_unwrap_request(b'{"kid":"kbs:///tenant/key/one","wrapped_data":"' + b"A" * 64 + b'",'
                     b'"iv":"AAAAAAAAAAAAAAAA","wrap_type":"A256GCM"}'), "wrong key"),
    (_unwrap_request(b'{"kid":"kbs:///tenant/key/one","kid":"x"}'), "duplicate"),
    (b" " * (MAX_REQUEST + 1), "larger than"),
])
def test_bad_requests_are_refused_in_one_line(keys: TenantKeys, request_: bytes, message: str) -> None:
    with pytest.raises(InclavareError, match=message) as info:
        handle(request_, keys)
    assert "\n" not in str(info.value)


def test_cmd_form_answers_on_stdout_and_refuses_on_stderr(keys: TenantKeys) -> None:
    argv = [sys.executable, "-m", "inclavare.cli.main", "image", "keyprovider", "--key-dir", keys.key_dir]
    r = subprocess.run(argv, input=_wrap_request(), capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "keywrapresults" in json.loads(r.stdout)
    r = subprocess.run(argv, input=b"[1,2", capture_output=True, timeout=30)
    assert r.returncode != 0 and r.stdout == b""
    assert r.stderr.decode().count("\n") == 1 and r.stderr.startswith(b"inclavare: error: ")
    r = subprocess.run([*argv, "--admin-key", "/nonexistent"], input=b"{}", capture_output=True, timeout=30)
    assert r.returncode != 0 and b"--admin-key needs --kbs-url" in r.stderr


def test_grpc_form_serves_the_same_protocol_on_a_private_socket(keys: TenantKeys) -> None:
    d = tempfile.mkdtemp(prefix="kp-")
    server, address = start_server(f"unix://{d}/kp.sock", keys)
    try:
        assert os.stat(f"{d}/kp.sock").st_mode & 0o777 == 0o600
        client = ProviderClient.from_config({"key-providers": {"inclavare": {"grpc": address}}}, "inclavare")
        annotation = client.wrap(KID, OPTS)
        assert AnnotationPacket.from_json(annotation).kid == KID
        assert client.unwrap(annotation) == OPTS
        with pytest.raises(ConfigError, match="another process is serving"):
            start_server(address, keys)  # a live provider's socket is never taken over
        with pytest.raises(InclavareError, match=r"\(gRPC\): no key kbs:///tenant/key/absent"):
            client.wrap("kbs:///tenant/key/absent", OPTS)
        from inclavare.images import keyprovider_pb2 as pb
        from inclavare.images import keyprovider_pb2_grpc as rpc

        with grpc.insecure_channel(address) as channel:  # a message over the cap never reaches the handler
            with pytest.raises(grpc.RpcError) as info:
                rpc.KeyProviderServiceStub(channel).WrapKey(
                    pb.keyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=b"x" * (MAX_REQUEST + 10)),
                    timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        server.stop(None)
        shutil.rmtree(d)


@pytest.mark.parametrize("address", ["0.0.0.0:1234", "10.0.0.1:5", "unix://relative.sock", "localhost"])
def test_grpc_listens_only_on_loopback_or_a_unix_socket(address: str) -> None:
    with pytest.raises(ConfigError, match="--listen"):
        check_listen(address)


def test_provider_configuration_needs_a_cmd_or_grpc_entry() -> None:
    with pytest.raises(ConfigError, match="no usable entry"):
        ProviderClient.from_config({"key-providers": {"inclavare": {"path": "/bin/x"}}}, "inclavare")


def test_checked_in_stubs_match_the_proto() -> None:
    """keyprovider_pb2*.py are generated from keyprovider.proto by grpcio-tools; regenerate and compare."""
    assert_stubs_match_proto("inclavare/images/keyprovider.proto")


def test_the_service_path_is_ocicrypts() -> None:
    from inclavare.images import keyprovider_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["KeyProviderService"]
    assert service.full_name == "keyprovider.KeyProviderService"
    assert [m.name for m in service.methods] == ["WrapKey", "UnWrapKey"]
