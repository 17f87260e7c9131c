"""Times on the wire: RFC 3339 UTC strings with milliseconds (CONTRACT, preamble)."""

from __future__ import annotations

from datetime import datetime


def rfc3339(at: datetime) -> str:
    """``2026-11-22T10:00:00.123Z``: UTC with milliseconds, as on every wire."""
    # isoformat truncates to milliseconds, at a fraction of strftime's cost.
    return at.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
