"""The one table from an exception to the errno a reader gets, and what the mount logs.

Every handler's failure (``ops._guard``) and a reader's sticky failure (the kernel retries
a failed page read at once: the handle answers with the same errno, no refetch) are
mapped here. Rows are tried in order, so a subclass comes before its base (``RefDenied``
is an ``AuthError`` with its own log line). Anything not in the table is a bug: EIO,
logged with its traceback.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass

from wandbfs.fill.errors import RefDenied, Unsupported
from wandbfs.sdk.client import AuthError, BackendError, Denied, NotFound

__all__ = ["ERRNO_TABLE", "Outcome", "UNEXPECTED", "errno_of", "outcome_of"]


@dataclass(frozen=True)
class Outcome:
    """How one kind of failure reaches the reader and the operator."""

    errno: int
    level: int | None = None   # log level of the one line it gets; None: a normal answer, not logged
    counted: bool = False      # counted in ``wandbfs status``'s errors
    says: str = ""             # words the log line puts before the exception's message


ERRNO_TABLE: tuple[tuple[type[BaseException], Outcome], ...] = (
    (NotFound, Outcome(errno.ENOENT)),
    # a reference wandbfs cannot read: the message names it and what can
    (Unsupported, Outcome(errno.EOPNOTSUPP, logging.WARNING)),
    # the reference's own storage refused us, not W&B
    (RefDenied, Outcome(errno.EACCES, logging.ERROR)),
    # the key works, but W&B does not let it open this (a restricted registry)
    (Denied, Outcome(errno.EACCES, logging.WARNING, says="W&B denies this API key access: ")),
    (AuthError, Outcome(errno.EACCES, logging.ERROR, counted=True, says="W&B refused the credentials: ")),
    (BackendError, Outcome(errno.EIO, logging.ERROR, counted=True)),
)

UNEXPECTED = Outcome(errno.EIO, logging.ERROR, counted=True)
"""Anything else: a bug, logged with its traceback; the mount answers EIO and lives on."""


def outcome_of(error: BaseException) -> Outcome:
    """The first row whose type ``error`` is, else ``UNEXPECTED``."""
    for kind, outcome in ERRNO_TABLE:
        if isinstance(error, kind):
            return outcome
    return UNEXPECTED


def errno_of(error: BaseException) -> int:
    """The errno ``error`` answers a reader with."""
    return outcome_of(error).errno
