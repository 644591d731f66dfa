"""TDX RTMR extension as CoCo's attestation agent does it (tee/rtmr.py)."""

from __future__ import annotations

import hashlib

import pytest

from inclavare.errors import ConfigError
from inclavare.tee.rtmr import Rtmrs, rtmr_of_pcr, runtime_measurement_request


def test_pcr_to_rtmr_mapping_is_the_tcg_cc_one() -> None:
    assert [rtmr_of_pcr(p) for p in range(18)] == [3, 0, 1, 1, 1, 1, 1, 0, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3]
    for bad in (-1, True, "3", 1.0):
        with pytest.raises(ConfigError):
            rtmr_of_pcr(bad)  # type: ignore[arg-type]


def test_extension_is_sha384_of_the_old_value_and_the_digest() -> None:
    regs = Rtmrs()
    d1, d2 = hashlib.sha384(b"one").digest(), hashlib.sha384(b"two").digest()
    first = hashlib.sha384(bytes(48) + d1).digest()
    assert regs.extend(3, d1) == first
    assert regs.extend(3, d2) == hashlib.sha384(first + d2).digest()
    assert regs.values()[:3] == (bytes(48),) * 3
    for index in (0, 1, 4, -1):
        with pytest.raises(ConfigError, match="cannot be extended"):
            regs.extend(index, d1)
    with pytest.raises(ConfigError, match="48 bytes"):
        regs.extend(2, b"short")


def test_request_shape() -> None:
    rtmr, digest, event = runtime_measurement_request({"domain": "d", "operation": "o", "content": "c c"})
    assert (rtmr, digest, event) == (3, hashlib.sha384(b"d o c c").digest(), "d o c c")
    assert runtime_measurement_request({"domain": "d", "operation": "o", "content": "c", "register_index": 9})[0] == 2
    for body, message in (
            ([], "body must be"), ({"domain": "d", "operation": "o", "content": "c", "x": 1}, "unknown field"),
            ({"domain": "d e", "operation": "o", "content": "c"}, "white space"),
            ({"domain": "d", "operation": "o"}, "content must be"),
            ({"domain": "d", "operation": "o", "content": "c" * 1025}, "at most 1024"),
            ({"domain": "d", "operation": "o", "content": "c", "register_index": 7}, "RTMR0"),
            ({"domain": "d", "operation": "o", "content": "c", "register_index": "17"}, "PCR index")):
        with pytest.raises(ConfigError, match=message):
            runtime_measurement_request(body)


def test_recorded_registers_come_back_for_the_same_td_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A restarted node agent reads a TD's RTMRs back from its record; a container re-created
    under the same id (a new TD) starts at zero, and so does one whose record is damaged."""
    import dataclasses

    from inclavare.services.agent.channel import Quoter
    from inclavare.services.agent.registry import Registration

    td = Registration(id="td", root="/run/runc", runc="/usr/sbin/runc", bundle="/b", measurement="00" * 32,
                      enclave={"type": "tdx", "path": "sim"}, runtime="sim")
    extended = Quoter(lambda: None, rtmr_dir=str(tmp_path)).extend_rtmr(td, 3, b"\x01" * 48)
    assert extended != bytes(48)
    assert Quoter(lambda: None, rtmr_dir=str(tmp_path))._registers(td).values()[3] == extended
    recreated = dataclasses.replace(td, registered_at=td.registered_at + 1)
    assert Quoter(lambda: None, rtmr_dir=str(tmp_path))._registers(recreated).values() == (bytes(48),) * 4
    for damage in (b"{", b'{"registered_at": %r, "rtmrs": ["00"]}' % td.registered_at, b"[]"):
        (tmp_path / f"{td.key}.json").write_bytes(damage)
        assert Quoter(lambda: None, rtmr_dir=str(tmp_path))._registers(td).values() == (bytes(48),) * 4
    Quoter(lambda: None, rtmr_dir=str(tmp_path)).forget(td.key)
    assert list(tmp_path.iterdir()) == []
