"""Malformed-input and property tests for the parsers the runelet and the folder builder
trust: the exec protocol, the runelet configuration and the ELF reader. Every malformed
input raises the module's typed error and nothing else."""

from __future__ import annotations

import json
import os
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inclavare.errors import ConfigError
from inclavare.runtime.pal import exec_protocol as proto
from inclavare.runtime.pal.elf_info import ElfError, parse_elf, read_elf
from inclavare.runtime.pal.runelet_config import Payload, RuneletConfig, RuntimeRef

text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20)

messages = st.one_of(
    st.builds(proto.ExecRequest, st.lists(text, min_size=1, max_size=4).map(tuple),
              st.none() | st.lists(text, max_size=4).map(tuple),
              st.none() | text.map(lambda s: "/" + s)),
    st.builds(proto.KillRequest, st.integers(1, 64)),
    st.builds(proto.Started, st.integers(-(2**31), 2**31 - 1)),
    st.builds(proto.Exited, st.integers(0, 0xFFFF), st.integers(0, 255)),
    st.builds(proto.Failed, text, st.integers(0, 4095)),
)


@given(messages)
def test_messages_round_trip(message: proto.Message) -> None:
    framed = proto.encode(message)
    (size,) = struct.unpack(">I", framed[:4])
    assert size == len(framed) - 4
    assert proto.decode(framed[4:]) == message


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    try:
        proto.decode(data)
    except proto.ExecProtocolError:
        pass


@given(messages, st.data())
@settings(max_examples=200)
def test_mutated_messages_raise_only_protocol_errors(message: proto.Message, data: st.DataObject) -> None:
    body = bytearray(proto.encode(message)[4:])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
    try:
        proto.decode(bytes(body))
    except proto.ExecProtocolError:
        pass


@pytest.mark.parametrize("obj, why", [
    ([], "JSON object"),
    ({"op": "exec", "argv": []}, "must not be empty"),
    ({"op": "exec", "argv": ["a\u0000b"]}, "NUL"),
    ({"op": "exec", "argv": ["a"], "cwd": "relative"}, "absolute"),
    ({"op": "exec", "argv": ["a"], "extra": 1}, "unknown field"),
    ({"op": "kill", "signal": 0}, "signal"),
    ({"op": "kill", "signal": True}, "signal"),
    ({"op": "kill", "signal": 65}, "signal"),
    ({"op": "exit", "status": 1, "code": 256}, "code"),
    ({"op": "error", "message": 3, "errno": 1}, "message"),
    ({"op": "reboot"}, "unknown op"),
    ("[" * 100000, "JSON"),
])
def test_malformed_messages(obj: object, why: str) -> None:
    raw = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
    with pytest.raises(proto.ExecProtocolError, match=why):
        proto.decode(raw)


def test_descriptors_travel_with_the_first_message() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    try:
        proto.send(a, proto.ExecRequest(("echo", "hi"), None, None), fds=(r, w, w))
        proto.send(a, proto.KillRequest(15))
        message, fds = proto.receive(b, max_fds=3)
        assert message == proto.ExecRequest(("echo", "hi"), None, None)
        assert len(fds) == 3
        os.write(fds[1], b"x")
        assert os.read(r, 1) == b"x"
        assert all(os.get_inheritable(fd) is False for fd in fds)
        for fd in fds:
            os.close(fd)
        assert proto.receive(b) == (proto.KillRequest(15), [])
        a.close()
        assert proto.receive(b) == (None, [])
    finally:
        for fd in (r, w):
            os.close(fd)
        b.close()


def test_too_many_descriptors_are_closed_and_refused() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(5)]
    before = set(os.listdir("/proc/self/fd"))
    try:
        proto.send(a, proto.KillRequest(1), fds=tuple(fds))
        with pytest.raises(proto.ExecProtocolError, match="too many"):
            proto.receive(b, max_fds=3)
        assert set(os.listdir("/proc/self/fd")) <= before  # nothing leaked
    finally:
        for fd in fds:
            os.close(fd)
        a.close()
        b.close()


@pytest.mark.parametrize("raw, why", [
    (struct.pack(">I", proto.MAX_MESSAGE + 1), "exceeds"),
    (struct.pack(">I", 10) + b"{}", "middle of a message"),
    (b"\x00\x00", "middle of a message"),
])
def test_truncated_and_oversized_frames(raw: bytes, why: str) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.sendall(raw)
    a.close()
    with pytest.raises(proto.ExecProtocolError, match=why):
        proto.receive(b)
    b.close()


# -- runelet configuration ----------------------------------------------------------------

def _config() -> RuneletConfig:
    return RuneletConfig(RuntimeRef("pal", path="/.inclavare/pal.so"), "a b", "info",
                         Payload(("sh", "-c", "x"), ("A=1",), "/"), "/.inclavare/run/s")


def test_config_round_trip() -> None:
    cfg = _config()
    assert RuneletConfig.from_json(cfg.to_json()) == cfg
    py = RuneletConfig(RuntimeRef("python", name="sim", target="inclavare.runtime.pal.sim:S"),
                       "", "off", cfg.payload, cfg.socket)
    assert RuneletConfig.from_json(py.to_json()) == py


@pytest.mark.parametrize("path, value, why", [
    (("version",), 2, "version"),
    (("runtime", "kind"), "rust", "runtime.kind"),
    (("runtime", "path"), "relative.so", "absolute"),
    (("payload", "args"), [], "must not be empty"),
    (("payload", "env"), [1], "list of strings"),
    (("payload", "cwd"), "", "non-empty"),
    (("socket",), None, "socket"),
    (("surprise",), 1, "unknown key"),
    (("args",), "a\u0000b", "NUL"),
])
def test_config_is_strict(path: tuple[str, ...], value: object, why: str) -> None:
    obj = json.loads(_config().to_json())
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ConfigError, match=why):
        RuneletConfig.from_json(json.dumps(obj).encode())


@given(st.binary(max_size=200))
def test_config_random_bytes(data: bytes) -> None:
    try:
        RuneletConfig.from_json(data)
    except ConfigError:
        pass


# -- ELF ----------------------------------------------------------------------------------

def test_real_binaries() -> None:
    import sys

    info = read_elf(os.path.realpath(sys.executable))
    assert info.interpreter and info.interpreter.startswith("/")
    assert "libc.so.6" in info.needed or info.needed  # dynamically linked


@pytest.fixture(scope="module")
def libc_bytes() -> bytes:
    import sys

    with open(os.path.realpath(sys.executable), "rb") as f:
        return f.read(1 << 16)


@given(st.binary(max_size=400))
def test_elf_random_bytes(data: bytes) -> None:
    try:
        parse_elf(b"\x7fELF\x02\x01" + data)
    except ElfError:
        pass


@given(st.data())
@settings(max_examples=300)
def test_elf_mutations_raise_only_elf_errors(libc_bytes: bytes, data: st.DataObject) -> None:
    blob = bytearray(libc_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, min(len(blob), 4096) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        parse_elf(bytes(blob[:cut]))
    except ElfError:
        pass


@pytest.mark.parametrize("data, why", [
    (b"", "not an ELF"), (b"\x7fELF\x01\x01" + bytes(60), "64-bit"),
    (b"\x7fELF\x02\x02" + bytes(60), "little-endian"),
])
def test_elf_rejections(data: bytes, why: str) -> None:
    with pytest.raises(ElfError, match=why):
        parse_elf(data)
