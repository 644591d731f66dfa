"""Enclave containers: preparing the enclave at create time and the lifecycle after it."""

from __future__ import annotations

from inclavare.errors import InclavareError, NotSupportedError
from inclavare.runtime.bundle import Spec
from inclavare.runtime.enclave_config import EnclaveRequest
from inclavare.runtime.oci_log import RuneLog
from inclavare.runtime.rune_entry import Invocation
from inclavare.runtime.rune_state import ContainerRecord


class PreparedEnclave:
    """Handle on what ``prepare_enclave`` set up, released when the container is gone."""

    def release(self, record: ContainerRecord) -> None:
        """Undo what preparation registered (the container no longer exists)."""


def prepare_enclave(request: EnclaveRequest, spec: Spec, record: ContainerRecord,
                    inv: Invocation, log: RuneLog) -> PreparedEnclave:
    config = request.config
    assert config is not None
    raise NotSupportedError(
        f"enclave type {config.type} has no enclave runtime in this installation yet; "
        "refusing to run the container outside an enclave")


def handle_enclave_command(inv: Invocation, runc: str, log: RuneLog,
                           record: ContainerRecord) -> int:
    raise NotSupportedError(f"{inv.command} of enclave containers is not supported yet")


def attest(inv: Invocation, runc: str, log: RuneLog) -> int:
    cid = inv.container_id
    if not cid:
        raise InclavareError('"attest" requires a container id')
    record = ContainerRecord.load(inv.root, cid)
    if record is None or record.enclave is None:
        raise InclavareError(f"container {cid} is not an enclave container")
    raise NotSupportedError("attest is not supported yet")
