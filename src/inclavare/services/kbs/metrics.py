"""Prometheus metrics with Trustee's KBS metric names (kbs/docs/metrics.md), so load and
failure measurements compare directly. Plain text exposition; no client library needed.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

# Trustee's request-duration buckets: 0.5 ms .. 1 s.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_HELP = {
    "kbs_auth_requests_total": "RCAR /auth requests",
    "kbs_auth_successes_total": "RCAR /auth requests that opened a session",
    "kbs_auth_errors_total": "RCAR /auth requests refused",
    "kbs_attestation_requests_total": "RCAR /attest requests",
    "kbs_attestation_successes_total": "attestations that issued a token",
    "kbs_attestation_failures_total": "attestations refused",
    "kbs_policy_evals_total": "resource policy evaluations",
    "kbs_policy_approvals_total": "resource policy approvals",
    "kbs_policy_violations_total": "resource policy denials",
    "kbs_policy_errors_total": "resource policy evaluation errors",
    "kbs_http_requests_total": "HTTP requests under /kbs",
}


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: defaultdict[tuple[str, tuple[tuple[str, str], ...]], int] = defaultdict(int)
        self._buckets = [0] * (len(BUCKETS) + 1)
        self._sum = 0.0
        self._count = 0

    def inc(self, name: str, **labels: str) -> None:
        with self._lock:
            self._counters[(name, tuple(sorted(labels.items())))] += 1

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
            self._sum += seconds
            self._count += 1

    def render(self) -> str:
        with self._lock:
            counters = dict(self._counters)
            buckets, total, count = list(self._buckets), self._sum, self._count
        lines: list[str] = []
        for name in sorted({n for n, _ in counters} | set(_HELP)):
            lines += [f"# HELP {name} {_HELP.get(name, name)}", f"# TYPE {name} counter"]
            series = [(labels, v) for (n, labels), v in counters.items() if n == name] or [((), 0)]
            for labels, value in sorted(series):
                tag = ",".join(f'{k}="{v}"' for k, v in labels)
                lines.append(f"{name}{{{tag}}} {value}" if tag else f"{name} {value}")
        lines += ["# HELP kbs_http_request_duration_seconds HTTP request latency",
                  "# TYPE kbs_http_request_duration_seconds histogram"]
        running = 0
        for bound, n in zip(BUCKETS, buckets):
            running += n
            lines.append(f'kbs_http_request_duration_seconds_bucket{{le="{bound}"}} {running}')
        lines.append(f'kbs_http_request_duration_seconds_bucket{{le="+Inf"}} {count}')
        lines.append(f"kbs_http_request_duration_seconds_sum {total}")
        lines.append(f"kbs_http_request_duration_seconds_count {count}")
        return "\n".join(lines) + "\n"
