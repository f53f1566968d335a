"""The daemon's life: sign in, wire the parts by their constructors, serve, shut down in bounded steps.

:func:`serve` runs in the daemon process (forked, or the foreground one; see
:mod:`wandbfs.daemon.process`). It signs in with the SDK (bounded: a hanging W&B mounts on
what is cached), starts the lineage run, builds the parts (gate, catalog, fetcher, lineage,
the FUSE handlers) each from its constructor, the ones that start background work inside
the trio nursery they run in, mounts with pyfuse3, opens its control socket (``wandbfs
info``/``status``, :mod:`wandbfs.daemon.control_socket`) and serves until it is unmounted or gets
SIGTERM/SIGINT; then it unmounts, stops downloads, journals and sends pending lineage
(bounded) and finishes the run. SIGHUP drops listing and alias caches (``wandbfs refresh``
names the subtrees in a state file first).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from wandbfs.daemon.config import MountConfig, MountError, load_lock
from wandbfs.daemon.procutil import kill_children
from wandbfs.daemon.state import control_socket, journal_file, refresh_file, state_dir, taking_file
from wandbfs.model.names import listing_scope

log = logging.getLogger(__name__)

FINISH_TIMEOUT = 4.0      # run.finish() at exit; with the drain and the rest, the daemon exits in < 10 s
DRAIN_TIMEOUT = 3.0       # pending lineage sent at exit while W&B answers; the rest stays journaled
OnReady = Callable[[str | None], None]


@dataclass
class _Start:
    """What signing in found: whether W&B answered, and where lineage is recorded."""

    offline: bool = False
    recorder: Any = None          # lineage.queue.RunRecorder, None without lineage
    mount_run: Any = None         # lineage.queue.MountRun the daemon started, to finish at exit


def serve(config: MountConfig, on_ready: OnReady) -> int:
    """Run the filesystem until unmounted. ``on_ready(None)`` once it answers, or the error."""
    from wandbfs.cache.store import ObjectCache, default_cache_root
    from wandbfs.catalog.metastore import MetaStore
    from wandbfs.sdk.client import WandbClient, WandbError

    _prepare_process(config)
    from wandbfs.sdk.gate import call_with_deadline

    client = WandbClient()
    cache_root = config.cache_dir or default_cache_root()
    meta = MetaStore(Path(cache_root) / "wandbfs-meta")
    paths = _DaemonPaths.of(config.mountpoint)  # computed before the mount: never a syscall on it later
    try:
        locks = load_lock(config)
        start = _sign_in(config, client, meta, call_with_deadline)
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
    import trio

    # What is alive now (the SDK's modules and objects: most of the heap) lives as long as the
    # daemon: kept out of the collector's full passes, which a version listed for the first
    # time (a node per file, 200,000 in a huge one) would otherwise trigger over all of it.
    gc.freeze()
    try:
        exit_code: int = trio.run(_main, config, client, meta, cache, locks, start, paths, on_ready)
    finally:
        _finish_run(start.mount_run, call_with_deadline)
        for pid in kill_children("wandb-core"):  # wandb-core outlives a run that could not finish
            log.info("stopped wandb-core (pid %d)", pid)
    log.info("daemon exiting")
    return exit_code


def _prepare_process(config: MountConfig) -> None:
    """The daemon's environment before the SDK sees it."""
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


