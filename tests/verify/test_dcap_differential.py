"""Differential test against dcap-qvl (the reference verifier): single-bit mutations spread over
every region of each real quote and of its collateral JSON must get identical verdicts —
accept/reject and TCB status. The default run samples a few thousand mutations; the full sweep
(every bit of every quote byte, a bit of every collateral byte) is marked slow.

dcap-qvl accepts some mutations: bytes it never interprets (zero padding after the signature
data, the v4/v5 type-6 wrapper's type field, text between or after PEM blocks, a truncated or
mangled surplus copy of the root CA that path building never needs, the unused
``pck_crl_issuer_chain``), whitespace inside PEM base64, hex letter case, and signature-data
lengths that grow into zero padding. Each is matched here and explained in docs/verify.md.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import re
import zlib
from collections.abc import Iterator

import dcap_qvl
import pytest
from testdata_paths import PINNED_2025, PINNED_2026, vector

from inclavare.errors import InclavareError
from inclavare.formats.collateral import Collateral
from inclavare.formats.quote import HEADER_SIZE, parse_quote
from inclavare.verify.dcap import verify_quote

VECTORS = [("sgx_quote", "sgx_quote_collateral.json", PINNED_2025),
           ("tdx_quote", "tdx_quote_collateral.json", PINNED_2025),
           ("tdx_quote_outdated", "tdx_quote_outdated_collateral.json", PINNED_2026)]


def quote_regions(raw: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges of a quote's parts, from its own declared layout."""
    quote = parse_quote(raw)
    signed = quote.signed_length
    regions = {"header": (0, HEADER_SIZE), "body": (HEADER_SIZE, signed), "sig_data_len": (signed, signed + 4)}
    pos = signed + 4
    regions["quote_signature"] = (pos, pos + 64)
    regions["attestation_key"] = (pos + 64, pos + 128)
    pos += 128
    if quote.auth_data.wrapper_cert_type is not None:
        regions["type6_wrapper"] = (pos, pos + 6)
        pos += 6
    regions["qe_report"] = (pos, pos + 384)
    regions["qe_report_signature"] = (pos + 384, pos + 448)
    pos += 448
    auth_len = len(quote.auth_data.qe.qe_auth_data)
    regions["qe_auth_data"] = (pos, pos + 2 + auth_len)
    pos += 2 + auth_len
    regions["cert_data_header"] = (pos, pos + 6)
    pos += 6
    chain = quote.auth_data.qe.certification_data.body
    starts = [m.start() for m in re.finditer(rb"-----BEGIN", chain)] + [len(chain)]
    for index, (start, end) in enumerate(itertools.pairwise(starts)):
        regions[f"pem_block_{index}"] = (pos + start, pos + end)
    pos += len(chain)
    if pos < len(raw):
        regions["trailing"] = (pos, len(raw))
    return regions


def collateral_regions(text: str) -> dict[str, tuple[int, int]]:
    """Byte ranges of each top-level member's value (and the JSON structure around them)."""
    raw = text.encode()
    regions: dict[str, tuple[int, int]] = {}
    for match in re.finditer(rb'"(\w+)":\s*"', raw):
        start = match.end()
        end = start
        while raw[end] != ord('"') or raw[end - 1] == ord("\\"):
            end += 1
        regions[match.group(1).decode()] = (start, end)
    regions["json_structure"] = (0, min(start for start, _ in regions.values()))
    return regions


def ours(quote: bytes, collateral: bytes, now: dt.datetime) -> str:
    try:
        result = verify_quote(quote, Collateral.from_json(collateral), now=now)
        return f"accept:{result.status}:{','.join(result.advisory_ids)}"
    except InclavareError:
        return "reject"


def theirs(quote: bytes, collateral: bytes, now: dt.datetime) -> str:
    try:
        text = collateral.decode("utf-8")
    except UnicodeDecodeError:
        return "reject"  # dcap-qvl only takes UTF-8 text
    try:
        result = dcap_qvl.verify(quote, dcap_qvl.QuoteCollateralV3.from_json(text), int(now.timestamp()))
        return f"accept:{result.status}:{','.join(result.advisory_ids)}"
    except ValueError:
        return "reject"


def mutations(regions: dict[str, tuple[int, int]], per_region: int, seed: int) -> Iterator[tuple[str, int, int]]:
    rng = random.Random(seed)
    for name, (start, end) in regions.items():
        positions = range(start, end)
        chosen = positions if len(positions) <= per_region else rng.sample(positions, per_region)
        for position in chosen:
            yield name, position, rng.randrange(8)


