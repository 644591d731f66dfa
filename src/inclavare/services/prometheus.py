"""Prometheus text exposition for the project's services: labelled counters and gauges read at
scrape time. Plain text; no client library needed for this much."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Mapping


def _series(name: str, labels: tuple[tuple[str, str], ...], value: float) -> str:
    tag = ",".join(f'{k}="{v}"' for k, v in labels)
    return f"{name}{{{tag}}} {value:g}" if tag else f"{name} {value:g}"


class Counters:
    """Counters (declared with their help, so they show 0 before the first event) and gauges."""

    def __init__(self, counters: Mapping[str, str],
                 gauges: Mapping[str, tuple[str, Callable[[], float]]] | None = None) -> None:
        self._help = dict(counters)
        self._gauges = dict(gauges or {})
        self._lock = threading.Lock()
        self._values: defaultdict[tuple[str, tuple[tuple[str, str], ...]], int] = defaultdict(int)

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        with self._lock:
            self._values[(name, tuple(sorted(labels.items())))] += amount

    def value(self, name: str, **labels: str) -> int:
        with self._lock:
            return self._values.get((name, tuple(sorted(labels.items()))), 0)

    def render(self) -> str:
        with self._lock:
            values = dict(self._values)
        lines: list[str] = []
        for name in sorted({n for n, _ in values} | set(self._help)):
            lines += [f"# HELP {name} {self._help.get(name, name)}", f"# TYPE {name} counter"]
            series = [(labels, v) for (n, labels), v in values.items() if n == name] or [((), 0)]
            lines += [_series(name, labels, value) for labels, value in sorted(series)]
        for name, (text, read) in sorted(self._gauges.items()):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", _series(name, (), read())]
        return "\n".join(lines) + "\n"
