"""Who is reading: the process behind a FUSE request, and the W&B run it belongs to.

Lineage should land on the run that consumed the model, not only on the mount's run. A
training job launched with ``WANDB_RUN_ID`` (and ``WANDB_PROJECT`` / ``WANDB_ENTITY``) in
its environment - which ``wandb.init()`` honours, so the job's run and the lineage run are
the same - is recognised by reading ``/proc/<pid>/environ`` of the process that opened
the file (FUSE tells us its pid and uid).

Permission bounds: the kernel lets the daemon read another process's environment only
when it runs as that process's user or as root; otherwise the use goes to the mount's run.
The environment is the one the process was started with: a run id set later inside the
process (``os.environ[...] = ...`` after start, or ``wandb.init(id=...)`` alone) is not
visible; DataLoader workers and other children inherit it, so their reads count too.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

__all__ = ["Reader", "ReaderInfo", "parse_environ", "run_from_environ"]

SDK_DEFAULT_PROJECT = "uncategorized"   # what wandb.init uses when no project is given


@dataclass(frozen=True)
class Reader:
    pid: int
    uid: int
    comm: str
    run: str | None    # "entity/project/run_id"; entity "-" = the API key's default entity


def parse_environ(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep and k:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def run_from_environ(env: dict[str, str]) -> str | None:
    """The run a process's environment names, as ``entity/project/id`` (entity may be ``-``)."""
    run_id = env.get("WANDB_RUN_ID", "").strip()
    if not run_id or "/" in run_id:
        return None
    project = env.get("WANDB_PROJECT", "").strip() or SDK_DEFAULT_PROJECT
    entity = env.get("WANDB_ENTITY", "").strip() or "-"
    if "/" in project or "/" in entity:
        return None
    return f"{entity}/{project}/{run_id}"


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    fields = raw.rsplit(b")", 1)[-1].split()
    return fields[19].decode() if len(fields) > 19 else None   # field 22: starttime


class ReaderInfo:
    """Looks readers up, with a short per-pid memory (one open after another costs nothing).

    Keyed by pid *and* start time, so a recycled pid is never mistaken for the old process.
    One per mount: no state shared between mounts.
    """

    TTL = 30.0

    def __init__(self, *, runs: bool = True) -> None:
        self.runs = runs
        self.my_uid = os.getuid()
        self._seen: dict[int, tuple[str | None, float, Reader]] = {}

    def get(self, pid: int, uid: int) -> Reader:
        started = _start_time(pid)
        hit = self._seen.get(pid)
        now = time.monotonic()
        if hit is not None and hit[0] == started and now - hit[1] < self.TTL:
            return hit[2]
        comm = (_read(f"/proc/{pid}/comm") or b"?").decode(errors="replace").strip()
        run = None
        if self.runs and (self.my_uid == 0 or uid == self.my_uid):
            raw = _read(f"/proc/{pid}/environ")
            if raw is not None:
                run = run_from_environ(parse_environ(raw))
        reader = Reader(pid, uid, comm, run)
        if len(self._seen) > 4096:
            self._seen.clear()
        self._seen[pid] = (started, now, reader)
        return reader
