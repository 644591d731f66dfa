"""A short coverage-guided fuzzing run (atheris) of every evidence parser, seeded with the real
vectors: anything but a FormatError fails the run. Marked slow; skipped without atheris."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from testdata_paths import TESTDATA

HARNESS = Path(__file__).with_name("fuzz_targets.py")
SEEDS = {"quote": ["dcap/sgx_quote", "dcap/tdx_quote", "dcap/tdx_quote_outdated"],
         "evidence": ["dcap/tdx_quote", "snp/attestation.bin"],
         "collateral": ["dcap/sgx_quote_collateral.json"], "pem": ["snp/ask_ark_milan.pem"],
         "snp": ["snp/attestation.bin"], "certificate": ["snp/vcek.testcer"], "tcb_info": []}


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(SEEDS))
def test_fuzz_smoke(target: str, tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install atheris)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seed in SEEDS[target]:
        if (TESTDATA / seed).exists():
            shutil.copy(TESTDATA / seed, corpus / Path(seed).name)
    result = subprocess.run([sys.executable, str(HARNESS), target, "-runs=3000", "-max_len=8192", str(corpus)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