def _sign_in(config: MountConfig, client: Any, meta: Any, call_with_deadline: Callable[..., Any]) -> _Start:
    """Login and one real round trip, the org check and the lineage run, each under a deadline."""
    from wandbfs.sdk.client import BackendError
    from wandbfs.sdk.runs import MountRun, RunRecorder

    start = _Start()
    try:
        # A hanging W&B must not keep the mount from starting on what is cached.
        call_with_deadline(client.probe, config.lookup_timeout + 10, "login")
    except BackendError as e:
        # W&B is down: start anyway when there is something cached to serve.
        if config.orgs is None and meta.load_listing(("orgs",)) is None:
            raise
        log.warning("W&B unreachable at start (%s); serving cached versions until it is back", e)
        start.offline = True
    if config.orgs and not start.offline:
        known = call_with_deadline(client.viewer_orgs, config.wandb_timeout, "organizations")
        for org in config.orgs:
            if org not in known:
                raise MountError(f"unknown organization {org!r} (you belong to: {', '.join(known) or 'none'})")
    if not config.lineage:
        return start
    # The lineage run: bounded too; when it does not come up in time, the recorder starts
    # it before the first use it records (MountRun.start is once-only and serialized).
    if config.run_id:
        entity = config.entity
        if entity is None and not start.offline:
            entity = _bounded_or_none(call_with_deadline, client.default_entity, config.wandb_timeout, "default entity")
        start.recorder = RunRecorder(client.api, f"{entity}/{config.project}/{config.run_id}" if entity else None,
                                     start_run=lambda: f"{client.default_entity()}/{config.project}/{config.run_id}")
    else:
        start.mount_run = MountRun(config.entity, config.project, config.job_type)
        path = None
        if not start.offline:
            path = _bounded_or_none(call_with_deadline, start.mount_run.start, config.wandb_timeout + 30,
                                    "starting the mount's run")
        start.recorder = RunRecorder(client.api, path, start_run=start.mount_run.start)
    return start


def _bounded_or_none(call_with_deadline: Callable[..., Any], fn: Callable[[], Any], timeout: float,
                     what: str) -> Any:
    from wandbfs.sdk.client import BackendError

    try:
        return call_with_deadline(fn, timeout, what)
    except BackendError as e:
        log.warning("%s: %s; lineage is recorded once W&B answers", what, e)
        return None


def _finish_run(mount_run: Any, call_with_deadline: Callable[..., Any]) -> None:
    """run.finish() of the daemon's own run, bounded; a failure leaves its recorded inputs."""
    from wandbfs.sdk.client import BackendError

    if mount_run is None or mount_run.run is None:
        return
    try:
        call_with_deadline(mount_run.finish, FINISH_TIMEOUT, "finishing the mount's run")
    except BackendError as e:
        log.error("%s; W&B will mark the run crashed, its recorded inputs stay", e)
    except Exception:  # noqa: BLE001
        log.exception("finishing the mount's W&B run failed")


# ---- the trio main -----------------------------------------------------------------------

async def _main(config: MountConfig, client: Any, meta: Any, cache: Any, locks: dict[Any, dict[str, int]],
                start: _Start, paths: "_DaemonPaths", on_ready: OnReady) -> int:
    """Build the parts, mount, serve; the exit code. Parts that start background work get
    the nursery they run in; everything is closed after it, in reverse order."""
    import trio

    from wandbfs.cache.eviction import CacheLimits, Evictor
    from wandbfs.cache.pins import PinStore
    from wandbfs.catalog.catalog import Catalog
    from wandbfs.fill.fetcher import Fetcher, FetchPolicy
    from wandbfs.fuse.ops import FsOptions, WandbFS
    from wandbfs.lineage.access_log import AccessLog
    from wandbfs.lineage.journal import LineageJournal
    from wandbfs.lineage.queue import Lineage
    from wandbfs.sdk.gate import Gate

    metrics = _metrics(config)
    gate = Gate(call_timeout=config.wandb_timeout, probe=client.probe, probe_timeout=max(config.lookup_timeout, 5.0),
                observe=metrics.observe_call if metrics is not None else None,
                offline="W&B did not answer at start" if start.offline else None)
    if locks:
        log.info("aliases locked by %s: %s", config.lock_file, ", ".join(
            f"{c}:{a}=v{i}" for (_, _, c), m in sorted(locks.items()) for a, i in sorted(m.items())))
    evictor = Evictor(cache, CacheLimits(config.cache_max_size, config.cache_min_free),
                      pinned=PinStore(cache.root).objects)
    lineage = Lineage(start.recorder, journal=LineageJournal(journal_file(config.mountpoint)),
                      missing_run_grace=config.missing_run_grace, gate=gate) if start.recorder else None
    if lineage:
        lineage.resume()
    access_log = AccessLog(config.access_log) if config.access_log else None
    options = FsOptions(alias_ttl=config.alias_ttl, list_ttl=config.list_ttl, negative_ttl=config.negative_ttl,
                        verify=config.verify, warm=config.warm, reader_runs=config.reader_runs,
                        xattrs=config.xattrs, uid=os.getuid(), gid=os.getgid(),
                        link_root=os.path.abspath(config.mountpoint) if config.links == "absolute" else None,
                        cache_dir=str(cache.root))
    policy = FetchPolicy(read_timeout=config.read_timeout, attempts=config.download_attempts,
                         part_size=config.part_size, concurrency=config.concurrency,
                         adaptive=config.adaptive)
    with ExitStack() as closing:
        if metrics is not None:
            closing.callback(metrics.close)
        if access_log is not None:
            closing.callback(access_log.close)
        async with trio.open_nursery() as nursery:
            catalog = Catalog(client, config.orgs, alias_ttl=config.alias_ttl, list_ttl=config.list_ttl,
                              meta=meta, gate=gate, lookup_timeout=config.lookup_timeout, locks=locks,
                              nursery=nursery)
            fetcher = Fetcher(cache, catalog.file_url, policy=policy, evictor=evictor, nursery=nursery,
                              metrics=metrics, tier=_shared_tier(config))
            closing.callback(fetcher.close)
            fs = WandbFS(catalog, fetcher, lineage, options, access_log=access_log, metrics=metrics,
                         nursery=nursery)
            code = await _mount_and_serve(config, fs, fetcher, lineage, gate, metrics, paths, on_ready,
                                          nursery, closing)
            nursery.cancel_scope.cancel()
    return code


