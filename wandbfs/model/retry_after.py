"""How long a server asked us to wait before trying again (``Retry-After``).

One parser for every client that retries: storage GETs, reference HEADs, the manifest GET.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

__all__ = ["retry_after_s"]


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds from now: delta-seconds ("3") or an HTTP-date
    (RFC 9110 10.2.3); None when absent or unreadable (then our own backoff applies)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))
