"""Mount lifecycle: checks, daemonizing, the trio main loop, signals, clean shutdown.

``wandbfs mount`` checks what it can cheaply (mount point, API key), forks, and waits on a
pipe until the daemon reports that the mount answers, or why it could not mount. The daemon
authenticates with the SDK, starts the lineage run, mounts with pyfuse3 and serves until it
is unmounted or gets SIGTERM/SIGINT; then it unmounts, records pending lineage (bounded)
and finishes the run. SIGHUP drops listing and alias caches.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


class MountError(Exception):
    """A user-facing reason the mount cannot start (one clear line)."""


@dataclass
class MountConfig:
    mountpoint: Path
    orgs: list[str] | None = None
    cache_dir: Path | None = None
    alias_ttl: float = 30.0
    list_ttl: float = 60.0
    negative_ttl: float = 30.0
    lineage: bool = True
    lookup_timeout: float = 5.0      # a name never seen waits this long for W&B, then EIO
    wandb_timeout: float = 30.0      # the daemon's deadline on any one W&B call
    entity: str | None = None
    project: str = "wandbfs"
    job_type: str = "wandbfs-mount"
    run_id: str | None = None
    allow_other: bool = False
    read_timeout: float = 30.0
    download_attempts: int = 5
    verify: str = "stream"
    part_size: int = 8 << 20
    concurrency: int = 4
    read_ahead_kb: int = 1024
    warm: bool = True
    cache_max_size: int | None = None
    cache_min_free: int = 0
    reader_runs: bool = True
    missing_run_grace: float = 300.0
    lock_file: Path | None = None
    metrics_addr: str | None = None
    xattrs: bool = True
    log_format: str = "text"
    access_log: Path | None = None
    log_file: Path | None = None
    debug: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def state_dir() -> Path:
    base = os.environ.get("WANDBFS_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "wandbfs")
    p = Path(base)
    p.mkdir(parents=True, exist_ok=True, mode=0o700)
    return p


def _mount_id(mountpoint: Path) -> str:
    """Names the mount point's state files; never touches the mount point (see control.mount_path)."""
    from wandbfs.cli.control import mount_id

    return mount_id(mountpoint)


def runtime_file(mountpoint: Path) -> Path:
    return state_dir() / f"mount-{_mount_id(mountpoint)}.json"


def journal_file(mountpoint: Path) -> Path:
    """The lineage journal of a mount point: a daemon restarted there replays what is pending."""
    return state_dir() / f"lineage-{_mount_id(mountpoint)}.jsonl"


def default_log_file(mountpoint: Path) -> Path:
    return state_dir() / f"mount-{_mount_id(mountpoint)}.log"


def is_mounted(mountpoint: Path) -> bool:
    """From /proc/self/mountinfo alone: no syscall on the mount point, whose daemon may not answer."""
    from wandbfs.cli.control import is_mounted as mounted

    return mounted(mountpoint)


def fusermount_unmount(mountpoint: Path, lazy: bool = False) -> None:
    """fusermount3 -u (-z), else umount (-l); each bounded, so a hung mount cannot hold us."""
    from wandbfs.cli.control import run_command

    r = run_command(["fusermount3", "-u"] + (["-z"] if lazy else []) + [str(mountpoint)])
    if r.returncode != 0:
        r2 = run_command(["umount"] + (["-l"] if lazy else []) + [str(mountpoint)])
        if r2.returncode != 0:
            hint = "" if lazy else f" (close what is open in it, or `wandbfs unmount --force {mountpoint}`)"
            raise MountError(f"cannot unmount {mountpoint}: {r.stderr.strip() or r2.stderr.strip()}{hint}")


def load_lock(config: MountConfig) -> dict[tuple[str, str, str], dict[str, int]]:
    from wandbfs.model.lockfile import parse_lock

    if config.lock_file is None:
        return {}
    try:
        return parse_lock(config.lock_file.read_text())
    except (OSError, ValueError) as e:
        raise MountError(f"--lock {config.lock_file}: {e}") from None


def preflight(config: MountConfig) -> None:
    """The checks that need no W&B call; each failure is one clear line."""
    from wandbfs.cli.control import check_mount_point

    load_lock(config)
    # A daemon still alive there (stopped, serving, or finishing) is refused with its pid;
    # every syscall on the mount point runs with a deadline (a hung mount does not hold us).
    check_mount_point(config.mountpoint)
    if not api_key_available():
        raise MountError("no W&B API key: set WANDB_API_KEY or run `wandb login`")


