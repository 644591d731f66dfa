"""Checked-in gRPC stubs must be what grpcio-tools generates from the checked-in .proto."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def assert_stubs_match_proto(proto: str) -> None:
    """``proto`` is relative to src/ (e.g. inclavare/images/keyprovider.proto); regenerate and compare."""
    out = Path(tempfile.mkdtemp(prefix="stubs-"))
    try:
        target = out / Path(proto).parent
        target.mkdir(parents=True)
        shutil.copy(SRC / proto, out / proto)
        r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{out}", f"--python_out={out}",
                            f"--grpc_python_out={out}", proto], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        stem = Path(proto).stem
        for name in (f"{stem}_pb2.py", f"{stem}_pb2_grpc.py"):
            generated = (target / name).read_text()
            assert generated == (SRC / Path(proto).parent / name).read_text(), f"{name} is stale: regenerate it"
    finally:
        shutil.rmtree(out)
