"""Lineage: every artifact version read through the mount becomes an input of a W&B run.

The first open of any file of a version queues one use; a background task records it with
the SDK (``Run.use_artifact``), so a read never waits on W&B. A use that fails is retried
with backoff until it lands or the mount stops; each version is recorded once per run.
The recorded artifact is the exact version that was read (by ``vN``), and ``use_as`` names
the path it was reached through (``acme/wandb-registry-model/resnet:production``), so a
moving alias cannot make the record point at a version nobody read.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import trio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Use:
    artifact_id: str
    version_name: str   # org/wandb-registry-R/C:vN, what is recorded
    used_as: str        # the name the reader used (alias or vN)


@dataclass
class LineageStats:
    queued: int = 0
    recorded: int = 0
    failures: int = 0
    pending: int = 0
    recorded_uses: list[Use] = field(default_factory=list)


Recorder = Callable[[Use], None]


class Lineage:
    def __init__(self, recorder: Recorder, *, limiter: trio.CapacityLimiter | None = None,
                 backoff_max: float = 30.0) -> None:
        self.recorder = recorder
        self.limiter = limiter or trio.CapacityLimiter(1)
        self.backoff_max = backoff_max
        self.stats = LineageStats()
        self._seen: set[str] = set()
        self._send, self._recv = trio.open_memory_channel[Use](math.inf)
        self._idle = trio.Event()
        self._idle.set()

    def note(self, use: Use) -> bool:
        """Queue a use unless this version was already queued; never blocks."""
        if use.artifact_id in self._seen:
            return False
        self._seen.add(use.artifact_id)
        self.stats.queued += 1
        self.stats.pending += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._send.send_nowait(use)
        return True

    async def run(self) -> None:
        """The background task: record queued uses in order, retrying each until it lands."""
        async for use in self._recv:
            delay = 0.5
            while True:
                try:
                    await trio.to_thread.run_sync(self.recorder, use, limiter=self.limiter)
                    break
                except Exception as e:  # noqa: BLE001 - any failure is retried, never fatal
                    self.stats.failures += 1
                    log.warning("recording lineage for %s failed (%s); retrying in %.1fs",
                                use.used_as, e, delay)
                    await trio.sleep(delay)
                    delay = min(self.backoff_max, delay * 2)
            self.stats.recorded += 1
            self.stats.pending -= 1
            self.stats.recorded_uses.append(use)
            log.info("recorded use of %s (as %s)", use.version_name, use.used_as)
            if self.stats.pending == 0:
                self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Wait (bounded) until every queued use is recorded; True if none is left."""
        with trio.move_on_after(timeout):
            await self._idle.wait()
        return self.stats.pending == 0


class RunRecorder:
    """Records uses on one W&B run through the public API (works for any existing run).

    ``run_path`` may be unknown at first (the mount started while W&B was down): then
    ``start_run`` is called before the first use and, like the use, retried until it works.
    """

    def __init__(self, api_getter: Callable[[], Any], run_path: str | None,
                 start_run: Callable[[], str] | None = None) -> None:
        self._api = api_getter
        self.run_path = run_path
        self._start_run = start_run
        self._run: Any = None
        self._lock = threading.Lock()

    def __call__(self, use: Use) -> None:
        with self._lock:
            if self.run_path is None:
                assert self._start_run is not None
                self.run_path = self._start_run()
            api = self._api()
            if self._run is None:
                self._run = api.run(self.run_path)
            artifact = api.artifact(use.version_name)
            self._run.use_artifact(artifact, use_as=use.used_as)


class MountRun:
    """The run a mount starts (``wandb.init``) when no ``--run-id`` is given; finished at unmount."""

    def __init__(self, entity: str | None, project: str, job_type: str) -> None:
        self.entity, self.project, self.job_type = entity, project, job_type
        self.run: Any = None

    def start(self) -> str:
        import wandb

        self.run = wandb.init(entity=self.entity, project=self.project, job_type=self.job_type,
                              settings=wandb.Settings(console="off", silent=True, save_code=False,
                                                      disable_git=True))
        return f"{self.run.entity}/{self.run.project}/{self.run.id}"

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
