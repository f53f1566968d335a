"""The cross-host lease: which host fetches an object from W&B while the others wait for it.

A lease is a small JSON file next to the object's parts, ``lease.<gen>``, naming the holder
(host, pid, a random id: pids repeat across hosts and pid namespaces, so none is ever
checked for liveness), when it expires, whether the holder is fetching the whole object and
which parts it is fetching now: the others wait for those (and for every part, once the
fill is whole) instead of fetching them too, and fetch the rest themselves. The lease in force is
the highest generation. Taking it is an atomic create-if-absent of the next generation, so
of N hosts that find it free or expired exactly one wins; the holder renews its own file
every ``ttl / 3`` seconds while it fills and learns it lost the lease (it stalled past the
expiry and someone took over) when a higher generation appears. Expiry is wall-clock time:
hosts' clocks must agree to well within the TTL (NTP), as every lease scheme on shared
storage assumes.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

from wandbfs.shared.stores import TierError, TierStore

log = logging.getLogger(__name__)

PREFIX = "lease."

__all__ = ["Lease", "LeaseRecord", "current_lease", "holder_id"]


def holder_id() -> str:
    """This process's name in leases: unique across hosts even where pids repeat."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class LeaseRecord:
    gen: int
    holder: str
    expires: float     # wall-clock seconds
    whole: bool        # the holder fetches every part: wait for what it has not published yet
    parts: frozenset[int] = frozenset()   # the parts it is fetching now

    def covers(self, idx: int) -> bool:
        """Will the holder publish part ``idx`` (so waiting for it beats fetching it)? Yes
        when it fetches every part, is fetching this one, or is fetching one of the two
        before it (a reader going up the file: it asks for this one next)."""
        return self.whole or any(i in self.parts for i in (idx, idx - 1, idx - 2))

    NEAR = 8

    def near(self, idx: int) -> bool:
        """Is the holder fetching a part up to ``NEAR`` parts before ``idx``? A reader going up
        the file asks for it soon (worth a short wait); one jumping about may never."""
        return any(idx - self.NEAR <= i < idx for i in self.parts)

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires

    def encode(self) -> bytes:
        host, _, rest = self.holder.partition(":")
        pid = rest.partition(":")[0]
        return json.dumps({"holder": self.holder, "host": host, "pid": int(pid) if pid.isdigit() else None,
                           "expires": round(self.expires, 3), "whole": self.whole,
                           "parts": sorted(self.parts)}).encode()

    @classmethod
    def decode(cls, gen: int, data: bytes) -> LeaseRecord | None:
        """``None`` for anything unreadable (a lease being written on a store without atomic
        writes, garbage): treated as expired, so it can never block the others."""
        try:
            d = json.loads(data)
            return cls(gen, str(d["holder"]), float(d["expires"]), bool(d.get("whole", False)),
                       frozenset(int(i) for i in d.get("parts", ())))
        except (ValueError, KeyError, TypeError):
            return None


def lease_gen(name: str) -> int | None:
    """The generation a lease file's name holds, ``None`` if it is not one."""
    digits = name[len(PREFIX):] if name.startswith(PREFIX) else ""
    return int(digits) if digits.isdigit() else None


def current_lease(store: TierStore, folder: str) -> tuple[int, LeaseRecord | None] | None:
    """The lease in force for ``folder``: (its generation, its record or ``None`` if unreadable),
    or ``None`` when there has never been one."""
    for _ in range(10):
        gens = [g for g in (lease_gen(n) for n in store.names(folder)) if g is not None]
        if not gens:
            return None
        gen = max(gens)
        data = store.read(f"{folder}/{PREFIX}{gen}")
        if data is not None:
            return gen, LeaseRecord.decode(gen, data)
        # Released or replaced between the listing and the read: list again, never fall back
        # to an older generation (or to "none"), which a racing host would then create.
    raise TierError(f"{store.url}: the leases in {folder} keep changing under us")


