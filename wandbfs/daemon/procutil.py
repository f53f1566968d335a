"""Processes: their state from /proc, and calls that may not answer run with a deadline.

A FUSE mount whose daemon is stopped (SIGSTOP), deadlocked or stuck makes every syscall on
it block in the kernel, so whatever touches a mount from outside its daemon runs it in a
child process with a deadline (:func:`bounded`, :class:`Pending`) or as a helper program
with one (:func:`run_command`); a child that does not answer is killed and abandoned, and
it holds none of the caller's descriptors, so a shell or a test reading our output is never
held. Shared by the mount's checks, the CLI, the cache and the bench.
"""

from __future__ import annotations

import errno
import os
import pickle
import select
import signal
import subprocess
import time
from typing import Any, Callable, Generic, TypeVar

from wandbfs.procfs import process_alive

T = TypeVar("T")

CALL_TIMEOUT = 5.0       # seconds a syscall on a mount may take before we say it does not answer


def started_at(pid: int) -> float | None:
    """When the process started (epoch seconds), from its start time in ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(") ", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(ln.split()[1]) for ln in f if ln.startswith("btime "))
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def wait_gone(pid: int, timeout: float) -> bool:
    """Whether the process exited (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_children(comm_prefix: str) -> list[int]:
    """SIGKILL this process's children whose name starts with ``comm_prefix``; their pids.

    wandb-core outlives a run that could not finish: the daemon ends its own, by pid."""
    me = str(os.getpid())
    killed = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry.name}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if fields[1] == me and comm.startswith(comm_prefix):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except ProcessLookupError:
                pass
    return killed


# ---- bounded calls -------------------------------------------------------------------------

class NoAnswer(Exception):
    """A syscall on a mount did not return within its deadline (the child doing it was killed)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no answer within {timeout:.0f}s")
        self.timeout = timeout


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
