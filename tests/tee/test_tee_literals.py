"""No TEE name as a string literal outside the registry (``inclavare/tee/registry.py``).

Names are Trustee's lowercase spellings; uppercase ``SGX``/``TDX`` are Intel's TCB Info and QE
Identity ``id`` values or display labels, not names. Every other allowed literal is listed below
with why; the list must shrink, never grow without a reason a reviewer accepts.
"""

from __future__ import annotations

import ast
import pathlib

import inclavare

TEE_NAMES = frozenset({"sgx", "tdx", "snp", "sample", "sim"})
SRC = pathlib.Path(inclavare.__file__).parent
REGISTRY = "tee/registry.py"

ALLOWED: dict[str, tuple[frozenset[str], str]] = {
    "services/kbs/protocol.py": (frozenset({"sgx", "snp", "tdx", "sample"}),
                                 "wire format: kbs-types' Tee serde names a request may carry (also TEEs "
                                 "this broker has no verifier for), and those kbs-types leaves unpadded"),
    "policy/reference_values.py": (frozenset({"sample"}),
                                   "wire format: Trustee RVPS message type 'sample', not a TEE"),
    "runtime/epc_need.py": (frozenset({"sgx"}), "wire format: the 'sgx' table of a Gramine manifest"),
    "formats/snp.py": (frozenset({"snp"}), "wire format: the SNP firmware component of AMD's TCB version"),
    # 'sim' below is the simulated enclave *type and runtime* (OCI annotation enclave.type=sim,
    # rune's built-in PAL, the authority's state directory, the CLI's subcommand/choice names),
    # not a TEE: which TEE a simulated container gets is tee/simulated.simulated_tee.
    "tee/simulated.py": (frozenset({"sim"}), "wire format: the enclave.type and runtime annotation values"),
    "runtime/pal/sim.py": (frozenset({"sim"}), "the built-in PAL's name"),
    "runtime/enclave_prepare.py": (frozenset({"sim"}), "enclave runtime name (rune)"),
    "runtime/enclave_commands.py": (frozenset({"sim"}), "enclave runtime/type name (rune)"),
    "services/agent/server.py": (frozenset({"sim"}), "enclave type and the authority's state directory"),
    "cli/sim_cmd.py": (frozenset({"sim"}), "the `inclavare sim` subcommand"),
    "cli/ratls_cmd.py": (frozenset({"sim"}), "the `--attester sim` choice"),
    "demo.py": (frozenset({"sim"}), "enclave.type annotation and the authority's directory"),
}


def _literals(path: pathlib.Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value in TEE_NAMES and id(node) not in docstrings]


def test_no_tee_name_literal_outside_the_registry() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == REGISTRY:
            continue
        allowed = ALLOWED.get(rel, (frozenset(), ""))[0]
        found += [f"{rel}:{line}: {value!r}" for line, value in _literals(path) if value not in allowed]
    assert not found, "TEE names outside inclavare/tee/registry.py:\n" + "\n".join(found)


def test_the_allow_list_names_only_what_is_there() -> None:
    """A stale entry would let a literal come back unnoticed."""
    for rel, (names, _) in ALLOWED.items():
        present = {value for _, value in _literals(SRC / rel)}
        assert names <= present, f"{rel}: {sorted(names - present)} no longer there: shrink the allow-list"


def test_the_registry_holds_the_names() -> None:
    assert {"sgx", "tdx", "snp", "sample"} <= {value for _, value in _literals(SRC / REGISTRY)}
