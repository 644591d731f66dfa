"""KBS resource paths ``<repo>/<type>/<tag>`` (Trustee's resource plugin rules).

Each segment matches ``[A-Za-z0-9_-]+[A-Za-z0-9_.-]*``: no empty segments, no ``..`` or ``.``
(a segment cannot start with a dot), no encoded slashes, nothing outside ASCII.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from inclavare.errors import KbsError

_SEGMENT = re.compile(r"[A-Za-z0-9_\-]+[A-Za-z0-9_\-.]*")
MAX_SEGMENT = 128


@dataclass(frozen=True)
class ResourcePath:
    repo: str
    type: str
    tag: str

    def __str__(self) -> str:
        return f"{self.repo}/{self.type}/{self.tag}"

    def segments(self) -> list[str]:
        return [self.repo, self.type, self.tag]


def parse_resource_path(text: str) -> ResourcePath:
    """Parse ``repo/type/tag`` (no leading slash); raises ``KbsError`` InvalidRequestPath (404)."""
    parts = text.split("/")
    if len(parts) != 3 or not all(
        _SEGMENT.fullmatch(p) and len(p) <= MAX_SEGMENT for p in parts
    ):
        raise KbsError(
            f"Request path /{text[:200]} is invalid", kind="InvalidRequestPath", status=404
        )
    return ResourcePath(*parts)
