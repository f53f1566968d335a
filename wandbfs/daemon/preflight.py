"""The checks ``wandbfs mount`` makes before it forks: each failure one clear line, none waiting.

The lock file parses, an API key is there, and the mount point is free: it exists, is a
directory, is empty and nothing is mounted there, and no daemon of ours still lives for it
(a stopped, serving or finishing one is refused with its pid). Every syscall on the mount
point runs with a deadline, so a hung mount there cannot hold the command; a dead mount (its
daemon was killed) is detached lazily and the check goes on.
"""

from __future__ import annotations

import errno
import netrc
import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

from wandbfs.daemon.config import MountConfig, MountError, load_lock
from wandbfs.daemon.mounttab import fusermount_unmount, is_mounted
from wandbfs.daemon.procutil import CALL_TIMEOUT, NoAnswer, bounded
from wandbfs.daemon.state import Daemon, find_daemon, mount_path, no_answer_message, stopped_message


def preflight(config: MountConfig) -> None:
    """The checks that need no W&B call; each failure is one clear line."""
    load_lock(config)
    check_mount_point(config.mountpoint)
    if config.shared_cache:
        from wandbfs.shared.stores import open_store

        try:
            open_store(config.shared_cache)   # the URL's form and boto3; reaching it is the daemon's
        except ValueError as e:
            raise MountError(str(e)) from None
    if not api_key_available():
        raise MountError("no W&B API key: set WANDB_API_KEY or run `wandb login`")


def api_key_available() -> bool:
    """WANDB_API_KEY, or a netrc entry for the W&B host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def check_mount_point(mountpoint: str | os.PathLike[str], timeout: float = CALL_TIMEOUT) -> None:
    """Everything ``wandbfs mount`` checks about the mount point, each failure one clear line;
    no check waits on a daemon for more than ``timeout`` seconds."""
    mp = mount_path(mountpoint)
    d = find_daemon(mp)
    if d is not None:
        _refuse_live_daemon(d, mp)
    st = _stat_mount_point(mp, timeout)
    if st is None:   # a dead mount (its daemon was killed)
        fusermount_unmount(mp, lazy=True)
        st = _stat_mount_point(mp, timeout)
        if st is None:
            raise MountError(f"mount point {mp}: a dead mount is still there after a lazy unmount")
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mount point {mp} is not a directory")
    if is_mounted(mp) and dead_mount(mp, timeout):
        fusermount_unmount(mp, lazy=True)
    if is_mounted(mp):
        raise MountError(f"{mp} is already mounted (wandbfs unmount {mp} first)")
    try:
        empty = bounded(_is_empty, str(mp), timeout=timeout)
    except NoAnswer:
        raise MountError(f"mount point {mp} did not answer within {timeout:.0f}s") from None
    except OSError as e:
        raise MountError(f"mount point {mp}: {e.strerror}") from None
    if not empty:
        raise MountError(f"mount point {mp} is not empty")


def dead_mount(mountpoint: str | os.PathLike[str], timeout: float = CALL_TIMEOUT) -> bool:
    """True when a mount is there whose daemon is gone; MountError when it does not answer."""
    mp = mount_path(mountpoint)
    try:
        return not bounded(_listable, str(mp), timeout=timeout)
    except NoAnswer:
        raise MountError(f"{mp} is mounted and does not answer: {no_answer_message(mp, timeout)}") from None


def _is_empty(path: str) -> bool:
    with os.scandir(path) as it:
        return next(it, None) is None


def _listable(path: str) -> bool:
    """False for a mount whose daemon died (SIGKILL): stat may still come from the kernel's
    cache, but listing it needs the daemon."""
    try:
        os.listdir(path)
    except OSError as e:
        return e.errno not in (errno.ENOTCONN, errno.ECONNABORTED)
    return True


def _refuse_live_daemon(d: Daemon, mp: Path) -> None:
    if d.stopped:
        raise MountError(stopped_message(d))
    if is_mounted(mp):
        raise MountError(f"{mp} is already mounted by wandbfs (pid {d.pid}): `wandbfs unmount {mp}` first")
    raise MountError(f"the previous wandbfs daemon (pid {d.pid}) for {mp} is still running (unmounted, "
                     f"finishing its W&B run): wait for it to exit, or `wandbfs unmount --force {mp}` ends it")


def _stat_mount_point(mp: Path, timeout: float) -> os.stat_result | None:
    """``os.stat`` of the mount point with a deadline; None for a dead mount (ENOTCONN)."""
    try:
        return bounded(os.stat, str(mp), timeout=timeout)
    except NoAnswer:
        raise MountError(f"mount point {mp} did not answer within {timeout:.0f}s (a hung filesystem is "
                         f"mounted there?): `wandbfs unmount --force {mp}` detaches a wandbfs mount") from None
    except FileNotFoundError:
        raise MountError(f"mount point {mp} does not exist") from None
    except OSError as e:
        if e.errno in (errno.ENOTCONN, errno.ECONNABORTED):
            return None
        raise MountError(f"mount point {mp}: {e.strerror}") from None
