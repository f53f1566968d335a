"""The daemon as a process: fork and wait for the mount, or run in the foreground; its logs.

``wandbfs mount`` runs the checks (:mod:`wandbfs.daemon.preflight`), forks, and waits on a
pipe until the daemon writes ``OK`` (the mount answers) or the reason it could not mount;
the daemon detaches (new session, /dev/null in, its log file out), serves, and leaves a
runtime file in the state directory while the mount is up. ``--foreground`` serves in the
calling process and logs to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import select
import sys
import time
from typing import NoReturn

from wandbfs.daemon.config import MountConfig, MountError
from wandbfs.daemon.preflight import preflight
from wandbfs.daemon.procutil import wait_gone
from wandbfs.daemon.serve import serve
from wandbfs.daemon.state import clear_runtime, default_log_file, runtime_file, write_runtime

log = logging.getLogger(__name__)

READY = b"OK"
FAILED_DAEMON_EXIT = 10.0   # seconds a daemon that reported its failure gets to exit


class JsonFormatter(logging.Formatter):
    """One JSON object per line (``--log-format json``), for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(config: MountConfig, to_stderr: bool) -> None:
    handler: logging.Handler
    if to_stderr:
        handler = logging.StreamHandler(sys.stderr)
    else:
        path = config.log_file or default_log_file(config.mountpoint)
        handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter() if config.log_format == "json"
                         else logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if config.debug else logging.INFO)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def mount_foreground(config: MountConfig) -> int:
    """Serve in this process until unmounted; MountError if it could not mount."""
    preflight(config)
    setup_logging(config, to_stderr=True)
    failure: list[str] = []

    def ready(err: str | None) -> None:
        if err:
            failure.append(err)
        else:
            _write_runtime(config)
            print(f"wandbfs: mounted at {config.mountpoint}", file=sys.stderr)

    try:
        code = serve(config, ready)
    finally:
        clear_runtime(runtime_file(config.mountpoint), os.getpid())
    if failure:
        raise MountError(failure[0])
    # The SDK's atexit teardown waits on wandb-core, which may wait on a hanging W&B: the
    # daemon has finished (or given up on) its run within its own deadline already.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def mount_daemon(config: MountConfig, timeout: float = 180.0) -> int:
    """Fork; the parent returns 0 once the mount answers, or raises MountError with the reason."""
    preflight(config)
    config.log_file = config.log_file or default_log_file(config.mountpoint)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(r)
        _run_daemon(config, w)
    os.close(w)
    msg = _read_readiness(r, pid, config, timeout)
    if msg != READY.decode():
        _wait_failed_daemon(pid, msg)
    return 0


def _run_daemon(config: MountConfig, w: int) -> NoReturn:
    """The forked child: detach, serve, tell the parent once (OK or why not), exit."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    assert config.log_file is not None
    logfd = os.open(config.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)
    setup_logging(config, to_stderr=False)
    sent = [False]

    def ready(err: str | None) -> None:
        if sent[0]:
            return
        sent[0] = True
        if err is None:
            _write_runtime(config)
        os.write(w, err.encode() if err else READY)
        os.close(w)

    code = 1
    try:
        code = serve(config, ready)
    except BaseException as e:  # noqa: BLE001
        log.exception("daemon failed")
        ready(f"{type(e).__name__}: {e}")
    finally:
        if not sent[0]:
            ready("the daemon exited before the mount was ready")
        clear_runtime(runtime_file(config.mountpoint), os.getpid())
        logging.shutdown()
        os._exit(code)


def _read_readiness(r: int, pid: int, config: MountConfig, timeout: float) -> str:
    """What the daemon wrote on the pipe before closing it; MountError after ``timeout``."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise MountError(f"the mount did not answer within {timeout:.0f}s (see {config.log_file}; its daemon "
                             f"is pid {pid}: `kill {pid}`)")
        ready_fds, _, _ = select.select([r], [], [], left)
        if not ready_fds:
            continue
        data = os.read(r, 4096)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    return b"".join(chunks).decode()


def _wait_failed_daemon(pid: int, msg: str) -> None:
    """Reap a daemon that reported its failure (bounded: one hanging on its way out must not
    hold us), then raise its reason."""
    if not wait_gone(pid, FAILED_DAEMON_EXIT):
        msg = f"{msg or 'the mount failed'} (its daemon, pid {pid}, has not exited: kill {pid})"
    else:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    raise MountError(msg or "the daemon exited without a word")


def _write_runtime(config: MountConfig) -> None:
    write_runtime(config.mountpoint, config.log_file or default_log_file(config.mountpoint))