class Lease:
    """This host's claim on filling one object (see the module's docstring)."""

    def __init__(self, store: TierStore, folder: str, ttl: float, holder: str,
                 whole: Callable[[], bool]) -> None:
        self.store = store
        self.folder = folder
        self.ttl = ttl
        self.holder = holder
        self.whole = whole
        self.gen: int | None = None
        self.lost = False
        self._said_whole = False
        self._parts: set[int] = set()
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.gen is not None and not self.lost

    def _record(self) -> bytes:
        assert self.gen is not None
        self._said_whole = self.whole()
        with self._mutex:
            parts = frozenset(self._parts)
        return LeaseRecord(self.gen, self.holder, time.time() + self.ttl, self._said_whole, parts).encode()

    def claim(self, idx: int) -> None:
        """About to fetch part ``idx`` from W&B: say so, so the others wait for it."""
        with self._mutex:
            if idx in self._parts:
                return
            self._parts.add(idx)
        if not self._said_whole or not self.whole():
            self.renew()

    def unclaim(self, idx: int) -> None:
        """Part ``idx`` is published (or failed): it leaves the record at the next renewal."""
        with self._mutex:
            self._parts.discard(idx)

    def try_acquire(self, first_part: int | None = None,
                    seen: tuple[int, LeaseRecord | None] | None | bool = False) -> bool:
        """Take the lease if nobody holds a live one (claiming ``first_part``); ``True`` when it is ours.
        ``seen``: the lease in force as the caller just read it (saves reading it again; the
        create-if-absent decides anyway)."""
        if self.held:
            return True
        cur = current_lease(self.store, self.folder) if seen is False else seen
        assert cur is not True
        if cur is not None:
            gen, rec = cur
            if rec is not None and not rec.expired():
                if rec.holder != self.holder:
                    return False
                self.gen = gen    # ours from an earlier fill whose release did not get through
                self._start_renewing()
                return True
            nxt = gen + 1
        else:
            nxt = 0
        if first_part is not None:
            with self._mutex:
                self._parts.add(first_part)
        self.gen, self.lost = nxt, False
        try:
            won = self.store.create(f"{self.folder}/{PREFIX}{nxt}", self._record())
        except BaseException:
            won = False
            raise
        finally:
            if not won:
                self.gen = None
                with self._mutex:
                    self._parts.clear()
        if not won:
            return False
        back = LeaseRecord.decode(nxt, self.store.read(f"{self.folder}/{PREFIX}{nxt}") or b"")
        if back is None or back.holder != self.holder:
            # A store whose create-if-absent is not atomic (two PUTs both passed the check):
            # the last writer holds it, and it is not us.
            log.warning("shared cache %s: two hosts created lease %d at once; its create-if-absent is not "
                        "atomic (this host gives way)", self.store.url, nxt)
            self.gen = None
            return False
        for old in range(max(0, nxt - 3), nxt):   # the expired ones before it (best effort)
            self.store.delete(f"{self.folder}/{PREFIX}{old}")
        if cur is not None:
            log.info("took over the shared-cache lease %s (generation %d expired)", self.folder, nxt - 1)
        self._start_renewing()
        return True

    def _start_renewing(self) -> None:
        self._stop.clear()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._renew_loop, name="wandbfs-lease", daemon=True)
            self._thread.start()

    def renew(self) -> bool:
        """Push the expiry on (and the current ``whole``); ``False`` once the lease is lost."""
        if not self.held:
            return False
        try:
            cur = current_lease(self.store, self.folder)
            if cur is None or cur[0] != self.gen or (cur[1] is not None and cur[1].holder != self.holder):
                self.lost = True
                log.warning("shared-cache lease %s lost (taken over after it expired)", self.folder)
                return False
            self.store.write(f"{self.folder}/{PREFIX}{self.gen}", self._record())
            return True
        except TierError as e:
            log.info("renewing the shared-cache lease %s failed: %s", self.folder, e)
            return True   # not lost yet: it expires on its own if the store stays away

    def note_whole(self) -> None:
        """The fill now fetches every part: tell the waiting hosts at once, not at the next renewal."""
        if self.held and self.whole() and not self._said_whole:
            self.renew()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            if not self.renew():
                return

    def release(self) -> None:
        """Give the lease up (the fill ended): the others may take it at once."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        if self.held:
            try:
                self.store.delete(f"{self.folder}/{PREFIX}{self.gen}")
            except TierError as e:
                log.info("releasing the shared-cache lease %s failed (it expires on its own): %s", self.folder, e)
        self.gen = None
