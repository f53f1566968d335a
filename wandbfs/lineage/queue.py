"""Lineage: every artifact version read through the mount becomes an input of a W&B run.

The first open of a version by a run queues one use: on the reading process's own run when
its environment names one (``readers.py``), else on the mount's run. Each use goes to the
on-disk journal first (``journal.py``) and then, from a background task, to W&B through a
``recorder`` callable (``sdk/runs.py``'s ``RunRecorder``: ``api.run(path).use_artifact``), so
a read never waits on W&B, an outage or a restart loses nothing, and each (run, version) is
recorded once. The recorded artifact is the exact version that was read (by ``vN``) and
``use_as`` names the path it was reached through (``acme/wandb-registry-model/resnet:production``),
so a moving alias cannot make the record point at a version nobody read.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import trio

from wandbfs.lineage.journal import MOUNT_RUN, JournalEntry, LineageJournal, use_key
# The recorder is SDK code (sdk/runs.py); the queue only needs to know a missing run.
from wandbfs.sdk.runs import RunMissing

log = logging.getLogger(__name__)

__all__ = ["Lineage", "LineageStats", "Use"]


@dataclass(frozen=True)
class Use:
    artifact_id: str
    version_name: str   # org/wandb-registry-R/C:vN, what is recorded
    used_as: str        # the name the reader used (alias or vN)
    run: str = MOUNT_RUN  # entity/project/id of the reader's run, or the mount's run
    replay: bool = False  # from the journal of an earlier daemon: check W&B before sending

    @property
    def key(self) -> str:
        return use_key(self.run, self.artifact_id)


@dataclass
class LineageStats:
    queued: int = 0
    recorded: int = 0
    failures: int = 0
    pending: int = 0
    replayed: int = 0
    redirected: int = 0
    recorded_uses: list[Use] = field(default_factory=list)


Recorder = Callable[[Use], None]


class Lineage:
    """The queue between ``open`` and W&B: journal stage, then record stage.

    Two stages so that while W&B is down (the record stage retrying one use) every new use
    still reaches the journal at once.
    """

    def __init__(self, recorder: Recorder, *, journal: LineageJournal | None = None,
                 limiter: trio.CapacityLimiter | None = None, backoff_max: float = 30.0,
                 missing_run_grace: float = 300.0, gate: Any = None) -> None:
        """``gate``: the mount's ``gate.Gate``; each record then runs under its deadline and
        waits while W&B is not answering instead of piling up calls."""
        self.recorder = recorder
        self.gate = gate
        self.journal = journal
        self.limiter = limiter or trio.CapacityLimiter(1)
        self.backoff_max = backoff_max
        self.missing_run_grace = missing_run_grace
        self.stats = LineageStats()
        self._seen: set[str] = set()
        self._send, self._recv = trio.open_memory_channel[Use](math.inf)
        self._journaled_send, self._journaled_recv = trio.open_memory_channel[Use](math.inf)
        self._idle = trio.Event()
        self._idle.set()
        self._unjournaled = 0          # noted, not yet on disk (what flush() waits for)
        self._journaled = trio.Event()
        self._journaled.set()

    def resume(self) -> int:
        """Load the journal: recorded keys are never sent again, pending ones are queued."""
        if self.journal is None:
            return 0
        n = 0
        for e in self.journal.load().values():
            if e.done is not None:
                if e.run != MOUNT_RUN:  # an earlier daemon's own run is finished: not this one's
                    self._seen.add(e.key)
                continue
            use = Use(e.artifact_id, e.version_name, e.used_as, e.run, replay=True)
            self._seen.add(use.key)
            self._queue(use)
            self._journaled_send.send_nowait(use)  # already on disk
            n += 1
        if n:
            self.stats.replayed += n
            log.info("lineage: %d uses pending from before, recording them", n)
        return n

    def note(self, use: Use) -> bool:
        """Queue a use unless this (run, version) was already queued; never blocks."""
        if use.key in self._seen:
            return False
        self._seen.add(use.key)
        self._queue(use)
        self._unjournaled += 1
        if self._journaled.is_set():
            self._journaled = trio.Event()
        self._send.send_nowait(use)
        return True

    def _queue(self, use: Use) -> None:
        self.stats.queued += 1
        self.stats.pending += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    async def run(self) -> None:
        """The background tasks: journal each use, then record them in order, each until it lands."""
        async with trio.open_nursery() as n:
            n.start_soon(self._journal_stage)
            await self._record_stage()

    async def _journal_stage(self) -> None:
        async for use in self._recv:
            mount_run = getattr(self.recorder, "run_path", None)
            if use.run == MOUNT_RUN and mount_run:
                # Journal the mount's run by name: a later daemon replays it onto this run.
                self._seen.add(use_key(mount_run, use.artifact_id))
                use = replace(use, run=mount_run)
            await self._journal(use)
            self._journaled_send.send_nowait(use)
            self._unjournaled -= 1
            if self._unjournaled == 0:
                self._journaled.set()

    async def flush(self, timeout: float) -> bool:
        """Wait (bounded) until every noted use is in the journal: at exit, what W&B has not
        taken yet is then replayed by the next daemon. True if nothing is left unjournaled."""
        with trio.move_on_after(timeout):
            await self._journaled.wait()
        return self._unjournaled == 0

    async def _record_stage(self) -> None:
        async for use in self._journaled_recv:
            delay = 0.5
            first_missing: float | None = None
            while True:
                try:
                    await self._send_one(use)
                    break
                except RunMissing as e:
                    now = time.monotonic()
                    first_missing = first_missing or now
                    if now - first_missing >= self.missing_run_grace:
                        log.warning("lineage: %s; recording %s on the mount's run instead", e, use.version_name)
                        await self._mark_done(use)
                        self.stats.redirected += 1
                        use = replace(use, run=MOUNT_RUN, replay=False)
                        if use.key in self._seen:
                            break
                        self._seen.add(use.key)
                        await self._journal(use)
                        continue
                    self.stats.failures += 1
                    log.info("lineage: %s; retrying in %.1fs", e, delay)
                except Exception as e:  # noqa: BLE001 - any failure is retried, never fatal
                    self.stats.failures += 1
                    log.warning("recording lineage for %s failed (%s); retrying in %.1fs",
                                use.used_as, e, delay)
                await trio.sleep(delay)
                delay = min(self.backoff_max, delay * 2)
            await self._mark_done(use)
            self.stats.recorded += 1
            self.stats.pending -= 1
            self.stats.recorded_uses.append(use)
            run = "the mount's run" if use.run == MOUNT_RUN else use.run
            log.info("recorded use of %s (as %s) on %s", use.version_name, use.used_as, run)
            if self.stats.pending == 0:
                self._idle.set()

    async def _send_one(self, use: Use) -> None:
        """One record, in a thread; abandoned at the deadline or at exit if W&B hangs (the
        journal keeps the use for the next daemon, and a replay checks before sending)."""
        async with self.limiter:
            if self.gate is not None:
                await self.gate.call(self.recorder, use)
            else:
                await trio.to_thread.run_sync(self.recorder, use, abandon_on_cancel=True)

    async def _journal(self, use: Use) -> None:
        if self.journal is None:
            return
        entry = JournalEntry(use.key, use.run, use.artifact_id, use.version_name, use.used_as, time.time())
        try:
            await trio.to_thread.run_sync(self.journal.add, entry)
        except OSError as e:  # a full disk must not stop lineage: it is still sent
            log.error("lineage journal write failed (%s); %s is only in memory", e, use.version_name)

    async def _mark_done(self, use: Use) -> None:
        if self.journal is not None:
            try:
                await trio.to_thread.run_sync(self.journal.done, use.key)
            except OSError as e:
                log.error("lineage journal write failed (%s)", e)

    async def drain(self, timeout: float) -> bool:
        """Wait (bounded) until every queued use is recorded; True if none is left."""
        with trio.move_on_after(timeout):
            await self._idle.wait()
        return self.stats.pending == 0
