"""``wandbfs unmount`` (and ``--force``): taking a mount down without waiting on its daemon for long.

A FUSE mount whose daemon is stopped (SIGSTOP), deadlocked or stuck makes every syscall on
it block in the kernel: ``stat`` of the mount point itself, ``getxattr``, ``listdir``, even
``Path.resolve()``. So the CLI

- names mount points without touching them (:func:`~wandbfs.daemon.state.mount_path`), and
  learns what is mounted where from the mount table (:mod:`wandbfs.daemon.mounttab`);
- looks at the daemon first, from its runtime file and ``/proc/<pid>/stat``: a stopped
  daemon is reported at once with the way out (:func:`~wandbfs.daemon.state.stopped_message`);
- asks the daemon itself over its control socket (:func:`ask_daemon`: ``info``, ``status``),
  which never touches the mount, with a deadline;
- runs every syscall that does touch a mount in a child process with a deadline
  (:func:`~wandbfs.daemon.procutil.bounded`);
- detaches a daemon that does not answer (:func:`force_unmount`): abort the FUSE
  connection, lazy unmount, SIGKILL. Its lineage journal is left alone: pending uses are
  sent by the next daemon on that mount point.

The commands reach the daemon's state and the bounded calls through this module's names.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from typing import Any

from wandbfs.daemon.config import MountError
from wandbfs.daemon.control_socket import NoSocket, ask
from wandbfs.daemon.mounttab import MountEntry, fusermount_unmount, is_mounted, mount_entry
from wandbfs.daemon.procutil import CALL_TIMEOUT, NoAnswer, Pending, bounded, wait_gone
from wandbfs.daemon.state import (Daemon, all_daemons, clear_runtime, control_socket, find_daemon, mount_path,
                                  no_answer_message, state_dir, stopped_message)

EXIT_TIMEOUT = 15.0      # seconds `wandbfs unmount` waits for the daemon to exit
KILL_GRACE = 2.0         # seconds --force lets a running (not stopped) daemon exit by itself
FUSECTL = Path("/sys/fs/fuse/connections")

# The commands' way to the daemon's state and to bounded calls (they live in wandbfs.daemon).
__all__ = ["CALL_TIMEOUT", "Daemon", "NoAnswer", "NoSocket", "Pending", "abort_connection", "all_daemons",
           "ask_daemon", "bounded", "daemon_problem", "find_daemon", "force_unmount", "mount_path",
           "no_answer_message", "state_dir", "stopped_message", "unmount"]


def daemon_problem(mountpoint: str | os.PathLike[str]) -> str | None:
    """The reason not to touch the mount at all (its daemon is stopped), or None."""
    d = find_daemon(mountpoint)
    return stopped_message(d) if d is not None and d.stopped else None


def ask_daemon(mountpoint: str | os.PathLike[str], request: dict[str, Any],
               timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
    """``request`` answered by the mount's daemon over its control socket, without touching
    the mount: ``NoSocket`` when there is none of ours (another user's mount, another state
    directory), ``NoAnswer`` after ``timeout``, ``OSError`` for a refused request."""
    return ask(control_socket(mountpoint), request, timeout)


# ---- unmount -----------------------------------------------------------------------------

def unmount(mountpoint: str | os.PathLike[str], timeout: float = EXIT_TIMEOUT, force: bool = False) -> list[str]:
    """``wandbfs unmount``: unmount, then wait (bounded) for the daemon to finish its W&B run;
    ``force`` detaches a daemon that does not answer (:func:`force_unmount`). What --force did."""
    if force:
        return force_unmount(mountpoint)
    mp = mount_path(mountpoint)
    d = find_daemon(mp)
    if d is not None and d.stopped:
        raise MountError(stopped_message(d))
    if not is_mounted(mp):
        if d is not None:
            raise MountError(f"{mp} is not mounted, but its wandbfs daemon (pid {d.pid}) is still running: "
                             f"wait for it to exit, or `wandbfs unmount --force {mp}` ends it")
        raise MountError(f"{mp} is not mounted")
    fusermount_unmount(mp)
    if d is None:
        return []
    if not wait_gone(d.pid, timeout):
        where = f" (its log: {d.log_file})" if d.log_file else ""
        raise MountError(f"unmounted {mp}, but its wandbfs daemon (pid {d.pid}) has not exited after "
                         f"{timeout:.0f}s{where}: `wandbfs unmount --force {mp}` ends it")
    clear_runtime(d.runtime, d.pid)
    return []


def abort_connection(entry: MountEntry) -> bool:
    """Abort the mount's FUSE connection: every request waiting on the daemon fails at once.

    Needs the fusectl filesystem at /sys/fs/fuse/connections (systemd mounts it); False
    when it is not there or we may not write it."""
    try:
        (FUSECTL / str(entry.minor) / "abort").write_text("1")
    except OSError:
        return False
    return True


def force_unmount(mountpoint: str | os.PathLike[str]) -> list[str]:
    """``wandbfs unmount --force``: detach a daemon that does not answer. Returns what was done.

    The lineage journal is not touched: its pending uses are sent by the next daemon."""
    mp = mount_path(mountpoint)
    d = find_daemon(mp)
    entry = mount_entry(mp)
    if entry is None and d is None:
        raise MountError(f"{mp} is not mounted and no wandbfs daemon of yours serves it")
    done: list[str] = []
    if entry is not None and entry.fstype.startswith("fuse"):
        if abort_connection(entry):
            done.append("aborted its FUSE connection")
    if entry is not None:
        fusermount_unmount(mp, lazy=True)
        done.append("unmounted it (lazy)")
    if d is not None:
        if not d.stopped and wait_gone(d.pid, KILL_GRACE):
            done.append(f"its daemon (pid {d.pid}) exited")
        else:
            _sigkill(d.pid)
            if not wait_gone(d.pid, CALL_TIMEOUT):
                raise MountError(f"{mp}: {', '.join(done) or 'nothing done'}, but its daemon (pid {d.pid}) "
                                 f"survives SIGKILL (state {d.state})")
            done.append(f"killed its daemon (pid {d.pid})")
        clear_runtime(d.runtime, d.pid)
    else:
        done.append("no runtime file names its daemon (another WANDBFS_STATE_DIR?), so it was not killed")
    return done


def _sigkill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
