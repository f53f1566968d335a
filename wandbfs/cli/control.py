"""Talking to a mount and its daemon without ever waiting on them for long.

A FUSE mount whose daemon is stopped (SIGSTOP), deadlocked or stuck makes every syscall on
it block in the kernel: ``stat`` of the mount point itself, ``getxattr``, ``listdir``, even
``Path.resolve()``. So the CLI

- names mount points without touching them (:func:`mount_path` resolves only the parent),
  and learns what is mounted where from ``/proc/self/mountinfo``;
- looks at the daemon first, from its runtime file and ``/proc/<pid>/stat``: a stopped
  daemon is reported at once with the way out (:func:`stopped_message`);
- runs every syscall that does touch a mount in a child process with a deadline
  (:func:`bounded`); a child that does not answer is killed and abandoned, and it holds
  none of the caller's descriptors, so a shell or a test reading our output is never held;
- detaches a daemon that does not answer (:func:`force_unmount`): abort the FUSE
  connection, lazy unmount, SIGKILL. Its lineage journal is left alone: pending uses are
  sent by the next daemon on that mount point.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import select
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from wandbfs.daemon.serve import MountError, state_dir

T = TypeVar("T")

CALL_TIMEOUT = 5.0       # seconds a syscall on a mount may take before we say it does not answer
EXIT_TIMEOUT = 15.0      # seconds `wandbfs unmount` waits for the daemon to exit
KILL_GRACE = 2.0         # seconds --force lets a running (not stopped) daemon exit by itself
FUSECTL = Path("/sys/fs/fuse/connections")


class NoAnswer(Exception):
    """A syscall on a mount did not return within its deadline (the child doing it was killed)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no answer within {timeout:.0f}s")
        self.timeout = timeout


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
    """The id that names a mount point's files in the state directory (runtime, journal, log)."""
    return hashlib.sha256(str(mount_path(mountpoint)).encode()).hexdigest()[:16]


def runtime_path(mountpoint: str | os.PathLike[str]) -> Path:
    return state_dir() / f"mount-{mount_id(mountpoint)}.json"


@dataclass(frozen=True)
class MountEntry:
    """One line of ``/proc/self/mountinfo``."""

    mountpoint: str
    fstype: str
    minor: int      # the FUSE connection's number in /sys/fs/fuse/connections


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo``."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if not sep or len(fields) < 5 or not rest:
            continue
        try:
            minor = int(fields[2].split(":")[1])
        except (IndexError, ValueError):
            continue
        out.append(MountEntry(_unescape(fields[4]), rest[0], minor))
    return out


def mount_entry(mountpoint: str | os.PathLike[str]) -> MountEntry | None:
    """What is mounted at the mount point now (the topmost mount), from mountinfo alone."""
    target = str(mount_path(mountpoint))
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        hits = [e for e in parse_mountinfo(f.read()) if e.mountpoint == target]
    return hits[-1] if hits else None


def is_mounted(mountpoint: str | os.PathLike[str]) -> bool:
    return mount_entry(mountpoint) is not None


# ---- the daemon, from its runtime file and /proc -----------------------------------------

def process_state(pid: int) -> str | None:
    """The state letter of /proc/<pid>/stat (R, S, D, T, t, Z...); None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][:1] or None
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _started_at(pid: int) -> float | None:
    """When the process started (epoch seconds), from its start time in ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(") ", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(ln.split()[1]) for ln in f if ln.startswith("btime "))
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


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
    started, written = _started_at(pid), info.get("started")
    if started is not None and isinstance(written, (int, float)) and started > written + 2:
        return None   # the pid was reused by a process that started after the runtime file was written
    return d


def find_daemon(mountpoint: str | os.PathLike[str]) -> Daemon | None:
    """The live daemon of this user serving (or last serving) the mount point, if any."""
    return _daemon_from(runtime_path(mountpoint), mount_path(mountpoint))


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


def daemon_problem(mountpoint: str | os.PathLike[str]) -> str | None:
    """The reason not to touch the mount at all (its daemon is stopped), or None."""
    d = find_daemon(mountpoint)
    return stopped_message(d) if d is not None and d.stopped else None


# ---- bounded calls -------------------------------------------------------------------------