def _dead_mount(mp: Path) -> bool:
    """A mount whose daemon died (SIGKILL): the kernel may still answer stat from its cache,
    but listing it needs the daemon. Bounded: MountError when it does not answer."""
    from wandbfs.cli.control import dead_mount

    return dead_mount(mp)


def api_key_available() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


# ---- the daemon ------------------------------------------------------------------------

def serve(config: MountConfig, on_ready: Callable[[str | None], None]) -> int:
    """Run the filesystem until unmounted. ``on_ready(None)`` once it answers, or the error."""
    import pyfuse3
    import trio

    from wandbfs.cache.store import ObjectCache, default_cache_root
    from wandbfs.catalog.catalog import Catalog
    from wandbfs.cache.eviction import CacheLimits, Evictor
    from wandbfs.cache.pins import PinStore
    from wandbfs.fill.fetcher import Fetcher, FetchPolicy
    from wandbfs.fuse.ops import FsOptions, WandbFS
    from wandbfs.lineage.access_log import AccessLog
    from wandbfs.lineage.journal import LineageJournal
    from wandbfs.lineage.queue import Lineage, MountRun, RunRecorder
    from wandbfs.catalog.metastore import MetaStore
    from wandbfs.sdk.client import BackendError, WandbClient, WandbError

    # A WANDB_SERVICE inherited from a calling process that uses wandb points at that
    # process's wandb-core, which goes away with it: the daemon starts its own.
    os.environ.pop("WANDB_SERVICE", None)
    # The daemon holds no directory busy (the caller's working directory could never be
    # unmounted), and the SDK's run files (./wandb/) go under the state dir, not there.
    _detach_from_cwd(config)
    # Bounded W&B calls: by default wandb-core retries a GraphQL call for minutes, which a
    # filesystem lookup cannot wait for. The user's own settings win.
    for var, value in (("WANDB__GRAPHQL_RETRY_MAX", "3"), ("WANDB__GRAPHQL_RETRY_WAIT_MIN_SECONDS", "1"),
                       ("WANDB__GRAPHQL_RETRY_WAIT_MAX_SECONDS", "2"), ("WANDB_HTTP_TIMEOUT", "20")):
        os.environ.setdefault(var, value)
    from wandbfs.sdk.gate import Gate, call_with_deadline

    client = WandbClient()
    mount_run: MountRun | None = None
    cache_root = config.cache_dir or default_cache_root()
    meta = MetaStore(Path(cache_root) / "wandbfs-meta")
    offline = False
    paths = _DaemonPaths.of(config.mountpoint)  # computed before the mount: never a syscall on it later
    try:
        locks = load_lock(config)
        try:
            # Login and one real round trip, under the daemon's deadline: a hanging W&B must
            # not keep the mount from starting on what is cached.
            call_with_deadline(client.probe, config.lookup_timeout + 10, "login")
        except BackendError as e:
            # W&B is down: start anyway when there is something cached to serve.
            if config.orgs is None and meta.load_listing(("orgs",)) is None:
                raise
            log.warning("W&B unreachable at start (%s); serving cached versions until it is back", e)
            offline = True
        if config.orgs and not offline:
            known = call_with_deadline(client.viewer_orgs, config.wandb_timeout, "organizations")
            for org in config.orgs:
                if org not in known:
                    raise MountError(f"unknown organization {org!r} (you belong to: {', '.join(known) or 'none'})")
        recorder = None
        if config.lineage:
            if config.run_id:
                entity = config.entity or (None if offline else client.api().default_entity)
                recorder = RunRecorder(client.api, f"{entity}/{config.project}/{config.run_id}" if entity else None,
                                       start_run=lambda: f"{client.api().default_entity}/{config.project}/{config.run_id}")
            else:
                mount_run = MountRun(config.entity, config.project, config.job_type)
                path = None
                if not offline:
                    path = mount_run.start()
                recorder = RunRecorder(client.api, path, start_run=mount_run.start)
    except MountError as e:
        on_ready(str(e))
        return 1
    except WandbError as e:
        reason = str(e).replace("W&B unreachable: ", "")
        on_ready(f"cannot reach W&B at {os.environ.get('WANDB_BASE_URL', 'https://api.wandb.ai')}: {reason}")
        return 1
    except Exception as e:  # noqa: BLE001 - anything else is reported to the waiting parent
        on_ready(f"{type(e).__name__}: {e}")
        return 1

    # No fsync per object: every object is hashed before it is served, and one found after a
    # crash without our verified mark is hashed again, so a torn write is never trusted.
    cache = ObjectCache(cache_root, fsync=False)
    if (n := cache.cleanup_orphan_temps()):
        log.warning("removed %d temp files left by a daemon that died mid-download", n)
    exit_code = 0

    async def main() -> None:
        gate = Gate(call_timeout=config.wandb_timeout, probe=client.probe,
                    probe_timeout=max(config.lookup_timeout, 5.0))
        if offline:
            gate._trip("W&B did not answer at start")
        catalog = Catalog(client, config.orgs, alias_ttl=config.alias_ttl, list_ttl=config.list_ttl, meta=meta,
                          gate=gate, lookup_timeout=config.lookup_timeout)
        catalog.locks = locks
        if locks:
            log.info("aliases locked by %s: %s", config.lock_file, ", ".join(
                f"{c}:{a}=v{i}" for (_, _, c), m in sorted(locks.items()) for a, i in sorted(m.items())))
        evictor = Evictor(cache, CacheLimits(config.cache_max_size, config.cache_min_free),
                          pinned=PinStore(cache.root).objects)
        fetcher = Fetcher(cache, catalog.file_url,
                          policy=FetchPolicy(read_timeout=config.read_timeout, attempts=config.download_attempts,
                                             part_size=config.part_size, concurrency=config.concurrency),
                          evictor=evictor)
        lineage = Lineage(recorder, journal=LineageJournal(journal_file(config.mountpoint)),
                          missing_run_grace=config.missing_run_grace, gate=gate) if recorder else None
        if lineage:
            lineage.resume()
        access_log = AccessLog(config.access_log) if config.access_log else None
        metrics = None
        if config.metrics_addr:
            from wandbfs.daemon.metrics import Metrics
            metrics = Metrics()
            gate.observe = metrics.observe_call
            fetcher.metrics = metrics
        fs = WandbFS(catalog, fetcher, lineage, FsOptions(alias_ttl=config.alias_ttl, list_ttl=config.list_ttl,
                                                          negative_ttl=config.negative_ttl, verify=config.verify, warm=config.warm,
                                                          reader_runs=config.reader_runs, xattrs=config.xattrs,
                                                          uid=os.getuid(), gid=os.getgid()), access_log=access_log)
        if metrics is not None:
            fs.metrics = metrics
            metrics.watch(fs.status)
            try:
                metrics.serve(config.metrics_addr or "")
            except (OSError, ValueError) as e:
                on_ready(f"--metrics-addr {config.metrics_addr}: {e}")
                raise SystemExit(1) from None
        options = set(pyfuse3.default_options) | {"fsname=wandbfs", "subtype=wandbfs", "ro"}
        if config.allow_other:
            options.add("allow_other")
        if config.debug:
            options.add("debug")
        try:
            pyfuse3.init(fs, str(config.mountpoint), options)
        except RuntimeError as e:
            on_ready(f"cannot mount {config.mountpoint}: {e}")
            raise SystemExit(1) from None
        closed = [False]
        gone = [False]  # main() returned without terminate(): the kernel already unmounted
        # pyfuse3.main() returns both when the mount is gone (fusermount -u) and after
        # terminate() (our signal handler); only in the second case is the mount still up.
        terminated: list[int] = []
        try:
            async with trio.open_nursery() as nursery:
                fetcher.nursery = fs.nursery = catalog.nursery = nursery
                nursery.start_soon(gate.run)
                if lineage:
                    nursery.start_soon(lineage.run)
                nursery.start_soon(_signals, fs, terminated, paths)
                nursery.start_soon(_announce, config.mountpoint, on_ready, config.read_ahead_kb)
                await pyfuse3.main()
                gone[0] = not terminated
                if terminated:
                    # Unmount first, so no reader sees a dead mount while lineage drains.
                    pyfuse3.close(unmount=True)
                    closed[0] = True
                log.info("unmounted; stopping downloads, flushing lineage")
                _cancel_downloads(fetcher)
                if lineage:
                    await _drain_lineage(lineage, gate)
                nursery.cancel_scope.cancel()
        finally:
            if not closed[0]:
                pyfuse3.close(unmount=not gone[0])
            fetcher.close()
            if access_log:
                access_log.close()
            if metrics is not None:
                metrics.close()

    try:
        trio.run(main)
    except SystemExit as e:
        exit_code = int(e.code or 0)
    finally:
        if mount_run is not None and mount_run.run is not None:
            try:
                call_with_deadline(mount_run.finish, FINISH_TIMEOUT, "finishing the mount's run")
            except BackendError as e:
                log.error("%s; W&B will mark the run crashed, its recorded inputs stay", e)
            except Exception:  # noqa: BLE001
                log.exception("finishing the mount's W&B run failed")
        _stop_wandb_core()
    log.info("daemon exiting")
    return exit_code


