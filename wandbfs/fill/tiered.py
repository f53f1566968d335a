"""A fill's bytes from the shared tier before W&B: the getter a fill uses with ``--shared-cache``.

``TieredGetter`` stands where the signed-URL ``RangeGetter`` would (getter.py's ``Getter``)
and works in the tier's 8 MiB parts: a range asked for is served part by part, each part
from the first place that has it:

1. the complete object in the tier, each part checked against its md5 (tier.py);
2. a part another host published while filling it (``fill/…/part.N``);
3. while another host holds the lease and fetches this part (or the whole object), nothing:
   wait for its part (polling, at most ``wait_limit`` seconds, then fetch it here);
4. W&B (the inner ``RangeGetter``), taking the lease first if it is free or expired (and
   naming the part in it), bytes handed on as they arrive, and the part published for the
   others once it is whole.

So N hosts reading one object at once pull it from W&B about once: one holds the lease,
the rest read its parts from the tier a part behind it; if the holder dies, its lease
expires and one of them takes over from the parts already there. Parts are fetched once
per fill in this process too (two workers asking for one part share it). ``finish``, after
the fill, publishes the verified object when this host holds the lease, and gives it up.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from wandbfs.fill.errors import FetchError
from wandbfs.fill.getter import FetchStats, Getter, Sink, deliver
from wandbfs.model.manifest import ManifestEntry
from wandbfs.shared.lease import Lease
from wandbfs.shared.tier import PART, SharedTier, Sums, part_bounds

log = logging.getLogger(__name__)

__all__ = ["TieredGetter"]


def _nothing() -> None:
    pass


class TieredGetter:
    POLL_MIN = 0.02
    POLL_MAX = 0.25

    def __init__(self, tier: SharedTier, rel: str, entry: ManifestEntry, inner: Getter, sums: Sums | None,
                 whole: Callable[[], bool], cancelled: Callable[[], bool], stats: FetchStats) -> None:
        """``rel``: the object's key (``obj/md5/ab/cdef…``); ``sums``: the complete object's,
        if the tier had it when the fill started; ``whole``: does the fill fetch every part
        (what the lease tells waiting hosts)."""
        self.tier = tier
        self.rel = rel
        self.entry = entry
        self.size = entry.size
        self.inner = inner
        self.sums = sums
        self.had_object = sums is not None
        self.whole = whole
        self.cancelled = cancelled
        self.stats = stats
        self.done: set[int] = set()        # parts delivered to the fill
        self.lease: Lease | None = None
        self._seen: tuple[float, object] | None = None   # the last lease read, and when
        self._lock = threading.Lock()
        self._inflight: dict[int, threading.Event] = {}
        self._gave_up_on: str | None = None   # a holder we waited for in vain: not waited for again

    # ---- Getter -------------------------------------------------------------------------
    def fetch(self, start: int, end: int, sink: Sink) -> None:
        for idx in range(start // PART, (max(end, start + 1) - 1) // PART + 1):
            self._part(idx, sink)

    def _part(self, idx: int, sink: Sink) -> None:
        """Part ``idx`` into the sink, once per fill however many workers ask for it."""
        while True:
            with self._lock:
                if idx in self.done:
                    return
                ev = self._inflight.get(idx)
                mine = ev is None
                if mine:
                    ev = self._inflight[idx] = threading.Event()
            assert ev is not None
            if not mine:
                while not ev.wait(0.5):
                    if self.cancelled():
                        return
                continue   # done by the other worker (or it failed: try here)
            try:
                self._get(idx, sink)
            finally:
                with self._lock:
                    del self._inflight[idx]
                ev.set()

    def _get(self, idx: int, sink: Sink) -> None:
        a, b = part_bounds(idx, self.size)
        data = self._from_tier(idx, a, b)
        if data is not None:
            deliver(self.entry, sink, a, data)
            self.stats.bytes_from_shared += len(data)
            with self._lock:
                self.done.add(idx)
            return
        buf = bytearray(b - a)
        got = [0]

        def collect(pos: int, chunk: bytes) -> None:
            buf[pos - a:pos - a + len(chunk)] = chunk
            got[0] = max(got[0], pos - a + len(chunk))
            sink(pos, chunk)
        lease = self.lease if self.lease is not None and self.lease.held else None
        if lease is not None:
            self.tier.call(None, lease.claim, idx)
        handed = False
        try:
            self.inner.fetch(a, b, collect)
            if got[0] < b - a:   # stopped early (the fill was cancelled): nothing to publish
                raise FetchError(f"{self.entry.path}: the download was stopped")
            with self._lock:
                self.done.add(idx)
            # Published in the background; the claim stays until it is (the others keep waiting).
            self.tier.put_part_soon(self.rel, idx, bytes(buf),
                                    (lambda: lease.unclaim(idx)) if lease is not None else _nothing)
            handed = True
        finally:
            if lease is not None and not handed:
                lease.unclaim(idx)

    def _from_tier(self, idx: int, a: int, b: int) -> bytes | None:
        """The part from the tier, waiting for it while a live holder fetches the whole
        object; ``None``: fetch it from W&B (the lease is ours, free for nobody, the holder
        fetches only what it reads, the wait ran out, or the tier is down)."""
        tier = self.tier
        if self.sums is not None:
            data = tier.object_part(self.rel, self.sums, idx)
            if data is not None:
                return data
            self.sums = None   # gone or bad (removed): the rest comes from fills or W&B
        started = time.monotonic()
        deadline = started + tier.wait_limit
        delay = self.POLL_MIN
        waited = False
        looked = 0.0
        while tier.available():
            data = tier.fill_part(self.rel, idx, b - a)
            if data is tier.BAD:   # damaged in the tier: fetch it here and publish it again
                tier.drop_part(self.rel, idx)
                return None
            if data is not None:
                return data
            if self.lease is not None and self.lease.held:
                self.lease.note_whole()
                return None
            cur = self._lease_state(fresh=not waited)
            if cur is False:
                return None
            rec = cur[1] if cur else None   # type: ignore[index]
            if rec is None or rec.expired():
                if self._acquire(idx, cur):
                    return None
                self._seen = None
                continue   # another host took it just now: look again
            if rec.holder == self._gave_up_on:
                return None
            if not rec.covers(idx):
                # Not its part (yet): worth a short wait if the holder reads up towards it.
                if not rec.near(idx) or time.monotonic() - started >= self.NEAR_WAIT:
                    return None
            if time.monotonic() - looked >= self.LOOKUP_EVERY:   # the holder may have finished meanwhile
                looked = time.monotonic()
                sums = tier.lookup(self.rel, self.size)
                if sums is not None:
                    self.sums = sums
                    data = tier.object_part(self.rel, sums, idx)
                    if data is not None:
                        return data
                    self.sums = None
            if self.cancelled():
                raise FetchError(f"{self.entry.path}: the download was stopped")
            if time.monotonic() >= deadline:
                # Alive (it renews) but not delivering: this fill fetches the rest itself.
                self._gave_up_on = rec.holder
                log.warning("%s: waited %gs for part %d from %s (shared cache); fetching the rest from W&B",
                            self.entry.path, tier.wait_limit, idx, rec.holder)
                return None
            if not waited:
                waited = True
                tier.note(waits=1)
            time.sleep(delay)
            delay = min(delay * 2, self.POLL_MAX)
        return None

    LEASE_FRESH = 0.5
    LOOKUP_EVERY = 1.0
    NEAR_WAIT = 2.0
    """Seconds a part just ahead of the holder's is waited for before it is fetched here."""

    def _lease_state(self, fresh: bool) -> object:
        """The lease in force (``tier.current_lease``), read again at most every
        ``LEASE_FRESH`` seconds by this fill's waiting workers (each poll is requests)."""
        now = time.monotonic()
        seen = self._seen
        if not fresh and seen is not None and now - seen[0] < self.LEASE_FRESH:
            return seen[1]
        cur = self.tier.current_lease(self.rel)
        self._seen = (now, cur)
        return cur

    def _acquire(self, first_part: int | None = None, seen: object = False) -> bool:
        if self.lease is None:
            self.lease = self.tier.lease(self.rel, self.whole)
        return self.tier.call(False, self.lease.try_acquire, first_part, seen)

    # ---- after the fill -------------------------------------------------------------------
    def finish(self, path: Path | None, bad: bool) -> None:
        """The fill ended (blocking, a worker thread): publish the verified object at ``path``
        if this host holds the lease (or nobody does) and the tier lacked it; after a digest
        failure drop what the tier served. The lease is given up either way."""
        try:
            if bad:
                self.tier.clear_parts(self.rel)
                if self.had_object:
                    self.tier.drop(self.rel)
            elif path is not None and self.sums is None and self.tier.available():
                held = self.lease is not None and self.lease.held
                if not held:
                    cur = self.tier.current_lease(self.rel)
                    rec = cur[1] if cur else None
                    held = cur is not False and (rec is None or rec.expired()) and self._acquire()
                if held and self.tier.lookup(self.rel, self.size) is None:
                    try:
                        self.tier.publish(self.rel, path, self.size, {})
                    except OSError as e:   # evicted here meanwhile: someone else publishes it
                        log.info("%s: not published to the shared cache (%s)", self.entry.path, e)
        finally:
            if self.lease is not None:
                self.tier.call(None, self.lease.release)