class Pending(Generic[T]):
    """``fn(*args)`` running in a child process; :meth:`result` waits for it until a deadline.

    The child has /dev/null for stdin/stdout/stderr, so a child stuck in the kernel keeps no
    pipe of the caller open; on timeout it is SIGKILLed and left to exit when it can."""

    def __init__(self, fn: Callable[..., T], *args: Any) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:   # pragma: no cover - the child
            _child(fn, args, r, w)
        os.close(w)
        self.pid, self._fd = pid, r
        self._chunks: list[bytes] = []

    def result(self, deadline: float) -> T:
        """The call's value (or its exception, re-raised); NoAnswer once ``deadline`` (monotonic) passed."""
        timeout = max(0.0, deadline - time.monotonic())
        try:
            done = self._read_until(deadline)
        finally:
            os.close(self._fd)
        if not done:
            _kill(self.pid)
            raise NoAnswer(timeout)
        _reap(self.pid, 1.0)
        data = b"".join(self._chunks)
        if not data:
            raise OSError(errno.EIO, "the call's process died without an answer")
        ok, value = pickle.loads(data)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def _read_until(self, deadline: float) -> bool:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                data = os.read(self._fd, 65536)
                if not data:
                    return True
                self._chunks.append(data)


def _child(fn: Callable[..., Any], args: tuple[Any, ...], r: int, w: int) -> None:  # pragma: no cover
    code = 0
    try:
        os.close(r)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        try:
            out: tuple[bool, Any] = (True, fn(*args))
        except Exception as e:  # noqa: BLE001 - handed to the parent
            out = (False, e)
        try:
            data = pickle.dumps(out)
        except Exception as e:  # noqa: BLE001 - an unpicklable value or exception
            data = pickle.dumps((False, OSError(errno.EIO, f"{type(e).__name__}: {e}")))
        view = memoryview(data)
        while view:
            view = view[os.write(w, view):]
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid, 0.2)


def _reap(pid: int, timeout: float) -> bool:
    """waitpid for a short while; a child stuck in the kernel is left to init."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def bounded(fn: Callable[..., T], *args: Any, timeout: float = CALL_TIMEOUT) -> T:
    """``fn(*args)`` with a deadline: its value, its exception, or NoAnswer after ``timeout``."""
    return Pending(fn, *args).result(time.monotonic() + timeout)


def run_command(cmd: list[str], timeout: float = CALL_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """A helper program (fusermount3, umount) with a deadline; one stuck in the kernel is
    abandoned (SIGKILL, no wait), reported as return code 124."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()
        _reap(proc.pid, 0.2)
        return subprocess.CompletedProcess(cmd, 124, "", f"{cmd[0]} did not return within {timeout:.0f}s")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# ---- unmount -----------------------------------------------------------------------------

def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_state(pid) not in (None, "Z", "X"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _clear_runtime(d: Daemon) -> None:
    """Remove the runtime file if it still names this daemon (a newer one may own it)."""
    try:
        if int(json.loads(d.runtime.read_text())["pid"]) == d.pid:
            d.runtime.unlink()
    except (OSError, ValueError, KeyError, TypeError):
        pass


def unmount(mountpoint: str | os.PathLike[str], timeout: float = EXIT_TIMEOUT) -> None:
    """``wandbfs unmount``: unmount, then wait (bounded) for the daemon to finish its W&B run."""
    from wandbfs.daemon.serve import fusermount_unmount

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
        return
    if not wait_gone(d.pid, timeout):
        where = f" (its log: {d.log_file})" if d.log_file else ""
        raise MountError(f"unmounted {mp}, but its wandbfs daemon (pid {d.pid}) has not exited after "
                         f"{timeout:.0f}s{where}: `wandbfs unmount --force {mp}` ends it")
    _clear_runtime(d)


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
    from wandbfs.daemon.serve import fusermount_unmount

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
        _clear_runtime(d)
    else:
        done.append("no runtime file names its daemon (another WANDBFS_STATE_DIR?), so it was not killed")
    return done


def _sigkill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---- mount: is the mount point free? -----------------------------------------------------

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


def dead_mount(mountpoint: str | os.PathLike[str], timeout: float = CALL_TIMEOUT) -> bool:
    """True when a mount is there whose daemon is gone; MountError when it does not answer."""
    mp = mount_path(mountpoint)
    try:
        return not bounded(_listable, str(mp), timeout=timeout)
    except NoAnswer:
        raise MountError(f"{mp} is mounted and does not answer: {no_answer_message(mp, timeout)}") from None


def check_mount_point(mountpoint: str | os.PathLike[str], timeout: float = CALL_TIMEOUT) -> None:
    """Everything ``wandbfs mount`` checks about the mount point, each failure one clear line;
    no check waits on a daemon for more than ``timeout`` seconds."""
    from wandbfs.daemon.serve import fusermount_unmount

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
