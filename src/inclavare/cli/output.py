"""Text output of the CLI: the same keys as ``--json``, values as a person reads them.

No Python reprs reach the terminal (``true``/``false``, ``-`` for nothing, lists joined), and a
``simulated: true`` always says what it means.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from inclavare.errors import ConfigError

SIMULATED = "true (SIMULATED TEE: this evidence proves nothing about hardware)"


def text_value(value: Any, key: str = "") -> str:
    if value is True:
        return SIMULATED if key == "simulated" else "true"
    if value is False:
        return "false"
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(text_value(v) for v in value) if value else "-"
    return str(value)


def print_fields(document: dict[str, Any], prefix: str = "") -> None:
    """``key: value`` lines; nested objects as dotted keys (``claims.mr_enclave: …``)."""
    for key, value in document.items():
        if isinstance(value, dict):
            print_fields(value, f"{prefix}{key}.")
        else:
            print(f"{prefix}{key}: {text_value(value, key)}")


def add_at_option(parser: argparse.ArgumentParser, what: str = "verify") -> None:
    """``--at RFC3339``: the one name, in every command, for "judge as of this time"."""
    parser.add_argument("--at", metavar="RFC3339", help=f"{what} as of this time, e.g. 2025-07-01T00:00:00Z "
                                                        "(default: now; real collateral expires within weeks)")
    parser.add_argument("--now", dest="at", help=argparse.SUPPRESS)  # the old name, still accepted


def parse_at(text: str | None) -> dt.datetime:
    if text is None:
        return dt.datetime.now(dt.timezone.utc)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--at must be an RFC 3339 time such as 2025-07-01T00:00:00Z, not {text!r}") from None
    if moment.tzinfo is None:
        raise ConfigError(f"--at needs a time zone (e.g. {text}Z)")
    return moment
