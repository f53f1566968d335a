"""W&B runs for lineage: the recorder that declares a use as a run's input, the mount's own run.

The lineage queue (lineage/queue.py) decides what to record and when; this module is the
only one that touches runs through the SDK (``api.run(path).use_artifact``, ``wandb.init``).
Blocking, like every SDK call: the queue calls the recorder in a thread under the gate.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)

__all__ = ["MountRun", "RunMissing", "RunRecorder", "UseToRecord"]


class RunMissing(Exception):
    """The run a reader's environment names does not exist (yet)."""


class UseToRecord(Protocol):
    """What the recorder needs of a use (lineage.queue.Use)."""

    @property
    def artifact_id(self) -> str: ...
    @property
    def version_name(self) -> str: ...   # org/wandb-registry-R/C:vN, what is recorded
    @property
    def used_as(self) -> str: ...        # the name the reader used
    @property
    def run(self) -> str: ...            # entity/project/id, or lineage's MOUNT_RUN (no "/")
    @property
    def replay(self) -> bool: ...        # from an earlier daemon's journal: check before sending


class RunRecorder:
    """Records uses through the public API, on any existing run.

    Uses for the mount's run go to ``run_path``, which may be unknown at first (the mount
    started while W&B was down): then ``start_run`` is called before the first such use
    and, like the use, retried until it works. A replayed use (from an earlier daemon's
    journal) is first looked up among the run's inputs, so a use W&B accepted just before
    a crash is not sent twice.

    A use's ``run`` is a run path (``entity/project/id``, ``-`` for the default entity);
    anything else (lineage's ``MOUNT_RUN``) stands for the mount's own run, so this module
    needs nothing from lineage.
    """

    def __init__(self, api_getter: Callable[[], Any], run_path: str | None,
                 start_run: Callable[[], str] | None = None) -> None:
        self._api = api_getter
        self.run_path = run_path
        self._start_run = start_run
        self._runs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _target(self, use: UseToRecord) -> str:
        if "/" in use.run:
            entity, rest = use.run.split("/", 1)
            return f"{self._api().default_entity}/{rest}" if entity == "-" else use.run
        if self.run_path is None:
            assert self._start_run is not None
            self.run_path = self._start_run()
        return self.run_path

    def __call__(self, use: UseToRecord) -> None:
        # One record at a time. A record abandoned at the daemon's deadline may still hold
        # the lock: fail this try at once (it is retried) instead of queueing threads behind
        # it, each holding one of the gate's slots.
        if not self._lock.acquire(timeout=1.0):
            raise BusyRecording("an earlier lineage record is still waiting for W&B")
        try:
            path = self._target(use)
            try:
                self._record(path, use)
            except Exception as e:
                if _run_not_found(e):
                    self._runs.pop(path, None)
                    raise RunMissing(f"run {path} not found") from e
                raise
        finally:
            self._lock.release()

    def _record(self, path: str, use: UseToRecord) -> None:
        api = self._api()
        run = self._runs.get(path)
        if run is None:
            run = self._runs[path] = api.run(path)
        if use.replay and any(a.id == use.artifact_id for a in run.used_artifacts()):
            log.info("lineage: %s was already recorded on %s", use.version_name, path)
            return
        artifact = api.artifact(use.version_name)
        run.use_artifact(artifact, use_as=use.used_as)


def _run_not_found(e: BaseException | None) -> bool:
    """The SDK raises RunNotFoundError lazily and its wrappers re-raise it as CommError."""
    from wandb.apis.public.runs import RunNotFoundError

    seen = 0
    while e is not None and seen < 5:
        if isinstance(e, RunNotFoundError):
            return True
        e = getattr(e, "exc", None) or e.__cause__ or e.__context__
        seen += 1
    return False


class BusyRecording(Exception):
    """The previous record has not returned yet (W&B is slow or hanging): try again later."""


class MountRun:
    """The run a mount starts (``wandb.init``) when no ``--run-id`` is given; finished at unmount."""

    def __init__(self, entity: str | None, project: str, job_type: str) -> None:
        self.entity, self.project, self.job_type = entity, project, job_type
        self.run: Any = None
        self._lock = threading.Lock()

    def start(self) -> str:
        """Once only: a start abandoned at the daemon's deadline may still finish, and the
        recorder's later call must then get that run, not a second ``wandb.init``."""
        import wandb

        with self._lock:
            if self.run is None:
                self.run = wandb.init(entity=self.entity, project=self.project, job_type=self.job_type,
                                      settings=wandb.Settings(console="off", silent=True, save_code=False,
                                                              disable_git=True))
            return f"{self.run.entity}/{self.run.project}/{self.run.id}"

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
