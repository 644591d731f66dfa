from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kbs_harness import ALLOW_ALL, KbsProcess, config_text, write_admin_keys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def kbs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KbsProcess]:
    """One sample-enabled KBS (allow-all resource policy, secret at default/key/1) per module."""
    d = str(tmp_path_factory.mktemp("kbs"))
    key = write_admin_keys(d)
    server = KbsProcess(d, config_text("sqlite:///kbs.db", extra="session_timeout_seconds = 60\n"), key).start()
    server.set_resource_policy(ALLOW_ALL)
    assert server.admin("POST", "/resource/default/key/1", b"top secret").status_code == 200
    yield server
    server.stop()


@pytest.fixture
def make_kbs(tmp_path: "os.PathLike[str]") -> Iterator:
    started: list[KbsProcess] = []

    def factory(extra: str = "", *, sample: bool = True, admin: bool = True,
                store: str = "sqlite:///kbs.db", directory: str | None = None) -> KbsProcess:
        d = directory or str(tmp_path)
        key = write_admin_keys(d) if admin and not os.path.exists(os.path.join(d, "admin.key")) else None
        if key is None and admin:
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            with open(os.path.join(d, "admin.key"), "rb") as fh:
                key = load_pem_private_key(fh.read(), None)  # type: ignore[assignment]
        server = KbsProcess(d, config_text(store, sample=sample, admin=admin, extra=extra), key).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
