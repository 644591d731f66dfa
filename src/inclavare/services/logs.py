"""One log format for the project's services: text for people, JSON lines for collectors.

Decisions (a registration, a quote, a release, a denial) are logged as *events*: one line with a
message a person reads and, in JSON, the same facts as fields (``event``, ``container``,
``request_id``, …), so a collector needs no parsing. Tracebacks appear only at debug level; an
error is otherwise one line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import sys
from typing import Any

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "component": self.component, "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info and logging.getLogger().isEnabledFor(logging.DEBUG):
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(component: str, log_format: str = "text", level: str = "info") -> None:
    """Route the root logger to stderr in ``log_format`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {component} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def event(logger: logging.Logger, name: str, message: str, *args: Any, level: int = logging.INFO,
          **fields: Any) -> None:
    """One decision: ``message`` for people, ``event=name`` and ``fields`` for collectors."""
    logger.log(level, message, *args, extra={"fields": {"event": name, **fields}})


def request_id() -> str:
    return secrets.token_hex(6)
