"""What /proc says about a process: shared by the cache (whose temp files belong to a live
daemon?) and the daemon's own process control, so neither part imports the other."""

from __future__ import annotations


def process_state(pid: int) -> str | None:
    """The state letter of /proc/<pid>/stat (R, S, D, T, t, Z...); None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][:1] or None
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def process_alive(pid: int) -> bool:
    """True for a running process; a zombie (killed, not yet reaped) counts as gone."""
    return process_state(pid) not in (None, "Z", "X")
