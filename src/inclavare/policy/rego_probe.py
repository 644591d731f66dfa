"""Compile and evaluate a candidate policy in a child process before the server accepts it.

rego-cpp (under regopy) aborts the whole process on some valid Rego (e.g. ``with`` over a rule
that references another rule). A policy upload must never take the key broker down, so new
policies are first tried here, in a throwaway interpreter process; only if it survives is the
policy compiled in the server.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from inclavare.policy.rego_policy import PolicyError

PROBE_TIMEOUT_S = 20.0


def probe_policy(source: str, rule: str, data: Mapping[str, Any], input_doc: Mapping[str, Any]) -> None:
    """Raise ``PolicyError`` if compiling/evaluating ``source`` fails or crashes the engine."""
    request = json.dumps({"source": source, "rule": rule, "data": data, "input": input_doc})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "inclavare.policy.rego_probe"], input=request.encode(),
            capture_output=True, timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise PolicyError(f"policy evaluation did not finish within {PROBE_TIMEOUT_S:.0f} s") from exc
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise PolicyError(f"policy crashes the Rego engine ({name}); refused")
    if done.returncode != 0:
        message = done.stdout.decode(errors="replace").strip().splitlines()
        raise PolicyError(message[-1] if message else f"policy probe failed (exit {done.returncode})")


def _main() -> int:
    request = json.loads(sys.stdin.buffer.read())
    from inclavare.policy.rego_policy import RegoPolicy

    try:
        RegoPolicy(request["source"], request["rule"], request["data"]).evaluate(request["input"])
    except PolicyError as exc:
        print(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
