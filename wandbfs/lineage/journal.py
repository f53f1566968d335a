"""The lineage journal: every use is on disk before it goes to W&B.

Lineage is the point of reading models through wandbfs, so a use must survive a W&B
outage and a daemon that dies or restarts. Each (run, version) use is appended to a
JSON-lines file and fsynced when it is first seen; a second line marks it recorded once
W&B has accepted it. A daemon starting on the same mount point replays what is pending.

Exactly once: a key that has a ``done`` line is never sent again, even by a later daemon
(a training run outlives mount restarts). The gap between W&B accepting a use and the
``done`` line reaching the disk is closed by the recorder, which checks the run's inputs
before re-sending a replayed use.

One journal per mount point (``<state>/lineage-<mount id>.jsonl``), so two mounts never
replay each other's uses. Appends are single ``write`` calls of one line, under a lock
for the rare rewrite at startup (compaction keeps one line per recorded key).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["JournalEntry", "LineageJournal", "read_journal"]

MOUNT_RUN = "mount"   # ``run`` of a use destined for the mount's own run, path not known yet


@dataclass(frozen=True)
class JournalEntry:
    key: str
    run: str               # entity/project/run_id, or MOUNT_RUN
    artifact_id: str
    version_name: str
    used_as: str
    time: float
    done: float | None = None   # when W&B accepted it

    @property
    def pending(self) -> bool:
        return self.done is None


def use_key(run: str, artifact_id: str) -> str:
    return f"{run}|{artifact_id}"


def read_journal(path: Path) -> dict[str, JournalEntry]:
    """Every use in a journal by key, with its state. Torn or unreadable lines are skipped
    (a crash mid-append leaves at most one); a ``done`` without its ``use`` is kept as done."""
    out: dict[str, JournalEntry] = {}
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        return out
    with f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
                if rec.get("op") == "use":
                    key = rec["key"]
                    prev = out.get(key)
                    out[key] = JournalEntry(key, rec["run"], rec["artifact_id"], rec["version_name"],
                                            rec["used_as"], float(rec["time"]), prev.done if prev else None)
                elif rec.get("op") == "done":
                    key = rec["key"]
                    prev = out.get(key)
                    if prev is not None:
                        out[key] = JournalEntry(**{**asdict(prev), "done": float(rec["time"])})
                    else:
                        out[key] = JournalEntry(key, rec.get("run", "?"), rec.get("artifact_id", "?"),
                                                rec.get("version_name", "?"), rec.get("used_as", "?"),
                                                float(rec["time"]), float(rec["time"]))
            except (ValueError, KeyError, TypeError):
                log.warning("lineage journal %s: skipping unreadable line %d", path, n)
    return out


def _use_line(e: JournalEntry) -> dict[str, Any]:
    return {"op": "use", "key": e.key, "run": e.run, "artifact_id": e.artifact_id,
            "version_name": e.version_name, "used_as": e.used_as, "time": e.time}


class LineageJournal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Across processes too: ``wandbfs lineage`` may read while the daemon writes."""
        with self._lock:
            fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _append(self, rec: dict[str, Any]) -> None:
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode()
        with self._locked():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def load(self) -> dict[str, JournalEntry]:
        """Read the journal and compact it (one line per key), for a daemon that starts."""
        with self._locked():
            entries = read_journal(self.path)
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                for e in entries.values():
                    f.write(json.dumps(_use_line(e), ensure_ascii=False) + "\n")
                    if e.done is not None:
                        f.write(json.dumps({"op": "done", "key": e.key, "time": e.done}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        return entries

    def add(self, entry: JournalEntry) -> None:
        self._append(_use_line(entry))

    def done(self, key: str) -> None:
        self._append({"op": "done", "key": key, "time": time.time()})
