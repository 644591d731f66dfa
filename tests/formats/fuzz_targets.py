"""atheris harness for the evidence parsers: ``python fuzz_targets.py TARGET -runs=N``.

Any exception other than the typed ``FormatError`` is a finding (atheris reports it and exits
non-zero). Seeds come from the shared real vectors when present."""

from __future__ import annotations

import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports():
    from inclavare.errors import FormatError
    from inclavare.formats.collateral import Collateral
    from inclavare.formats.evidence import load_evidence
    from inclavare.formats.pem import parse_pem_blocks
    from inclavare.formats.qe_identity import parse_qe_identity
    from inclavare.formats.quote import parse_quote
    from inclavare.formats.snp import parse_snp_report
    from inclavare.formats.tcb_info import parse_tcb_info
    from inclavare.formats.x509_view import CertificateView


def _collateral(data: bytes) -> None:
    collateral = Collateral.from_json(data)
    parse_tcb_info(collateral.tcb_info)
    parse_qe_identity(collateral.qe_identity)


TARGETS: dict[str, Callable[[bytes], object]] = {
    "quote": parse_quote, "evidence": load_evidence, "collateral": _collateral,
    "pem": parse_pem_blocks, "snp": parse_snp_report, "certificate": CertificateView.parse,
    "tcb_info": lambda data: parse_tcb_info(data.decode("utf-8", "replace")),
}


def main() -> None:
    name = sys.argv[1]
    target = TARGETS[name]

    def one_input(data: bytes) -> None:
        try:
            target(data)
        except FormatError:
            pass

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
