"""Cache size limits: which objects to evict, and the bookkeeping that decides when.

A training host's disk fills up; the cache must give way before the download that would
not fit starts, not fail halfway through it. ``plan_eviction`` is the pure rule (least
recently used first, never a kept object, stop as soon as the download fits);
``Evictor`` applies it to an ``ObjectCache`` with the two limits users know from gcsfuse
and mountpoint-s3: a cap on the cache's size and a floor on the disk's free space.

What is never evicted: objects that are open (every descriptor wandbfs holds on an object
carries a shared flock, see ``ObjectCache.open_shared``; eviction only takes it without
waiting) and objects of pinned versions (``pins.py``). When a download cannot fit even
after evicting everything else, ``reserve`` says so and the fetcher streams the file
without caching it.

The SDK's ``artifact.download()`` takes no lock: an object it is copying at that moment
can be evicted under it, exactly as the SDK's own ``_reserve_space`` eviction can.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from wandbfs.cache.partial import Partials
from wandbfs.cache.store import ObjectCache

log = logging.getLogger(__name__)

__all__ = ["CacheLimits", "CachedObject", "Evictor", "PruneResult", "format_size", "parse_size",
           "plan_eviction"]

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"10G"``, ``"512MiB"``, ``"1.5T"``, ``"1000"`` -> bytes (binary units, as df -h shows)."""
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a size: {text!r} (examples: 500M, 20G, 1.5T)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class CacheLimits:
    max_size: int | None = None   # bytes the objects may take in all
    min_free: int = 0             # bytes to leave free on the cache's filesystem

    @property
    def limited(self) -> bool:
        return self.max_size is not None or self.min_free > 0


@dataclass(frozen=True)
class CachedObject:
    path: Path
    size: int
    atime: float


def plan_eviction(objects: Iterable[CachedObject], *, used: int, free: int, need: int,
                  limits: CacheLimits, keep: Callable[[Path], bool]) -> tuple[list[CachedObject], bool]:
    """Least recently used objects to remove so ``need`` more bytes fit; and whether they will.

    ``used`` is what the cache's objects take now, ``free`` what the filesystem has left.
    Evicting an object counts against both. Kept objects (pinned) are skipped; the caller
    still has to find each victim not in use when it tries to remove it.
    """
    def short() -> bool:
        over_size = limits.max_size is not None and used + need > limits.max_size
        return over_size or free - need < limits.min_free

    victims: list[CachedObject] = []
    if not short():
        return victims, True
    for obj in sorted(objects, key=lambda o: (o.atime, str(o.path))):
        if keep(obj.path):
            continue
        victims.append(obj)
        used -= obj.size
        free += obj.size
        if not short():
            return victims, True
    return victims, False


@dataclass
class PruneResult:
    removed: int = 0
    bytes_freed: int = 0
    in_use: int = 0           # candidates skipped because someone had them open
    fits: bool = True
    skipped_pinned: int = 0
    removed_paths: list[Path] = field(default_factory=list)


