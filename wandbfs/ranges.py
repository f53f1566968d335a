"""Which byte ranges of an object are present: the bookkeeping behind streaming reads.

Half-open intervals ``[start, end)``, kept sorted and merged. Pure logic, no I/O.
"""

from __future__ import annotations

import bisect


class RangeSet:
    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        i = bisect.bisect_left(self._ends, start)      # first interval that ends at/after start
        j = bisect.bisect_right(self._starts, end)     # intervals that start at/before end overlap
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
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
        return sum(e - s for s, e in zip(self._starts, self._ends))

    def intervals(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends))
