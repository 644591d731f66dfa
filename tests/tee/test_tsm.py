"""The configfs-tsm attester (tee/tsm.py) against a directory fixture that plays the kernel.

A plain directory cannot be configfs: ``mkdir`` does not populate an entry and writing
``inblob`` does not produce ``outblob``. So the test's "kernel" does both: its ``mkdir`` creates
the entry's files as configfs does (``provider``, ``generation``, ``auxblob``, ``privlevel``,
``inblob``) with ``outblob`` a FIFO, and a thread per entry waits for the reader of ``outblob``
(the attester opens it only after writing ``inblob``), bumps ``generation`` and writes the
report the simulated TDX module / SNP firmware makes for that ``inblob``. Everything after
``mkdir`` is the attester's unchanged code path, the one that runs against the kernel on a guest.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import struct
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from inclavare.errors import NotSupportedError
from inclavare.tee.registry import SNP, TDX
from inclavare.tee.sim_amd import SIM_TCB, SimAmdAuthority
from inclavare.tee.sim_authority import SimAuthority
from inclavare.tee.tsm import TsmAttester, TsmError, cert_table
from inclavare.verify.evidence import ReportDataMismatch, TrustConfig, verify_evidence

MR = bytes(range(48))
VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")


class Kernel:
    """configfs-tsm played by the test: ``provider`` and what the platform makes of ``inblob``."""

    def __init__(self, provider: str, make: Callable[[bytes], bytes], auxblob: bytes = b"", bump: int = 1) -> None:
        self.provider, self.make, self.auxblob, self.bump = provider, make, auxblob, bump
        self.privlevels: list[bytes] = []

    def mkdir(self, entry: str) -> None:
        os.mkdir(entry)
        for name, data in (("provider", f"{self.provider}\n".encode()), ("generation", b"0\n"),
                           ("auxblob", self.auxblob), ("privlevel", b""), ("inblob", b"")):
            Path(entry, name).write_bytes(data)
        os.mkfifo(os.path.join(entry, "outblob"))
        threading.Thread(target=self._serve, args=(entry,), daemon=True).start()

    def _serve(self, entry: str) -> None:
        deadline = time.monotonic() + 5
        while True:  # a FIFO opened for writing without a reader: ENXIO until the attester reads
            try:
                fd = os.open(os.path.join(entry, "outblob"), os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.002)
        self.privlevels.append(Path(entry, "privlevel").read_bytes())
        Path(entry, "generation").write_bytes(f"{self.bump}\n".encode())
        os.set_blocking(fd, True)
        try:
            os.write(fd, self.make(Path(entry, "inblob").read_bytes()))
        finally:
            os.close(fd)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def amd(tmp_path_factory: pytest.TempPathFactory) -> SimAmdAuthority:
    return SimAmdAuthority.load_or_create(str(tmp_path_factory.mktemp("amd")))


def test_tdx_guest_quote_through_the_abi_verifies(authority: SimAuthority, tmp_path: Path) -> None:
    kernel = Kernel("tdx_guest", lambda inblob: authority.td_quote(MR, inblob))
    attester = TsmAttester(str(tmp_path), mkdir=kernel.mkdir)
    assert attester.tee == TDX
    evidence = attester.evidence(b"nonce")
    trust = TrustConfig(sgx_root_cas=(authority.root_ca,), collateral=(authority.collateral(), authority.tdx_collateral()))
    verdict = verify_evidence(TDX.name, evidence, report_data=b"nonce".ljust(64, b"\0"), trust=trust, now=_now())
    assert verdict.claims["mr_td"] == MR.hex()
    with pytest.raises(ReportDataMismatch):
        verify_evidence(TDX.name, evidence, report_data=b"other".ljust(64, b"\0"), trust=trust, now=_now())


def test_sev_guest_report_and_certificate_table(amd: SimAmdAuthority, tmp_path: Path) -> None:
    _, vcek = amd.vcek(SIM_TCB)
    der = vcek.public_bytes(Encoding.DER)
    table = struct.pack("<16sII", VCEK_GUID.bytes, 48, len(der)) + bytes(24) + der
    kernel = Kernel("sev_guest", lambda inblob: amd.report(MR, inblob), auxblob=table)
    evidence = TsmAttester(str(tmp_path), privlevel=0, mkdir=kernel.mkdir).evidence(b"n")
    assert kernel.privlevels == [b"0"]
    assert evidence["cert_chain"] == [{"cert_type": "VCEK", "data": list(der)}]
    verdict = verify_evidence(SNP.name, evidence, report_data=b"n".ljust(64, b"\0"),
                              trust=TrustConfig(amd_chains=((amd.ask, amd.ark),)), now=_now())
    assert verdict.claims["measurement"] == MR.hex()
    assert len(base64.b64decode(evidence["attestation_report"])) == 1184


def test_refusals_are_one_line_errors(authority: SimAuthority, tmp_path: Path) -> None:
    raced = Kernel("tdx_guest", lambda inblob: authority.td_quote(MR, inblob), bump=2)
    with pytest.raises(TsmError, match="another writer raced"):
        TsmAttester(str(tmp_path), mkdir=raced.mkdir).evidence(b"x")
    with pytest.raises(NotSupportedError, match="'arm_cca_guest' is not supported"):
        TsmAttester(str(tmp_path), mkdir=Kernel("arm_cca_guest", bytes).mkdir).evidence(b"x")
    with pytest.raises(TsmError, match="cannot create a report entry"):
        TsmAttester(str(tmp_path / "no-configfs")).evidence(b"x")
    with pytest.raises(TsmError, match="not terminated"):
        cert_table(struct.pack("<16sII", VCEK_GUID.bytes, 24, 0))
    with pytest.raises(TsmError, match="beyond the table"):
        cert_table(struct.pack("<16sII", VCEK_GUID.bytes, 40, 100) + bytes(24))
