"""RFC 3339 timestamps as Intel collateral uses them (``2025-06-19T10:56:11Z``).

Parsing follows chrono's ``parse_from_rfc3339`` (what dcap-qvl uses): ``T``/``t``/space separator,
optional fraction, ``Z``/``z`` or a ``±HH:MM`` offset. Results are whole Unix seconds, the
resolution at which collateral validity is compared.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re

from inclavare.errors import ConfigError, FormatError

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def parse_rfc3339(text: object, field: str) -> int:
    """Unix seconds (floor) of an RFC 3339 timestamp; FormatError if malformed."""
    if not isinstance(text, str):
        raise FormatError(f"{field} must be an RFC 3339 string")
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise FormatError(f"{field} is not an RFC 3339 timestamp: {text[:40]!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
            and hour <= 23 and minute <= 59 and second <= 60):
        raise FormatError(f"{field} is not a valid date/time: {text[:40]!r}")
    offset = 0
    if match.group(8):
        off_h, off_m = int(match.group(9)), int(match.group(10))
        if off_h > 23 or off_m > 59:
            raise FormatError(f"{field} has an invalid UTC offset")
        offset = (off_h * 3600 + off_m * 60) * (1 if match.group(8) == "+" else -1)
    leap = 1 if second == 60 else 0
    base = calendar.timegm((year, month, day, hour, minute, second - leap, 0, 0, 0))
    return base + leap - offset


def format_rfc3339(moment: dt.datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC (the form Intel's PCS issues)."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def unix_seconds(moment: dt.datetime) -> int:
    """Whole Unix seconds of an aware datetime (floor), the resolution verification compares at."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigError("verification time must be timezone-aware")
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return delta.days * 86400 + delta.seconds
