"""Every way getting an object's bytes can fail, in one place.

The fill engine, the uncached stream, the reference sources, the fetcher and the object
reader raise these; the FUSE layer turns them into errnos with its one table
(``wandbfs.fuse.errors``). They build on the SDK layer's errors on purpose: a failed
download is a ``BackendError`` (EIO) and a refusing reference store an ``AuthError``
(EACCES), so every caller that handles W&B's failures handles these too. ``UrlRefused``
and ``Transient`` never leave a ``RangeGetter``: they steer its retry loop.
"""

from __future__ import annotations

from wandbfs.model.manifest import ManifestEntry
from wandbfs.sdk.client import AuthError, BackendError

__all__ = ["BadBytes", "FetchError", "NoSpace", "RefChanged", "RefDenied", "Transient", "Unsupported", "UrlRefused",
           "mismatch_message"]


class FetchError(BackendError):
    """A download that failed after its retries (EIO for the reader)."""


class BadBytes(FetchError):
    """The bytes failed the manifest digest: EIO for the reader, the object purged; pages
    already handed out must be dropped, and a strict reader fetches once more."""


class NoSpace(FetchError):
    """The cache's disk is full: the caller serves this file without caching it."""


class RefChanged(FetchError):
    """The referenced object is gone or no longer the one logged (EIO, nothing served)."""


class RefDenied(AuthError):
    """The reference's storage refused us (EACCES); not W&B's credentials."""


class Unsupported(Exception):
    """This entry's bytes are somewhere wandbfs cannot read (EOPNOTSUPP).

    Not a ``WandbError`` on purpose: a handle that got it is not marked failed, and the
    message (which file, what would read it) is what the reader's log line shows.
    """


class UrlRefused(Exception):
    """Storage refused the signed URL (401/403): ask W&B for a fresh one, then retry."""


class Transient(Exception):
    """A part ended early or got a retryable answer (5xx, 429, reset, stall, wrong range):
    retried with backoff, from the last byte received. ``retry_after``: the seconds the
    server's ``Retry-After`` asked for (a 429 or 503), waited instead of our own backoff."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def mismatch_message(entry: ManifestEntry) -> str:
    """What a reader's error says when the bytes fail the manifest digest (keeps "do not match":
    the mount drops the file's pages and strict mode refetches on it)."""
    if entry.ref is not None:
        return f"{entry.path}: {entry.ref} changed since it was logged: its bytes do not match the manifest digest"
    return f"{entry.path}: bytes from W&B do not match the manifest digest"
