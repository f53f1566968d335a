"""How long a server asked us to wait before trying again (``Retry-After``).

One parser and one "wait or give up" rule for every client that retries: storage GETs,
reference HEADs, the manifest GET.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

__all__ = ["retry_after_s", "next_wait"]


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


def next_wait(asked: float | None, backoff: float, waited: float, budget: float) -> float | None:
    """The seconds to sleep before the next try: what the server asked for, else our own
    ``backoff``. None (give up now) when the server's wait would take ``waited`` (the
    server-asked waits so far) to ``budget`` or past it: a bound is a bound, whoever asks."""
    if asked is None:
        return backoff
    return None if waited + asked >= budget else asked