class Evictor:
    """Applies ``CacheLimits`` to one cache; one per mount (no state shared between mounts).

    Thread-safe: ``reserve`` runs in worker threads. Bytes reserved by downloads still in
    flight count as used, so two large downloads starting together cannot both assume
    they fit. Another process (a second mount, the SDK) can add objects at any time, so
    every decision re-reads the disk: ``statvfs`` always, a scan of the objects whenever
    the size cap is involved or something must be evicted.
    """

    def __init__(self, cache: ObjectCache, limits: CacheLimits,
                 pinned: Callable[[], set[Path]] | None = None) -> None:
        self.cache = cache
        self.limits = limits
        self.pinned = pinned or (lambda: set())
        self._lock = threading.Lock()
        self._reserved = 0
        self.evictions = 0
        self.bytes_evicted = 0
        self.refusals = 0

    def disk_free(self) -> int:
        root = self.cache.root
        while not root.exists() and root.parent != root:
            root = root.parent
        st = os.statvfs(root)
        return st.f_bavail * st.f_frsize

    def scan(self) -> tuple[list[CachedObject], int]:
        """Every object, and every partial object (cache/partial.py) by the blocks it takes."""
        objs = [CachedObject(p, st.st_size, st.st_atime) for p, st in self.cache.iter_objects()]
        objs += [CachedObject(p, st.st_blocks * 512, st.st_atime) for p, st in Partials(self.cache).iter()]
        return objs, sum(o.size for o in objs)

    def reserve(self, need: int) -> bool:
        """Make room for a download of ``need`` bytes; ``False`` if it cannot fit.

        On ``True`` the bytes stay reserved until :meth:`settle`.
        """
        with self._lock:
            fits, result = self._make_room(need, self._reserved)
            if fits:
                self._reserved += need
            else:
                self.refusals += 1
        if result.removed:
            log.info("cache: evicted %d objects (%s) to make room for %s", result.removed,
                     format_size(result.bytes_freed), format_size(need))
        if not fits:
            log.warning("cache: no room for %s (limits: max size %s, min free %s; %d objects in use)",
                        format_size(need), format_size(self.limits.max_size or 0) if self.limits.max_size
                        else "none", format_size(self.limits.min_free), result.in_use)
        return fits

    def settle(self, need: int) -> None:
        """A reserved download ended (committed or abandoned)."""
        with self._lock:
            self._reserved = max(0, self._reserved - need)

    def prune(self, limits: CacheLimits | None = None,
              on_removed: Callable[[CachedObject], None] | None = None) -> PruneResult:
        """Evict until the cache is within ``limits`` (default: this evictor's)."""
        with self._lock:
            _, result = self._make_room(0, self._reserved, limits or self.limits, on_removed)
            return result

    def clear(self, *, include_pinned: bool = False,
              on_removed: Callable[[CachedObject], None] | None = None) -> PruneResult:
        """Remove every object that is not open (and not pinned, unless asked)."""
        pinned = set() if include_pinned else self.pinned()
        result = PruneResult()
        objs, _ = self.scan()
        for obj in sorted(objs, key=lambda o: o.atime):
            if obj.path in pinned:
                result.skipped_pinned += 1
                continue
            self._evict_one(obj, result, on_removed)
        return result

    # ---- internals -------------------------------------------------------------------
    def _make_room(self, need: int, reserved: int, limits: CacheLimits | None = None,
                   on_removed: Callable[[CachedObject], None] | None = None) -> tuple[bool, PruneResult]:
        limits = limits or self.limits
        result = PruneResult()
        free = self.disk_free() - reserved
        if limits.max_size is None and free - need >= limits.min_free:
            return True, result  # the common case costs one statvfs
        objs, used = self.scan()
        used += reserved
        pinned = self.pinned()
        # Objects in use turn up only when we try them: plan again without them until the
        # plan holds or nothing is left to try.
        busy: set[Path] = set()
        while True:
            victims, fits = plan_eviction(objs, used=used, free=free, need=need, limits=limits,
                                          keep=lambda p: p in pinned or p in busy)
            if not victims:
                result.fits = fits
                result.skipped_pinned = sum(1 for o in objs if o.path in pinned)
                return fits, result
            failed = False
            for obj in victims:
                if self._evict_one(obj, result, on_removed):
                    used -= obj.size
                    free += obj.size
                else:
                    busy.add(obj.path)
                    failed = True
            gone = set(result.removed_paths)
            objs = [o for o in objs if o.path not in gone]
            if fits and not failed:
                result.fits = True
                return True, result
            # some victims were in use: plan again without them (terminates: busy only grows)

    def _evict_one(self, obj: CachedObject, result: PruneResult,
                   on_removed: Callable[[CachedObject], None] | None) -> bool:
        try:
            removed = self.cache.try_evict(obj.path)
        except OSError as e:
            log.warning("cache: could not evict %s: %s", obj.path, e)
            removed = False
        if removed:
            result.removed += 1
            result.bytes_freed += obj.size
            result.removed_paths.append(obj.path)
            self.evictions += 1
            self.bytes_evicted += obj.size
            if on_removed:
                on_removed(obj)
        else:
            result.in_use += 1
        return removed