def _differences(quote: bytes, collateral: bytes, now: dt.datetime, target: str,
                 muts: Iterator[tuple[str, int, int]]) -> tuple[int, int, list[str]]:
    count = accepted = 0
    diffs: list[str] = []
    for region, position, bit in muts:
        if target == "quote":
            mutated = bytearray(quote)
            mutated[position] ^= 1 << bit
            q, c = bytes(mutated), collateral
        else:
            mutated = bytearray(collateral)
            mutated[position] ^= 1 << bit
            q, c = quote, bytes(mutated)
        mine, reference = ours(q, c, now), theirs(q, c, now)
        count += 1
        accepted += reference != "reject"
        if mine != reference:
            diffs.append(f"{target}:{region}@{position}^bit{bit}: ours={mine} dcap-qvl={reference}")
    return count, accepted, diffs


@pytest.mark.parametrize("quote_name,collateral_name,now", VECTORS)
def test_quote_mutations_sampled(quote_name: str, collateral_name: str, now: dt.datetime) -> None:
    quote = vector("dcap", quote_name).read_bytes()
    collateral = vector("dcap", collateral_name).read_bytes()
    assert ours(quote, collateral, now) == theirs(quote, collateral, now)
    count, _, diffs = _differences(quote, collateral, now, "quote",
                                   mutations(quote_regions(quote), 60, seed=zlib.crc32(quote_name.encode())))
    assert count >= 500
    assert not diffs, "\n".join(diffs[:20])


@pytest.mark.parametrize("quote_name,collateral_name,now", VECTORS)
def test_collateral_mutations_sampled(quote_name: str, collateral_name: str, now: dt.datetime) -> None:
    quote = vector("dcap", quote_name).read_bytes()
    collateral = vector("dcap", collateral_name).read_bytes()
    regions = collateral_regions(collateral.decode())
    assert set(regions) >= {"tcb_info", "qe_identity", "root_ca_crl", "pck_crl", "tcb_info_signature"}
    count, _, diffs = _differences(quote, collateral, now, "collateral", mutations(regions, 40, seed=7))
    assert count >= 300
    assert not diffs, "\n".join(diffs[:20])


def test_known_accepted_mutations_are_accepted_by_both() -> None:
    """The regions dcap-qvl tolerates really are tolerated (so the sampled test is not vacuous)."""
    quote = vector("dcap", "tdx_quote").read_bytes()
    collateral = vector("dcap", "tdx_quote_collateral.json").read_bytes()
    regions = quote_regions(quote)
    probes = {
        "zero padding after the signature data": (regions["trailing"][0] + 10, 3),
        "type-6 wrapper type field": (regions["type6_wrapper"][0], 0),
        "surplus root CA copy": (regions["pem_block_2"][0] + 200, 0),
        "signature-data length grows into padding": (regions["sig_data_len"][0], 0),
    }
    for what, (position, bit) in probes.items():
        mutated = bytearray(quote)
        mutated[position] ^= 1 << bit
        assert ours(bytes(mutated), collateral, PINNED_2025) == theirs(bytes(mutated), collateral, PINNED_2025) \
            == "accept:UpToDate:", what
    text = collateral.decode()
    document = json.loads(text)
    document["pck_crl_issuer_chain"] = "unused by verification"
    document["pck_crl"] = document["pck_crl"].upper()
    document["tcb_info_issuer_chain"] = document["tcb_info_issuer_chain"].replace("\n", "\x0c", 3)
    altered = json.dumps(document).encode()
    assert ours(quote, altered, PINNED_2025) == theirs(quote, altered, PINNED_2025) == "accept:UpToDate:"


@pytest.mark.slow
@pytest.mark.parametrize("quote_name,collateral_name,now", VECTORS[:2])
def test_full_sweep(quote_name: str, collateral_name: str, now: dt.datetime) -> None:
    """Every bit of every quote byte, and one (seeded) bit of every collateral byte."""
    quote = vector("dcap", quote_name).read_bytes()
    collateral = vector("dcap", collateral_name).read_bytes()
    all_quote = ((f"byte{p}", p, b) for p in range(len(quote)) for b in range(8))
    count, accepted, diffs = _differences(quote, collateral, now, "quote", all_quote)
    assert not diffs, "\n".join(diffs[:20])
    rng = random.Random(zlib.crc32(collateral_name.encode()))
    every_byte = ((f"byte{p}", p, rng.randrange(8)) for p in range(len(collateral)))
    count2, accepted2, diffs = _differences(quote, collateral, now, "collateral", every_byte)
    assert not diffs, "\n".join(diffs[:20])
    assert count + count2 > 50_000 and accepted and accepted2
