"""The state directory: the files each mount point owns there, and the daemon they name.

Every file is named from the mount point without touching it (:func:`mount_path` resolves
only the parent): a mount whose daemon is stopped blocks any syscall on the mount point.

- ``mount-<id>.json``: the runtime file, written once the mount answers (pid, log file);
- ``mount-<id>.log``: the daemon's log, unless ``--log-file`` names another;
- ``lineage-<id>.jsonl``: the lineage journal (a daemon restarted there replays it);
- ``refresh-<id>.txt`` / ``.taking``: a ``wandbfs refresh`` request and its progress;
- ``control-<id>.sock``: the daemon's control socket (``wandbfs info``/``status``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from wandbfs.daemon.procutil import started_at
from wandbfs.procfs import process_state


def state_dir() -> Path:
    """``$WANDBFS_STATE_DIR``, else ``$XDG_STATE_HOME/wandbfs``; created private (0700)."""
    base = os.environ.get("WANDBFS_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "wandbfs")
    p = Path(base)
    p.mkdir(parents=True, exist_ok=True, mode=0o700)
    return p


# ---- naming a mount point without touching it ------------------------------------------

def mount_path(mountpoint: str | os.PathLike[str]) -> Path:
    """The absolute mount point with its parent's symlinks resolved and its own name kept.

    ``Path.resolve()`` would ``lstat`` the mount point itself, which blocks when its daemon
    does not answer; the parent is an ordinary directory."""
    p = Path(os.path.abspath(mountpoint))
    if p.parent == p:
        return p
    return Path(os.path.realpath(p.parent)) / p.name


def mount_id(mountpoint: str | os.PathLike[str]) -> str:
    """The id that names a mount point's files in the state directory (runtime, journal, log).

    Hashed from the path's bytes (``os.fsencode``), so any name the kernel accepts has one."""
    return hashlib.sha256(os.fsencode(mount_path(mountpoint))).hexdigest()[:16]


def runtime_file(mountpoint: str | os.PathLike[str], directory: Path | None = None) -> Path:
    """The running daemon's pid and log file (``directory``: another state dir than ours)."""
    return (directory or state_dir()) / f"mount-{mount_id(mountpoint)}.json"


def journal_file(mountpoint: str | os.PathLike[str]) -> Path:
    """The lineage journal of a mount point: a daemon restarted there replays what is pending."""
    return state_dir() / f"lineage-{mount_id(mountpoint)}.jsonl"


def default_log_file(mountpoint: str | os.PathLike[str]) -> Path:
    return state_dir() / f"mount-{mount_id(mountpoint)}.log"


def refresh_file(mountpoint: str | os.PathLike[str]) -> Path:
    """Where ``wandbfs refresh MOUNT PATH`` leaves the paths to refresh before its SIGHUP."""
    return state_dir() / f"refresh-{mount_id(mountpoint)}.txt"


def taking_file(mountpoint: str | os.PathLike[str]) -> Path:
    """A refresh request being carried out; ``wandbfs refresh`` waits until it is gone."""
    return refresh_file(mountpoint).with_suffix(".taking")


def control_socket(mountpoint: str | os.PathLike[str]) -> Path:
    """The daemon's control socket (daemon/control_socket.py): found from the mount point alone."""
    return state_dir() / f"control-{mount_id(mountpoint)}.sock"


# ---- the runtime file and the daemon it names --------------------------------------------

def write_runtime(mountpoint: Path, log_file: Path) -> None:
    """Written by the daemon once its mount answers: ``wandbfs status/unmount`` find it by this."""
    # Not .resolve(): this runs once the mount answers, and resolving stats our own mount.
    info = {"pid": os.getpid(), "mountpoint": os.path.abspath(mountpoint), "log_file": str(log_file),
            "started": time.time()}
    path = runtime_file(mountpoint)
    path.write_text(json.dumps(info))
    os.chmod(path, 0o600)


def clear_runtime(runtime: Path, pid: int) -> None:
    """Remove the runtime file if it still names ``pid`` (a newer daemon may own it by now)."""
    try:
        if int(json.loads(runtime.read_text())["pid"]) == pid:
            runtime.unlink()
    except (OSError, ValueError, KeyError, TypeError):
        pass


@dataclass(frozen=True)
class Daemon:
    """The process a runtime file names, alive when it was looked at."""

    pid: int
    mountpoint: Path
    log_file: str | None
    runtime: Path

    @property
    def state(self) -> str | None:
        return process_state(self.pid)

    @property
    def alive(self) -> bool:
        return self.state not in (None, "Z", "X")

    @property
    def stopped(self) -> bool:
        return self.state in ("T", "t")


def _daemon_from(runtime: Path, mountpoint: Path | None = None) -> Daemon | None:
    try:
        info = json.loads(runtime.read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    d = Daemon(pid, mountpoint or Path(str(info.get("mountpoint", "?"))), info.get("log_file"), runtime)
    if not d.alive:
        return None
    started, written = started_at(pid), info.get("started")
    if started is not None and isinstance(written, (int, float)) and started > written + 2:
        return None   # the pid was reused by a process that started after the runtime file was written
    return d


def find_daemon(mountpoint: str | os.PathLike[str]) -> Daemon | None:
    """The live daemon of this user serving (or last serving) the mount point, if any."""
    return _daemon_from(runtime_file(mountpoint), mount_path(mountpoint))


def all_daemons() -> list[Daemon]:
    """Every live daemon with a runtime file in this user's state directory."""
    out = [_daemon_from(p) for p in sorted(state_dir().glob("mount-*.json"))]
    return [d for d in out if d is not None]


def stopped_message(d: Daemon) -> str:
    return (f"the wandbfs daemon (pid {d.pid}) for {d.mountpoint} is stopped: "
            f"`kill -CONT {d.pid}`, or `wandbfs unmount --force {d.mountpoint}`")


def no_answer_message(mountpoint: str | os.PathLike[str], timeout: float) -> str:
    """What to say when a call on a mount timed out: the daemon's state if we know it."""
    mp = mount_path(mountpoint)
    d = find_daemon(mp)
    if d is not None and d.stopped:
        return stopped_message(d)
    if d is not None:
        where = f"; its log: {d.log_file}" if d.log_file else ""
        return (f"the wandbfs daemon (pid {d.pid}) for {mp} did not answer within {timeout:.0f}s "
                f"(hung{where}): `wandbfs unmount --force {mp}` detaches it")
    return (f"{mp} did not answer within {timeout:.0f}s: its daemon is hung or stopped; "
            f"`wandbfs unmount --force {mp}` detaches it")