def _shared_tier(config: MountConfig) -> Any:
    """The shared cache tier (``--shared-cache``), or None. Not reached here: a tier that
    does not answer is found by the first fill, which reads from W&B instead."""
    if not config.shared_cache:
        return None
    from wandbfs.shared.tier import SharedTier

    tier = SharedTier.open(config.shared_cache, timeout=min(config.read_timeout, 10.0),
                           lease_ttl=config.shared_lease_ttl, wait_limit=config.read_timeout)
    log.info("shared cache tier: %s (lease %gs)", tier.url, config.shared_lease_ttl)
    return tier


def _metrics(config: MountConfig) -> Any:
    """The mount's Prometheus metrics (``--metrics-addr``), or None."""
    if not config.metrics_addr:
        return None
    from wandbfs.daemon.metrics import Metrics

    return Metrics()


class _Session:
    """One pyfuse3 session, closed once. ``pyfuse3.main()`` returns both when the mount is
    gone (fusermount -u) and after ``terminate()`` (our signal handler); only in the second
    case is the mount still up, and only then does closing unmount."""

    def __init__(self) -> None:
        self.terminated: list[int] = []    # the signals that asked us to unmount
        self.kernel_unmounted = False      # main() returned without terminate()
        self._closed = False

    def close(self) -> None:
        import pyfuse3

        if not self._closed:
            self._closed = True
            pyfuse3.close(unmount=not self.kernel_unmounted)


async def _mount_and_serve(config: MountConfig, fs: Any, fetcher: Any, lineage: Any, gate: Any, metrics: Any,
                           paths: "_DaemonPaths", on_ready: OnReady, nursery: Any, closing: ExitStack) -> int:
    """Serve metrics, mount, run the request loop until unmounted, then stop in order."""
    import pyfuse3

    if metrics is not None:
        metrics.watch(fs.status)
        try:
            metrics.serve(config.metrics_addr or "")
        except (OSError, ValueError) as e:
            on_ready(f"--metrics-addr {config.metrics_addr}: {e}")
            return 1
    try:
        pyfuse3.init(fs, str(config.mountpoint), _fuse_options(config))
    except RuntimeError as e:
        on_ready(f"cannot mount {config.mountpoint}: {e}")
        return 1
    session = _Session()
    closing.callback(session.close)
    from wandbfs.daemon.control_socket import ControlServer

    control = ControlServer(paths.control, fs.xattrs, shared=config.allow_other)   # info/status, before ready
    closing.callback(control.close)
    await nursery.start(control.serve)
    nursery.start_soon(gate.run)
    if lineage:
        nursery.start_soon(lineage.run)
    nursery.start_soon(_signals, fs, fetcher, session.terminated, paths)
    nursery.start_soon(_announce, config.mountpoint, on_ready, config.read_ahead_kb)
    await pyfuse3.main()
    session.kernel_unmounted = not session.terminated
    if session.terminated:
        session.close()  # unmount first, so no reader sees a dead mount while lineage drains
    log.info("unmounted; stopping downloads, flushing lineage")
    _cancel_downloads(fetcher)
    if lineage:
        await _drain_lineage(lineage, gate)
    return 0


