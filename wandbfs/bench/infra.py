"""What every case stands on: the emulator, nginx, the links, mounts, timers and clean-up.

Servers run as child processes in their own sessions (so Ctrl-C reaches only the bench,
which then tears everything down in order): the emulator (``wandbfs emulator serve``),
nginx (zero-copy ``sendfile`` over the emulator's blob store, the second reference
server and rclone's HTTP remote), and, for the WAN link, the delaying proxy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from wandbfs.sdk import env as sdk_env
from wandbfs.daemon.mounttab import is_mounted
from wandbfs.procfs import process_alive
from wandbfs.daemon.state import runtime_file
from wandbfs.bench.netns import WanLink

API_KEY = "bench" + "k" * 40

MiB = 1 << 20


class WrongBytes(Exception):
    """What a client returned does not match the source (a fast wrong answer must not win)."""


def hermetic_env(root: Path, base_url: str, api_key: str = API_KEY) -> dict[str, str]:
    """A whole process environment whose SDK writes only under ``root``."""
    return sdk_env.hermetic_env(root, base_url, api_key, http_timeout=30, init_timeout=60,
                                base=sdk_env.without_wandb_vars())


# ---- clean-up -----------------------------------------------------------------------------

class Cleanup:
    """A stack of undo actions, run in reverse order; each runs even if an earlier one fails."""

    def __init__(self) -> None:
        self._stack: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, fn: Callable[[], None]) -> Callable[[], None]:
        self._stack.append((what, fn))
        return fn

    def pop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` now (it was pushed earlier) and forget it."""
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][1] is fn:
                del self._stack[i]
                break
        fn()

    def run(self) -> None:
        while self._stack:
            what, fn = self._stack.pop()
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - keep cleaning up
                print(f"bench: clean-up of {what} failed: {type(e).__name__}: {e}", file=sys.stderr)


def stop_process(p: subprocess.Popen, timeout: float = 10) -> None:
    if p.poll() is not None:
        return
    try:
        p.terminate()
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                r.read()
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:.0f}s") from None
            time.sleep(0.05)


# ---- servers ------------------------------------------------------------------------------

class EmulatorProc:
    """``wandbfs emulator serve`` as a child process (restartable on the same state)."""

    def __init__(self, state: Path, log_path: Path) -> None:
        self.state = state
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "EmulatorProc":
        self.state.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")
        cmd = [sys.executable, "-m", "wandbfs.cli", "emulator", "serve", "--host", "127.0.0.1",
               "--port", str(self.port or 0), "--state", str(self.state), "--url-lifetime", "86400"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, text=True,
                                     start_new_session=True)
        logf.close()
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("WANDB_BASE_URL="):
            stop_process(self.proc)
            raise RuntimeError(f"the emulator did not start (see {self.log_path})")
        self.port = int(line.strip().rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def control(self, method: str, what: str) -> Any:
        req = urllib.request.Request(f"{self.url}/_emulator/{what}", method=method)
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"null")

    def clear_log(self) -> None:
        self.control("DELETE", "log")

    def log(self) -> list[dict[str, Any]]:
        return self.control("GET", "log")

    def signed_blob_url(self, base_url: str, md5hex: str) -> str:
        from wandbfs.emulator.signing import UrlSigner

        secret = (self.state / "url-secret").read_bytes()
        return UrlSigner(secret, 86400).sign(base_url, f"/_storage/blobs/{md5hex}")