FINISH_TIMEOUT = 4.0      # run.finish() at exit; with the drain and the rest, the daemon exits in < 10 s
DRAIN_TIMEOUT = 3.0       # pending lineage sent at exit while W&B answers; the rest stays journaled


@dataclass(frozen=True)
class _DaemonPaths:
    """The state files a running daemon uses, named once before it mounts: resolving the
    mount point later would stat our own mount from the request loop, which then waits on
    itself (SIGHUP deadlocked the daemon that way)."""

    mountpoint: Path
    refresh: Path
    taking: Path

    @classmethod
    def of(cls, mountpoint: Path) -> "_DaemonPaths":
        return cls(mountpoint, refresh_file(mountpoint), taking_file(mountpoint))


def _detach_from_cwd(config: MountConfig) -> None:
    """Make the config's paths absolute, point the SDK's run dir at the state dir, chdir /."""
    for name in ("mountpoint", "cache_dir", "lock_file", "access_log", "log_file"):
        value = getattr(config, name)
        if value is not None:
            setattr(config, name, Path(os.path.abspath(value)))
    sdk_dir = state_dir() / "sdk"
    sdk_dir.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("WANDB_DIR", str(sdk_dir))
    os.chdir("/")


def _cancel_downloads(fetcher: object) -> None:
    """Stop every download in flight at once and remove its temp file (SIGTERM, unmount)."""
    cancel = getattr(fetcher, "cancel_all", None)
    if cancel is not None:
        n = cancel()
        if n:
            log.info("cancelled %d downloads in flight", n)


