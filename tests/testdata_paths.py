"""Where the shared real test vectors live: ``<repo>/../shared/testdata`` (read in place)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"

# The pinned verification times of the vectors (see testdata/README.md) and "today".
PINNED_2025 = dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc)
PINNED_2026 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
TODAY = dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc)


def vector(*parts: str) -> Path:
    """Path of a shared vector; skips the test when the shared test data is not present."""
    path = TESTDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test vectors not found at {TESTDATA} (need ../shared beside the repo)")
    return path