def graphql_counts(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """GraphQL requests by operation, plus storage GETs, from the emulator's request log."""
    ops: dict[str, int] = {}
    other: dict[str, int] = {}
    for e in entries:
        if e["route"] == "graphql":
            ops[e.get("operation") or "?"] = ops.get(e.get("operation") or "?", 0) + 1
        elif e["route"] != "control":
            other[e["route"]] = other.get(e["route"], 0) + 1
    return {"graphql": sum(ops.values()), "by_operation": dict(sorted(ops.items())), "other_routes": other}


class Nginx:
    """Debian nginx with sendfile over the emulator's blob store (/blobs/) and mirror trees (/tree/)."""

    def __init__(self, work: Path, blobs: Path, tree: Path) -> None:
        self.dir = work / "nginx"
        self.blobs, self.tree = blobs, tree
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Nginx":
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.tree.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        d = self.dir
        conf = f"""
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_requests 1000000; keepalive_timeout 300s;
    client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi; uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{self.port};
        location /blobs/ {{ alias {self.blobs}/; }}
        location /tree/ {{ alias {self.tree}/; autoindex on; autoindex_exact_size on; disable_symlinks off; }}
    }}
}}
"""
        (d / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(["nginx", "-c", str(d / "nginx.conf"), "-p", str(d), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "ab"),
                                     start_new_session=True)
        try:
            wait_http(self.url + "/tree/", 20)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"nginx did not start: {(d / 'stderr.log').read_text()[-500:]}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


# ---- links --------------------------------------------------------------------------------

@dataclass
class Link:
    """How clients reach the servers: directly on loopback, or through the WAN namespace."""

    name: str                   # "lo" | "wan"
    rtt_ms: float
    emu_url: str
    nginx_url: str
    wan: WanLink | None = None

    def wrap(self, cmd: list[str]) -> list[str]:
        return self.wan.wrap(cmd) if self.wan else cmd

    @property
    def describe(self) -> str:
        if self.wan:
            return f"WAN: {self.wan.rate}, {self.rtt_ms:g} ms round trip (veth + tbf + delaying proxy)"
        return "loopback"


# ---- page cache, memory, reads ------------------------------------------------------------

class PageCache:
    """Drop the page cache: globally (``drop_caches``) when allowed, else per file (fadvise)."""

    def __init__(self) -> None:
        self.global_ok = os.geteuid() == 0 and os.access("/proc/sys/vm/drop_caches", os.W_OK)

    def drop(self, *paths: Path) -> None:
        os.sync()
        if self.global_ok:
            try:
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
                return
            except OSError:
                self.global_ok = False
        for p in paths:
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    @property
    def method(self) -> str:
        return "echo 3 > /proc/sys/vm/drop_caches" if self.global_ok else "posix_fadvise(DONTNEED) per file"


def proc_mem(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of ``pid`` in bytes (empty when the process is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def reset_peak(pid: int) -> bool:
    """Reset VmHWM (``echo 5 > /proc/PID/clear_refs``, Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


_BUF = bytearray(MiB)


def read_file(path: Path | str) -> int:
    """Sequential read to the end with 1 MiB reads into a reused buffer; returns the byte count."""
    fd = os.open(path, os.O_RDONLY)
    try:
        n = 0
        while True:
            k = os.readv(fd, [_BUF])
            if k == 0:
                return n
            n += k
    finally:
        os.close(fd)


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            k = os.readv(fd, [_BUF])
            if k == 0:
                break
            h.update(memoryview(_BUF)[:k])
    finally:
        os.close(fd)
    return h.hexdigest()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)


def dir_usage(*roots: Path) -> int:
    """Bytes on disk under ``roots`` (st_blocks), each inode counted once across all roots."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                total += st.st_blocks * 512
    return total


# ---- mounts -------------------------------------------------------------------------------

@dataclass
class Counter:
    n: int = 0

    def next(self) -> int:
        self.n += 1
        return self.n


_mounts = Counter()


@dataclass
class WandbfsMount:
    """``wandbfs mount`` as a user runs it, on a link, with its own cache dir; a context manager."""

    work: Path
    link: Link
    cache_dir: Path
    extra: list[str] = field(default_factory=list)
    path: Path = field(init=False)
    env: dict[str, str] = field(init=False)
    pid: int = 0
    log_file: Path | None = None
    started: bool = False

    def __post_init__(self) -> None:
        i = _mounts.next()
        self.path = self.work / "mnt" / f"wandbfs-{i}"
        self.env = hermetic_env(self.work / "daemon" / f"m{i}", self.link.emu_url)
        self.env["WANDBFS_STATE_DIR"] = str(self.work / "daemon" / "state")

    def __enter__(self) -> "WandbfsMount":
        self.path.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.started = True  # see unmount()
        cmd = self.link.wrap([sys.executable, "-m", "wandbfs.cli", "mount", str(self.path), "--org", "acme",
                              "--cache-dir", str(self.cache_dir), "--no-lineage", *self.extra])
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
        if r.returncode != 0 or not is_mounted(self.path):
            self._force_down()
            raise RuntimeError(f"wandbfs mount failed ({self.link.name}): {r.stderr.strip() or r.stdout.strip()}")
        self._read_runtime()
        return self

    def _read_runtime(self) -> None:
        """The daemon's pid and log file, from the runtime file it writes once mounted."""
        try:
            rt = json.loads(runtime_file(self.path, Path(self.env["WANDBFS_STATE_DIR"])).read_text())
        except (OSError, ValueError):
            return
        self.pid = int(rt["pid"])
        self.log_file = Path(rt["log_file"])

    def __exit__(self, *exc: Any) -> None:
        self.unmount()

    def root(self) -> Path:
        return self.path / "acme" / "bench"

    def unmount(self) -> None:
        if not self.pid and getattr(self, "started", False) and not is_mounted(self.path):
            # Interrupted while `wandbfs mount` waited: its daemon may still finish mounting.
            deadline = time.monotonic() + 5
            while not is_mounted(self.path) and time.monotonic() < deadline:
                time.sleep(0.05)
            if is_mounted(self.path):
                self._read_runtime()
        if not is_mounted(self.path):
            self._reap()
            return
        r = subprocess.run([sys.executable, "-m", "wandbfs.cli", "unmount", str(self.path)], env=self.env,
                           capture_output=True, text=True, timeout=90)
        if r.returncode != 0 or is_mounted(self.path):
            self._force_down()
        self._reap()

    def _force_down(self) -> None:
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _reap(self) -> None:
        if self.pid:
            deadline = time.monotonic() + 30
            while _alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive(self.pid):
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def mem(self) -> dict[str, int]:
        return proc_mem(self.pid)

    def log_tail(self, n: int = 20) -> str:
        if self.log_file is None:
            return "(no daemon log)"
        try:
            return "\n".join(self.log_file.read_text().splitlines()[-n:])
        except OSError:
            return ""


_alive = process_alive


@dataclass
class RcloneMount:
    """``rclone mount :http:`` over nginx's mirror tree, in the foreground as our child."""

    work: Path
    link: Link
    cache_dir: Path
    extra: list[str] = field(default_factory=list)
    path: Path = field(init=False)
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        i = _mounts.next()
        self.path = self.work / "mnt" / f"rclone-{i}"
        self.log = self.work / "rclone" / f"rclone-{i}.log"

    def __enter__(self) -> "RcloneMount":
        self.path.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, HOME=str(self.work / "rclone"), RCLONE_CONFIG=str(self.work / "rclone" / "none.conf"))
        cmd = self.link.wrap(["rclone", "mount", ":http:", str(self.path), "--http-url", self.link.nginx_url + "/tree/",
                              "--vfs-cache-mode", "full", "--read-only", "--cache-dir", str(self.cache_dir),
                              "--log-file", str(self.log), "--log-level", "NOTICE", *self.extra])
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        try:
            wait_until(lambda: is_mounted(self.path) or self.proc.poll() is not None, 60, "rclone to mount")
            if not is_mounted(self.path):
                raise RuntimeError(f"rclone mount failed: {self.log.read_text()[-800:] if self.log.exists() else ''}")
        except BaseException:
            self.unmount()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unmount()

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def mem(self) -> dict[str, int]:
        return proc_mem(self.pid) if self.pid else {}

    def unmount(self) -> None:
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
            self.proc = None
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)


# ---- machine ------------------------------------------------------------------------------

def _first_line(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "n/a"


def machine() -> dict[str, Any]:
    cpu = "n/a"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = 0
    try:
        mem = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) * 1024
    except (OSError, StopIteration):
        pass
    import platform

    def ver(mod: str) -> str:
        try:
            from importlib.metadata import version
            return version(mod)
        except Exception:  # noqa: BLE001
            return "n/a"

    root = Path(__file__).resolve().parents[2]
    commit = _first_line(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "wandbfs"],
                           capture_output=True, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu, "mem_bytes": mem,
            "python": platform.python_version(), "wandb": ver("wandb"), "pyfuse3": ver("pyfuse3"),
            "trio": ver("trio"), "libfuse": _first_line(["fusermount3", "-V"]),
            "rclone": _first_line(["rclone", "version"]), "nginx": _first_line(["nginx", "-v"]),
            "curl": _first_line(["curl", "-V"]),
            "wandbfs_commit": commit + ("+dirty" if dirty else "")}
