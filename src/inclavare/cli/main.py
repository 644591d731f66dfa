"""``inclavare``: the operator and developer command line.

Each subcommand lives in its own module under ``inclavare.cli`` and exposes
``add_parser(subparsers)``; registration imports nothing heavy, the handler imports what it
needs. Errors of ours print one line (``inclavare: error: ...``) and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from inclavare import __version__
from inclavare.errors import InclavareError

# Subcommand modules, in the order `inclavare --help` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "inclavare.cli.install_cmd",
    "inclavare.cli.demo_cmd",
    "inclavare.cli.verify_cmd",
    "inclavare.cli.sim_cmd",
    "inclavare.cli.agent_cmd",
    "inclavare.cli.device_plugin_cmd",
    "inclavare.cli.measure_cmd",
    "inclavare.cli.epm_cmd",
    "inclavare.cli.kbs_cmd",
    "inclavare.cli.ratls_cmd",
    "inclavare.cli.node_cmd",
    "inclavare.cli.doctor_cmd",
    "inclavare.cli.explain_cmd",
    "inclavare.cli.image_cmd",
    "inclavare.cli.secret_cmd",
)


def describe_os_error(exc: OSError) -> str:
    """One line: what the system said, and about which path."""
    what = exc.strerror or str(exc) or type(exc).__name__
    paths = [p for p in (exc.filename, exc.filename2) if p]
    return f"{what}: {' -> '.join(map(str, paths))}" if paths else what


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inclavare",
        description="Confidential-computing containers: enclaves, attestation, key broker.",
    )
    parser.add_argument("--version", action="version", version=f"inclavare {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    _finish_help(parser)
    return parser


def _finish_help(parser: argparse.ArgumentParser) -> None:
    """Help reads as text: docstrings lose their reST backticks, and a command without its own
    description is described by its one-line help."""
    if parser.description:
        parser.description = parser.description.replace("``", "")
    for action in parser._actions:  # noqa: SLF001  (argparse keeps its tree here)
        if isinstance(action.help, str):
            action.help = action.help.replace("``", "")
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            helps = {choice.dest: choice.help for choice in action._choices_actions}  # noqa: SLF001
            for name, child in action.choices.items():
                if not child.description and helps.get(name):
                    text = str(helps[name])
                    child.description = text[0].upper() + text[1:] + "."
                _finish_help(child)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.handler(args)
    except InclavareError as exc:
        print(f"inclavare: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("inclavare: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `inclavare inspect … | head`: the reader left, not a bug
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # the environment said no (a missing directory, a port in use): not a bug
        print(f"inclavare: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: say so in one line, keep the traceback for --debug
        if os.environ.get("INCLAVARE_DEBUG"):
            raise
        print(
            f"inclavare: internal error: {type(exc).__name__}: {exc} "
            "(set INCLAVARE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 70
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
