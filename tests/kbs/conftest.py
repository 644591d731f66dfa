from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
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


# --- PostgreSQL (shared by the replica tests) ----------------------------------------------------


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server on a unix socket, run as the 'postgres' user."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg not installed (pip install 'inclavare[postgres]')")
    initdb, server_bin = _pg_bin("initdb"), _pg_bin("postgres")
    if not initdb or not server_bin:
        pytest.skip("PostgreSQL server not installed (Debian package 'postgresql')")
    if os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip("needs root and runuser to start PostgreSQL as the 'postgres' user")
    import pwd

    try:
        pg = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no 'postgres' system user")
    base = tempfile.mkdtemp(prefix="inclavare-pg-")
    os.chmod(base, 0o755)
    data, sock = os.path.join(base, "data"), os.path.join(base, "sock")
    for d in (data, sock):
        os.mkdir(d, 0o700)
        os.chown(d, pg.pw_uid, pg.pw_gid)
    run = ["runuser", "-u", "postgres", "--"]
    subprocess.run(run + [initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)
    proc = subprocess.Popen(run + [server_bin, "-D", data, "-k", sock, "-c", "listen_addresses=",
                                   "-c", "max_connections=50"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"postgresql://postgres@/postgres?host={sock}"
    deadline = time.monotonic() + 30
    import psycopg

    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            break
        except psycopg.Error:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"PostgreSQL did not start: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}")
            time.sleep(0.2)
    try:
        yield url
    finally:
        # runuser does not forward signals: stop the postmaster itself (fast shutdown).
        pg_ctl = _pg_bin("pg_ctl")
        stopped = pg_ctl is not None and subprocess.run(
            run + [pg_ctl, "-D", data, "-m", "fast", "-w", "-t", "30", "stop"], capture_output=True).returncode == 0
        if not stopped:
            _signal_postmaster(data, signal.SIGQUIT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def _signal_postmaster(data: str, sig: int) -> None:
    try:
        with open(os.path.join(data, "postmaster.pid")) as fh:
            os.kill(int(fh.readline()), sig)
    except (OSError, ValueError):
        pass
