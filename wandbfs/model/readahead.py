"""Which byte ranges of one object to fetch next: the adaptive fill's plan (pure logic).

A read that misses asks for its own range first, rounded out to ``ALIGN``, and nothing
else yet, so a 4 KiB read 200 MiB into a file costs one small request, and a footer or
column-chunk read (parquet) fetches about what it reads. Each run of sequential reads is a
*stream* (mountpoint-s3's prefetcher is the model): once a read lands inside what a
stream has asked for, the stream asks for the next window ahead of the reader, and the
window doubles each time, so ``cat`` or a safetensors mmap load soon has megabytes in
flight. A stream that has asked for ``WHOLE_AFTER`` bytes, or reads that together cover
``WHOLE_SHARE`` of the file, switch the object to a whole-file fill (every missing part,
in order, at full concurrency): reading most of a file is cheaper done at once, and only a
whole file can be verified. A read at offset 0 starts with a ``FIRST`` window, since most
readers that start there go on.

The plan only says what to ask for; ``fill/item.py`` fetches it, ``model/ranges.py``
records what arrived. Everything asked for is *claimed* (queued, in flight or present) and
never asked for twice.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from wandbfs.model.ranges import RangeSet

KiB, MiB = 1 << 10, 1 << 20

__all__ = ["FillPlan", "PlanLimits"]


@dataclass(frozen=True)
class PlanLimits:
    """The sizes the plan works with (``FetchPolicy`` sets ``part``)."""

    part: int = 8 * MiB            # the largest single request: larger claims are split
    align: int = 64 * KiB          # requests start and end on these boundaries (or EOF)
    first: int = 1 * MiB           # a read at offset 0 asks for this much at once
    window: int = 256 * KiB        # a stream's first read-ahead window, doubled on each refill
    max_window: int = 64 * MiB
    whole_after: int = 16 * MiB    # a stream that has asked for this much: fetch the whole file
    whole_share: float = 0.5       # ... or once this share of the file is claimed
    streams: int = 8               # sequential runs tracked at once (pyarrow reads with threads)


@dataclass
class _Stream:
    """One sequential run of reads: how far the reader got and what it has asked for.

    Runs go up (``cat``) or down (a safetensors load copies each tensor from its end down
    to its start, one page fault at a time); a downward run reads ahead below itself."""

    pos: int          # end of the last read in this run (up) / start of it (down)
    ahead: int        # end (up) / start (down) of what has been asked for on its behalf
    window: int       # the next refill's size
    asked: int = 0    # bytes asked for by this run so far
    down: bool = False
    first: int = 0    # start of the run's first read: a read just below it turns the run down


class FillPlan:
    """The request queue of one object: demand first, read-ahead after, whole file last."""

    def __init__(self, size: int, limits: PlanLimits | None = None, *, whole: bool = False,
                 present: RangeSet | None = None) -> None:
        """``present``: ranges already on disk (a partial object from an earlier mount)."""
        self.size = size
        self.lim = limits or PlanLimits()
        self.whole = whole
        self.claimed = RangeSet()
        for s, e in (present.intervals() if present is not None else []):
            self.claimed.add(s, e)
        self._queue: collections.deque[tuple[int, int]] = collections.deque()
        self._streams: list[_Stream] = []

    # ---- what readers do ---------------------------------------------------------------
    def on_read(self, off: int, end: int) -> None:
        """A read of ``[off, end)``: queue what it lacks first, then its stream's read-ahead."""
        end = min(end, self.size)
        if off >= end:
            return
        self._demand(off, end)
        s = None if self.whole else self._stream_for(off, end)
        if s is None:
            # A new run (or the whole file is coming anyway): the read's own range, with the
            # first window when it starts at 0, as one request at the front of the queue.
            if self.whole:   # everything is coming: the read's part first, as one request
                start, want = off - off % self.lim.part, min(self.size, (end - 1) // self.lim.part * self.lim.part
                                                             + self.lim.part)
            else:
                window = self.lim.first if off == 0 else 0
                start, want = self._align_down(off), self._align_up(max(end, off + window))
            asked = self._claim(start, want, front=True)
            if not self.whole:
                # a run from the start is likely a whole read: its refills start at the first window
                self._streams.append(_Stream(pos=end, ahead=want, window=max(window, self.lim.window), asked=asked,
                                             first=off))
                if len(self._streams) > self.lim.streams:
                    self._streams.pop(0)
        else:
            self._streams.remove(s)          # most recently used last
            self._streams.append(s)
            s.asked += self._claim(self._align_down(off), self._align_up(end), front=True)
            if s.down:
                self._continue_down(s, off)
            else:
                self._continue_up(s, end)
            if s.asked >= self.lim.whole_after:
                self.whole = True
        if self.claimed.total() >= self.lim.whole_share * self.size:
            self.whole = True

    def _continue_up(self, s: _Stream, end: int) -> None:
        s.pos = max(s.pos, end)
        if s.ahead - s.pos < s.window // 2 and s.ahead < self.size:
            start = max(s.ahead, s.pos)
            s.ahead = self._align_up(start + s.window)
            s.asked += self._claim(start, s.ahead, front=False)
            s.window = min(self.lim.max_window, s.window * 2)

    def _continue_down(self, s: _Stream, off: int) -> None:
        s.pos = min(s.pos, off)
        if s.pos - s.ahead < s.window // 2 and s.ahead > 0:
            stop = min(s.ahead, s.pos)
            s.ahead = self._align_down(max(0, stop - s.window))
            s.asked += self._claim(s.ahead, stop, front=False)
            s.window = min(self.lim.max_window, s.window * 2)

    def go_whole(self) -> None:
        """Fetch the rest of the file (a read at EOF, strict mode, a warm-up)."""
        self.whole = True

    # ---- what the fill's workers do ----------------------------------------------------
    def next_request(self) -> tuple[int, int] | None:
        """The next range to fetch, or ``None`` when nothing is wanted now."""
        if self._queue:
            return self._queue.popleft()
        if self.whole:
            gap = self.claimed.missing(0, self.size)
            if gap:
                start = gap[0][0]
                stop = min(gap[0][1], start + self.lim.part)
                self.claimed.add(start, stop)
                return start, stop
        return None

    @property
    def pending(self) -> bool:
        """Requests are waiting for a worker."""
        return bool(self._queue) or (self.whole and self.claimed.total() < self.size)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ---- internals ---------------------------------------------------------------------
    def _stream_for(self, off: int, end: int) -> _Stream | None:
        """The run a read continues: upward, it lands between a little before the run's
        last read and the end of what the run asked for; downward, it ends just below
        (or inside) the run's lowest read and above what the run asked for. A run's second
        read decides its direction."""
        slack = 2 * self.lim.align
        for s in reversed(self._streams):
            if not s.down and s.pos - slack <= off <= max(s.ahead, s.pos + self.lim.align):
                return s
            if s.down and min(s.ahead, s.pos - slack) <= end <= s.pos + slack:
                return s
            if not s.down and s.asked and s.first - slack <= end <= s.first + self.lim.align and off < s.first:
                s.down, s.pos, s.ahead = True, s.first, self._align_down(s.first)
                return s
        return None

    def _demand(self, off: int, end: int) -> None:
        """A reader waits on ``[off, end)``: whatever of it is queued moves to the front."""
        if not self._queue:
            return
        urgent = [r for r in self._queue if r[0] < end and r[1] > off]
        if urgent:
            rest = [r for r in self._queue if not (r[0] < end and r[1] > off)]
            self._queue = collections.deque(urgent + rest)

    def _claim(self, start: int, end: int, *, front: bool) -> int:
        """Queue the unclaimed parts of ``[start, end)``, split into parts; returns bytes queued."""
        end = min(end, self.size)
        pieces: list[tuple[int, int]] = []
        for s, e in self.claimed.missing(start, end):
            self.claimed.add(s, e)
            while s < e:
                stop = min(e, s + self.lim.part)
                pieces.append((s, stop))
                s = stop
        if front:
            self._queue.extendleft(reversed(pieces))
        else:
            self._queue.extend(pieces)
        return sum(e - s for s, e in pieces)

    def _align_down(self, n: int) -> int:
        return n - n % self.lim.align

    def _align_up(self, n: int) -> int:
        return min(self.size, -(-n // self.lim.align) * self.lim.align)