async def _drain_lineage(lineage: object, gate: object) -> None:
    """Every use on disk first (local, quick), then what W&B takes within DRAIN_TIMEOUT."""
    await lineage.flush(DRAIN_TIMEOUT)  # type: ignore[attr-defined]
    if getattr(gate, "offline_for", None) is not None:
        pending = lineage.stats.pending  # type: ignore[attr-defined]
        if pending:
            log.warning("W&B is not answering: %d lineage uses stay in the journal for the next mount", pending)
        return
    if not await lineage.drain(DRAIN_TIMEOUT):  # type: ignore[attr-defined]
        log.error("%d lineage uses could not be sent before exit; they stay in the journal for the next mount",
                  lineage.stats.pending)  # type: ignore[attr-defined]


def _stop_wandb_core() -> None:
    """wandb-core outlives a run that could not finish: end the daemon's own, by pid."""
    me = str(os.getpid())
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            comm = Path(f"/proc/{entry.name}/comm").read_text().strip()
        except OSError:
            continue
        if fields[1] == me and comm.startswith("wandb-core"):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                log.info("stopped wandb-core (pid %s)", entry.name)
            except ProcessLookupError:
                pass


async def _announce(mountpoint: Path, on_ready: Callable[[str | None], None], read_ahead_kb: int) -> None:
    import trio

    st = await trio.to_thread.run_sync(os.stat, mountpoint)  # answered by our own loop
    if read_ahead_kb:
        tune_read_ahead(st.st_dev, read_ahead_kb)
    log.info("mounted at %s", mountpoint)
    on_ready(None)


def tune_read_ahead(dev: int, kb: int) -> None:
    """Bigger kernel read requests (128 KiB by default; 1 MiB measured ~1.5x faster).

    pyfuse3 exposes no knob for it and ``max_read=`` breaks libfuse, so, as gcsfuse does,
    write the mount's bdi setting; only root may, others keep the default.
    """
    path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(kb))
        log.info("read_ahead_kb = %d (%s)", kb, path)
    except OSError as e:
        log.info("read_ahead_kb left at the default: %s", e)


def refresh_file(mountpoint: Path) -> Path:
    """Where ``wandbfs refresh MOUNT PATH`` leaves the paths to refresh before its SIGHUP."""
    return state_dir() / f"refresh-{_mount_id(mountpoint)}.txt"


def taking_file(mountpoint: Path) -> Path:
    """A refresh request being carried out; ``wandbfs refresh`` waits until it is gone."""
    return refresh_file(mountpoint).with_suffix(".taking")


