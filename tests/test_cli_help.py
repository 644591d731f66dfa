"""Every command of `inclavare` explains itself: a one-line help and a description for every
command, help text for every option and argument, no reST markup leaking into the terminal."""

from __future__ import annotations

import argparse

from inclavare.cli.main import build_parser


def _missing(parser: argparse.ArgumentParser, path: list[str]) -> list[str]:
    found = []
    texts = [parser.description or ""]
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            helps = {choice.dest: choice.help for choice in action._choices_actions}  # noqa: SLF001
            for name, child in action.choices.items():
                if not helps.get(name):
                    found.append(f"{' '.join(path + [name])}: no one-line help")
                if not child.description:
                    found.append(f"{' '.join(path + [name])}: no description")
                found += _missing(child, path + [name])
        elif action.help is None or action.help == "":
            found.append(f"{' '.join(path)}: {'/'.join(action.option_strings) or action.dest} has no help")
        texts.append(action.help if isinstance(action.help, str) else "")
    found += [f"{' '.join(path)}: reST markup in its help" for text in texts if "``" in text]
    return found


def test_every_command_option_and_argument_has_help() -> None:
    assert _missing(build_parser(), ["inclavare"]) == []
