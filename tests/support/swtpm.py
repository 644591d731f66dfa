"""A real swtpm for tests: manufactured by swtpm_setup with an EK certificate from a CA made for
the test (swtpm_localca in a temp directory), served on loopback TCP, stopped afterwards.

swtpm's TCTI needs the command port and the control port next to it (port + 1); the pair is
picked free just before start and swtpm is retried on another pair if it lost the race.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from tests.support.processes import stop

SWTPM = shutil.which("swtpm")
SWTPM_SETUP = shutil.which("swtpm_setup")
LOCALCA = shutil.which("swtpm_localca") or "/usr/bin/swtpm_localca"


@dataclass(frozen=True)
class Swtpm:
    tcti: str
    ca_dir: str
    port: int

    @property
    def root_ca(self) -> str:
        return os.path.join(self.ca_dir, "swtpm-localca-rootca-cert.pem")

    @property
    def issuer_ca(self) -> str:
        return os.path.join(self.ca_dir, "issuercert.pem")

    def ek_cas_bundle(self, path: str) -> str:
        """Root and intermediate in one PEM file (what ``tpm_ek_ca`` names)."""
        with open(path, "wb") as out:
            for name in (self.root_ca, self.issuer_ca):
                with open(name, "rb") as fh:
                    out.write(fh.read())
        return path


def require_swtpm() -> None:
    if SWTPM is None or SWTPM_SETUP is None or not os.path.exists(LOCALCA):
        pytest.skip("swtpm/swtpm_setup/swtpm_localca are not installed (make setup installs swtpm swtpm-tools)")
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError:
        pytest.skip("tpm2-pytss is not installed (make setup installs it with libtss2-dev)")


def manufacture(directory: str) -> str:
    """A TPM state with an RSA EK certificate issued by a fresh local CA under ``directory``."""
    ca, state = os.path.join(directory, "ca"), os.path.join(directory, "state")
    os.makedirs(ca)
    os.makedirs(state)
    conf = os.path.join(directory, "localca.conf")
    with open(conf, "w") as fh:
        fh.write(f"statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\n"
                 f"certserial = {ca}/certserial\n")
    open(os.path.join(directory, "localca.options"), "w").close()
    setup = os.path.join(directory, "swtpm_setup.conf")
    with open(setup, "w") as fh:
        fh.write(f"create_certs_tool = {LOCALCA}\ncreate_certs_tool_config = {conf}\n"
                 f"create_certs_tool_options = {directory}/localca.options\n")
    assert SWTPM_SETUP is not None
    subprocess.run([SWTPM_SETUP, "--tpm2", "--tpmstate", state, "--create-ek-cert", "--config", setup,
                    "--pcr-banks", "sha256", "--overwrite"], check=True, capture_output=True, timeout=60)
    return ca


def _free_pair() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port pair for swtpm")


def _serving(port: int, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


@contextmanager
def running_swtpm(directory: str) -> Iterator[Swtpm]:
    """Manufacture a TPM under ``directory`` and serve it until the block ends."""
    ca = manufacture(directory)
    assert SWTPM is not None
    for _ in range(5):
        port = _free_pair()
        proc = subprocess.Popen(
            [SWTPM, "socket", "--tpm2", "--tpmstate", f"dir={directory}/state",
             "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
             "--flags", "not-need-init,startup-clear"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if _serving(port, proc, time.monotonic() + 10):
            break
        proc.kill()
        proc.wait(5)
    else:
        raise RuntimeError("swtpm did not start")
    try:
        yield Swtpm(f"swtpm:host=127.0.0.1,port={port}", ca, port)
    finally:
        stop(proc, 5)


def swtpm_for_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swtpm]:
    """Body of a module-scoped ``swtpm`` fixture: ``swtpm = pytest.fixture(scope="module")(swtpm_for_module)``."""
    require_swtpm()
    with running_swtpm(str(tmp_path_factory.mktemp("swtpm"))) as tpm:
        yield tpm
