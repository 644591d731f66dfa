"""``inclavare verify`` / ``inclavare inspect`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.testdata_paths import vector

from inclavare.cli.main import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_sgx_prints_status(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "verify", str(vector("dcap", "sgx_quote")), "--collateral",
                        str(vector("dcap", "sgx_quote_collateral.json")), "--at", "2025-07-01T00:00:00Z")
    assert code == 0
    assert "status: ConfigurationAndSWHardeningNeeded" in out and "INTEL-SA-00615" in out


def test_verify_json_hex_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hex_quote = tmp_path / "quote.hex"
    hex_quote.write_text("0x" + vector("dcap", "tdx_quote").read_bytes().hex())
    code, out, _ = _run(capsys, "verify", str(hex_quote), "--collateral",
                        str(vector("dcap", "tdx_quote_collateral.json")), "--at", "2025-07-01T00:00:00Z", "--json")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result) >= {"tee", "status", "advisory_ids", "claims"}
    assert result["tee"] == "tdx" and result["status"] == "UpToDate" and len(result["claims"]["mr_td"]) == 96


def test_failure_is_one_line_and_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "verify", str(vector("dcap", "tdx_quote")), "--collateral",
                          str(vector("dcap", "tdx_quote_collateral.json")), "--at", "2026-11-28T00:00:00Z")
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("inclavare: error:") and "expired" in err


@pytest.mark.parametrize("extra", [[], ["--collateral", "/nonexistent"], ["--at", "yesterday"]])
def test_usage_errors(capsys: pytest.CaptureFixture[str], extra: list[str]) -> None:
    args = ["verify", str(vector("dcap", "sgx_quote"))]
    if extra[:1] == ["--at"]:
        args += ["--collateral", str(vector("dcap", "sgx_quote_collateral.json"))]
    code, _, err = _run(capsys, *args, *extra)
    assert code != 0 and err.startswith("inclavare: error:")


def test_verify_snp(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "verify", str(vector("snp", "attestation.bin")), "--vcek",
                        str(vector("snp", "vcek.testcer")), "--ca", str(vector("snp", "ask_ark_milan.pem")),
                        "--at", "2026-11-28T00:00:00Z", "--json")
    assert code == 0 and json.loads(out)["claims"]["report_data"].startswith("0102030405")


def test_verify_snp_without_a_vcek_anywhere_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A bare report carries no cert_chain: the VCEK must come from --vcek (said in one line)."""
    code, out, err = _run(capsys, "verify", str(vector("snp", "attestation.bin")), "--ca",
                          str(vector("snp", "ask_ark_milan.pem")), "--at", "2026-11-28T00:00:00Z")
    assert code != 0 and out == "" and err.count("\n") == 1 and "--vcek FILE unless the evidence carries" in err


def test_inspect(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "inspect", str(vector("dcap", "tdx_quote_outdated")), "--json")
    assert code == 0
    parsed = json.loads(out)
    assert parsed["tee"] == "tdx" and parsed["evidence"]["header"]["version"] == 5
    assert len(parsed["evidence"]["report"]["mr_service_td"]) == 96
    code, out, _ = _run(capsys, "inspect", str(vector("snp", "attestation.bin")))
    assert code == 0 and "measurement:" in out


def test_old_option_names_still_work_and_help_shows_one_name(capsys: pytest.CaptureFixture[str]) -> None:
    """One name per idea (`--at`, `--trust-anchor` in every command); the old spellings of this
    command (`--now`) keep working but are not advertised."""
    args = ["verify", str(vector("dcap", "sgx_quote")), "--collateral", str(vector("dcap", "sgx_quote_collateral.json"))]
    new, out_new, _ = _run(capsys, *args, "--at", "2025-07-01T00:00:00Z", "--json")
    old, out_old, _ = _run(capsys, *args, "--now", "2025-07-01T00:00:00Z", "--json")
    assert new == old == 0 and out_new == out_old
    from inclavare.cli.main import build_parser

    for command in (["verify", "--help"], ["ratls", "verify", "--help"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(command)
        text = capsys.readouterr().out
        assert "--at RFC3339" in text and "--now" not in text and "--trust-root" not in text


def test_inspect_shows_the_pck_chain_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    """Not hex of PEM text: the chain's names (a simulated chain says SIMULATED in each), no reprs."""
    code, out, _ = _run(capsys, "inspect", str(vector("dcap", "sgx_quote")), "--json")
    assert code == 0
    chain = json.loads(out)["evidence"]["auth_data"]["qe"]["certification_data"]["body"]["pck_certificate_chain"]
    assert [c["simulated"] for c in chain] == [False] * len(chain) and len(chain) == 3
    assert "Intel SGX PCK Certificate" in chain[0]["subject"] and "Intel SGX Root CA" in chain[-1]["subject"]
    code, text, _ = _run(capsys, "inspect", str(vector("dcap", "sgx_quote")))
    assert "pck_certificate_chain[2]:" in text and "Intel SGX Root CA" in text
    assert not any(word in text for word in ("None", "False", "True", "{'"))
