"""Text output of the CLI: the same keys as ``--json``, values as a person reads them.

No Python reprs reach the terminal (``true``/``false``, ``-`` for nothing, lists joined), and a
``simulated: true`` always says what it means.
"""

from __future__ import annotations

from typing import Any

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
