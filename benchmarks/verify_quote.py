"""Quote verifications per second: inclavare's DCAP verifier vs dcap-qvl, same run, one core.

Stream: the real SGX v3 and TDX v4 quotes with their collateral at their pinned times, the TDX v5
negative vector (rejected by both), and fresh simulated SGX quotes (verified against the
simulated root). Both verifiers get the same (quote, collateral, time) items; collateral is parsed
once per verifier, as a verification service would hold it. Every verdict (accept/reject and TCB
status) is compared. Progress goes to stderr; the last stdout line is one JSON object.

Beside that ratio: simulated TDX quotes (v4 and v5, the simulated TDX collateral) through both
verifiers, and simulated SEV-SNP reports (v3, VCEK under the simulated ASK/ARK) through ours —
dcap-qvl verifies Intel quotes only, so SNP has a rate and no ratio.

Run: .venv/bin/python benchmarks/verify_quote.py [--rounds N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import dcap_qvl
from cryptography.hazmat.primitives.serialization import Encoding

from inclavare.errors import InclavareError
from inclavare.formats.collateral import Collateral
from inclavare.tee.sim_authority import SimAuthority
from inclavare.verify.dcap import verify_quote
from inclavare.verify.intel_sgx_root import INTEL_SGX_ROOT_CA

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "dcap"


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _stream(sim_dir: str) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    for quote, collateral, moment in (
        ("sgx_quote", "sgx_quote_collateral.json", "2025-07-01T00:00:00Z"),
        ("tdx_quote", "tdx_quote_collateral.json", "2025-07-01T00:00:00Z"),
        ("tdx_quote_outdated", "tdx_quote_outdated_collateral.json", "2026-03-01T00:00:00Z"),
    ):
        if not (TESTDATA / quote).exists():
            print(f"skipping {quote}: {TESTDATA} not found", file=sys.stderr)
            continue
        text = (TESTDATA / collateral).read_text()
        items.append({"name": quote, "quote": (TESTDATA / quote).read_bytes(), "collateral_text": text,
                      "now": _utc(moment), "root": INTEL_SGX_ROOT_CA})
    authority = SimAuthority.load_or_create(sim_dir)
    text = authority.collateral().to_json()
    now = dt.datetime.now(dt.timezone.utc)
    for i in range(4):
        quote = authority.quote(bytes([i]) * 32, f"benchmark nonce {i}".encode())
        items.append({"name": f"sim_sgx_{i}", "quote": quote, "collateral_text": text, "now": now,
                      "root": authority.root_ca})
    return _prepare(items)


def _prepare(items: list[dict[str, object]]) -> list[dict[str, object]]:
    for item in items:
        item["ours"] = Collateral.from_json(item["collateral_text"])  # type: ignore[arg-type]
        item["theirs"] = dcap_qvl.QuoteCollateralV3.from_json(item["collateral_text"])
        item["root_der"] = item["root"].public_bytes(Encoding.DER)  # type: ignore[attr-defined]
        item["now_secs"] = int(item["now"].timestamp())  # type: ignore[attr-defined]
    return items


def _sim_tdx_stream(authority: SimAuthority) -> list[dict[str, object]]:
    """Fresh simulated TD quotes, v4 and v5, with the simulated TDX collateral."""
    text = authority.tdx_collateral().to_json()
    now = dt.datetime.now(dt.timezone.utc)
    return _prepare([{"name": f"sim_tdx_v{version}_{i}", "quote": authority.td_quote(
        bytes([i]) * 48, f"benchmark nonce {i}".encode(), version=version), "collateral_text": text,
        "now": now, "root": authority.root_ca} for version in (4, 5) for i in range(2)])


def _snp_rate(amd_dir: str, rounds: int) -> dict[str, object]:
    """Simulated SNP reports verified by ours (Trustee evidence JSON, the VCEK in cert_chain)."""
    from inclavare.tee.registry import SNP
    from inclavare.tee.sim_amd import SimAmdAuthority
    from inclavare.tee.sim_snp import SimSnpAttester
    from inclavare.verify.evidence import TrustConfig, verify_evidence

    amd = SimAmdAuthority.load_or_create(amd_dir)
    trust = TrustConfig(amd_chains=((amd.ask, amd.ark),))
    evidence = [SimSnpAttester(amd, bytes([i]) * 48).evidence(f"benchmark nonce {i}".encode()) for i in range(4)]
    now = dt.datetime.now(dt.timezone.utc)

    def ours(item: dict[str, object]) -> str:
        try:
            return "accept:" + verify_evidence(SNP.name, item, report_data=None, trust=trust, now=now).status
        except InclavareError:
            return "reject"

    ours_per_s, verdicts = max((_rate(ours, evidence, rounds) for _ in range(3)),  # type: ignore[arg-type]
                               key=lambda r: r[0])
    return {"inclavare_per_s": round(ours_per_s, 1), "items": len(evidence),
            "verdicts": sorted(set(verdicts)), "baseline": "none (dcap-qvl verifies Intel quotes only)"}


def _ours(item: dict[str, object]) -> str:
    try:
        result = verify_quote(item["quote"], item["ours"], now=item["now"],  # type: ignore[arg-type]
                              trust_anchors=(item["root"],))  # type: ignore[arg-type]
        return "accept:" + result.status
    except InclavareError:
        return "reject"


def _theirs(item: dict[str, object]) -> str:
    try:
        if item["root"] is INTEL_SGX_ROOT_CA:
            result = dcap_qvl.verify(item["quote"], item["theirs"], item["now_secs"])
        else:
            result = dcap_qvl.verify_with_root_ca(item["quote"], item["theirs"], item["root_der"],
                                                  item["now_secs"])
        return "accept:" + result.status
    except ValueError:
        return "reject"


def _rate(verify: object, items: list[dict[str, object]], rounds: int) -> tuple[float, list[str]]:
    verdicts: list[str] = []
    start = time.perf_counter()
    for _ in range(rounds):
        for item in items:
            verdicts.append(verify(item))  # type: ignore[operator]
    elapsed = time.perf_counter() - start
    return len(verdicts) / elapsed, verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    with tempfile.TemporaryDirectory() as sim_dir:
        items = _stream(sim_dir)
        print(f"stream: {len(items)} items x {args.rounds} rounds", file=sys.stderr)
        _rate(_ours, items, 3)
        _rate(_theirs, items, 3)
        ours_best, theirs_best = 0.0, 0.0
        identical = True
        for trial in range(3):
            theirs, theirs_verdicts = _rate(_theirs, items, args.rounds)
            ours, our_verdicts = _rate(_ours, items, args.rounds)
            identical = identical and our_verdicts == theirs_verdicts
            ours_best, theirs_best = max(ours_best, ours), max(theirs_best, theirs)
            print(f"trial {trial}: inclavare {ours:.0f}/s, dcap-qvl {theirs:.0f}/s, "
                  f"verdicts identical: {our_verdicts == theirs_verdicts}", file=sys.stderr)
        per_item = {item["name"]: _ours(item) for item in items}
        tdx = _compare(_sim_tdx_stream(SimAuthority.load_or_create(sim_dir)), args.rounds, "sim TDX")
        snp = _snp_rate(os.path.join(sim_dir, "amd"), args.rounds)
        print(f"sim SNP: inclavare {snp['inclavare_per_s']}/s", file=sys.stderr)
    print(json.dumps({
        "benchmark": "verify_quote",
        "inclavare_per_s": round(ours_best, 1),
        "dcap_qvl_per_s": round(theirs_best, 1),
        "ratio": round(ours_best / theirs_best, 2),
        "verdicts_identical": identical,
        "items": len(items),
        "rounds": args.rounds,
        "verdicts": per_item,
        "baseline": f"dcap-qvl {dcap_qvl.__version__} (same process, same core)",
        "sim_tdx": tdx,
        "sim_snp": snp,
    }))
    return 0 if identical and tdx["verdicts_identical"] else 1


def _compare(items: list[dict[str, object]], rounds: int, label: str) -> dict[str, object]:
    """Best of three: ours and dcap-qvl over the same items, verdicts compared."""
    ours_best, theirs_best, identical = 0.0, 0.0, True
    for _ in range(3):
        theirs, theirs_verdicts = _rate(_theirs, items, rounds)
        ours, our_verdicts = _rate(_ours, items, rounds)
        identical = identical and our_verdicts == theirs_verdicts
        ours_best, theirs_best = max(ours_best, ours), max(theirs_best, theirs)
    print(f"{label}: inclavare {ours_best:.0f}/s, dcap-qvl {theirs_best:.0f}/s, verdicts identical: {identical}",
          file=sys.stderr)
    return {"inclavare_per_s": round(ours_best, 1), "dcap_qvl_per_s": round(theirs_best, 1),
            "ratio": round(ours_best / theirs_best, 2), "verdicts_identical": identical, "items": len(items),
            "verdicts": sorted({_ours(item) for item in items})}


if __name__ == "__main__":
    sys.exit(main())
