"""Which byte ranges of an object are present: the bookkeeping behind streaming reads.

Half-open intervals ``[start, end)``, kept sorted and merged; and whether a ranged
response's ``Content-Range`` is the range that was asked for. Pure logic, no I/O.
"""

from __future__ import annotations

import bisect
import re


class RangeSet:
    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._total = 0   # bytes present, kept as intervals merge: asked on every read

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        i = bisect.bisect_left(self._ends, start)      # first interval that ends at/after start
        j = bisect.bisect_right(self._starts, end)     # intervals that start at/before end overlap
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._total += (end - start) - sum(e - s for s, e in zip(self._starts[i:j], self._ends[i:j]))
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def contains(self, start: int, end: int) -> bool:
        """True when every byte of ``[start, end)`` is present (an empty range always is)."""
        if end <= start:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def prefix(self) -> int:
        """Length of the present run starting at 0."""
        return self._ends[0] if self._starts and self._starts[0] == 0 else 0

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        out = []
        pos = start
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        while pos < end and i < len(self._starts):
            s, e = self._starts[i], self._ends[i]
            if e <= pos:
                i += 1
                continue
            if s > pos:
                out.append((pos, min(s, end)))
            pos = max(pos, e)
            i += 1
        if pos < end:
            out.append((pos, end))
        return out

    def total(self) -> int:
        return self._total

    def intervals(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends))


# ---- Content-Range: is this response the bytes we asked for? ---------------------------

_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", re.ASCII | re.IGNORECASE)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes FIRST-LAST/TOTAL`` -> ``(first, last + 1, total)`` (``total`` None for ``*``).

    ``None`` for a missing header or anything else (another unit, ``bytes */SIZE``, a last
    byte before the first or past the total): such a 206 cannot say where its body goes.
    """
    m = _CONTENT_RANGE.fullmatch(value or "")
    if m is None:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if last < first or (total is not None and last >= total):
        return None
    return first, last + 1, total


def content_range_problem(value: str | None, start: int, end: int, size: int) -> str | None:
    """Why a 206 carrying ``Content-Range: value`` must not be written at ``start``, or None.

    The body goes at ``[start, end)`` of a ``size``-byte object only when the server says it
    is exactly that range of an object of that size: a body for another range (a proxy that
    shifted or clipped it) or of another object (another size) would be wrong bytes at a
    right-looking offset, which no later read could tell from the real ones before EOF.
    """
    got = parse_content_range(value)
    if got is None:
        return f"unusable Content-Range {value!r}" if value else "no Content-Range in a 206"
    first, stop, total = got
    if total is not None and total != size:
        return f"Content-Range {value!r} names a {total}-byte object, the manifest says {size}"
    if (first, stop) != (start, end):
        return f"Content-Range {value!r} for a request of bytes {start}-{end - 1}"
    return None