def _take_refresh(paths: "_DaemonPaths") -> list[tuple[str, ...]]:
    """The subtrees asked for (org[, registry[, collection]]); [] = everything.

    The request is renamed to the "taking" file (so a request arriving meanwhile starts a
    new one); the caller removes that once the refresh is done."""
    try:
        os.replace(paths.refresh, paths.taking)
        lines = paths.taking.read_text().splitlines()
    except FileNotFoundError:
        return []
    out: list[tuple[str, ...]] = []
    for line in lines:
        parts = tuple(p for p in line.strip("/").split("/") if p)[:3]
        if not parts:
            return []
        out.append(parts)
    return out


async def _signals(fs: object, terminated: list[int], paths: "_DaemonPaths") -> None:
    import pyfuse3
    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for sig in signals:
            if sig == signal.SIGHUP:
                # The request file lives in the state dir, never on our own mount; its
                # path was named before mounting (see _DaemonPaths).
                prefixes = await trio.to_thread.run_sync(_take_refresh, paths)
                if not prefixes:
                    n = await fs.refresh()  # type: ignore[attr-defined]
                    log.info("SIGHUP: dropped %d listing and alias caches", n)
                for prefix in prefixes:
                    n = await fs.refresh(prefix)  # type: ignore[attr-defined]
                    log.info("refresh %s: dropped %d listing and alias caches", "/".join(prefix), n)
                paths.taking.unlink(missing_ok=True)
                continue
            log.info("signal %d: unmounting", sig)
            terminated.append(sig)
            pyfuse3.terminate()


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
        _clear_runtime(config)
    if failure:
        raise MountError(failure[0])
    # The SDK's atexit teardown waits on wandb-core, which may wait on a hanging W&B: the
    # daemon has finished (or given up on) its run within its own deadline already.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _write_runtime(config: MountConfig) -> None:
    # Not .resolve(): this runs once the mount answers, and resolving stats our own mount.
    info = {"pid": os.getpid(), "mountpoint": os.path.abspath(config.mountpoint),
            "log_file": str(config.log_file or default_log_file(config.mountpoint)), "started": time.time()}
    path = runtime_file(config.mountpoint)
    path.write_text(json.dumps(info))
    os.chmod(path, 0o600)


def _clear_runtime(config: MountConfig) -> None:
    """At exit (also after a plain `umount`), remove our runtime file unless a newer daemon owns it."""
    path = runtime_file(config.mountpoint)
    try:
        if int(json.loads(path.read_text())["pid"]) == os.getpid():
            path.unlink()
    except (OSError, ValueError, KeyError):
        pass


def mount_daemon(config: MountConfig, timeout: float = 180.0) -> int:
    """Fork; the parent returns 0 once the mount answers, or raises MountError with the reason."""
    preflight(config)
    config.log_file = config.log_file or default_log_file(config.mountpoint)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(r)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
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
            os.write(w, (err or "OK").encode())
            os.close(w)

        code = 1
        try:
            code = serve(config, ready)
        except BaseException as e:  # noqa: BLE001
            logging.getLogger(__name__).exception("daemon failed")
            ready(f"{type(e).__name__}: {e}")
        finally:
            if not sent[0]:
                ready("the daemon exited before the mount was ready")
            _clear_runtime(config)
            logging.shutdown()
            os._exit(code)
    os.close(w)
    deadline = time.monotonic() + timeout
    chunks = []
    import select

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
    msg = b"".join(chunks).decode()
    if msg != "OK":
        from wandbfs.cli.control import wait_gone

        # Bounded: a daemon that reported its failure but hangs on its way out must not hold us.
        if not wait_gone(pid, 10.0):
            msg = f"{msg or 'the mount failed'} (its daemon, pid {pid}, has not exited: kill {pid})"
        else:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        raise MountError(msg or "the daemon exited without a word")
    return 0


def unmount(mountpoint: Path, timeout: float = 15.0, force: bool = False) -> list[str]:
    """Unmount, then wait (bounded) for the daemon to finish; ``force`` detaches a daemon that
    does not answer (see control.force_unmount). Returns what --force did."""
    from wandbfs.cli.control import force_unmount, unmount as plain_unmount

    if force:
        return force_unmount(mountpoint)
    plain_unmount(mountpoint, timeout)
    return []


def _alive(pid: int) -> bool:
    from wandbfs.daemon.procutil import process_alive

    return process_alive(pid)


__all__ = ["MountConfig", "MountError", "mount_daemon", "mount_foreground", "unmount", "asdict"]