def _fuse_options(config: MountConfig) -> set[str]:
    import pyfuse3

    options = set(pyfuse3.default_options) | {"fsname=wandbfs", "subtype=wandbfs", "ro"}
    if config.allow_other:
        options.add("allow_other")
    if config.debug:
        options.add("debug")
    return options


def _cancel_downloads(fetcher: Any) -> None:
    """Stop every download in flight at once and remove its temp file (SIGTERM, unmount)."""
    n = fetcher.cancel_all()
    if n:
        log.info("cancelled %d downloads in flight", n)


async def _drain_lineage(lineage: Any, gate: Any) -> None:
    """Every use on disk first (local, quick), then what W&B takes within DRAIN_TIMEOUT."""
    await lineage.flush(DRAIN_TIMEOUT)
    if gate.offline_for is not None:
        pending = lineage.stats.pending
        if pending:
            log.warning("W&B is not answering: %d lineage uses stay in the journal for the next mount", pending)
        return
    if not await lineage.drain(DRAIN_TIMEOUT):
        log.error("%d lineage uses could not be sent before exit; they stay in the journal for the next mount",
                  lineage.stats.pending)


async def _announce(mountpoint: Path, on_ready: OnReady, read_ahead_kb: int) -> None:
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


# ---- signals -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _DaemonPaths:
    """The state files a running daemon uses, named once before it mounts: resolving the
    mount point later would stat our own mount from the request loop, which then waits on
    itself (SIGHUP deadlocked the daemon that way)."""

    refresh: Path
    taking: Path
    control: Path

    @classmethod
    def of(cls, mountpoint: Path) -> "_DaemonPaths":
        return cls(refresh_file(mountpoint), taking_file(mountpoint), control_socket(mountpoint))


def _take_refresh(paths: _DaemonPaths) -> list[tuple[str, ...]]:
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
        parts = listing_scope(line.strip("/").split("/"))
        if not parts:
            return []
        out.append(parts)
    return out


async def _signals(fs: Any, fetcher: Any, terminated: list[int], paths: _DaemonPaths) -> None:
    import pyfuse3
    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for sig in signals:
            if sig == signal.SIGHUP:
                await _refresh_on_sighup(fs, paths)
                continue
            log.info("signal %d: unmounting", sig)
            terminated.append(sig)
            # pyfuse3.main() returns only once every request in progress is answered: stop
            # the downloads first, so a read waiting on one fails now instead of at its end.
            _cancel_downloads(fetcher)
            pyfuse3.terminate()


async def _refresh_on_sighup(fs: Any, paths: _DaemonPaths) -> None:
    """The refresh asked for (all, or the subtrees in the request file), concurrently and
    bounded by the catalog's lookup timeout; no failure here may end the daemon."""
    import trio

    try:
        # The request file lives in the state dir, never on our own mount; its path was
        # named before mounting (see _DaemonPaths).
        prefixes = await trio.to_thread.run_sync(_take_refresh, paths) or [()]

        async def one(prefix: tuple[str, ...]) -> None:
            n = await fs.refresh(prefix)
            log.info("refresh %s: %d listing and alias caches reloaded", "/".join(prefix) or "(all)", n)
        async with trio.open_nursery() as n:
            for prefix in prefixes:
                n.start_soon(one, prefix)
    except Exception:  # noqa: BLE001 - a refresh that fails leaves the last known listings
        log.exception("refresh failed")
    finally:
        paths.taking.unlink(missing_ok=True)


__all__ = ["serve"]
