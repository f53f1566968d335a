"""``wandbfs info|status|refresh|lock``: asking a running mount what it knows and does.

``info`` and ``status`` ask the daemon over its control socket (daemon/control_socket.py;
``info`` sends the path below the mount root, and the daemon walks its own tree). A mount
whose socket is not ours to reach (another user's, another state directory, an older
daemon) is read through its extended attributes instead, when it serves them (``--xattrs``:
``user.wandb.*`` on every entry under a version, ``user.wandbfs.status`` on its root).
``refresh`` leaves the paths in the state directory and sends the daemon SIGHUP; ``lock``
reads alias symlinks (or asks W&B for names).

None of them waits on a daemon that does not answer: a stopped daemon is named at once
(from /proc, without touching its mount), and every call on a mount runs with a deadline
(control.bounded); both messages name the way out (``kill -CONT``, ``unmount --force``).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from wandbfs.cli.control import (CALL_TIMEOUT, NoAnswer, NoSocket, ask_daemon, bounded, daemon_problem, find_daemon,
                                 mount_path, no_answer_message, state_dir, stopped_message)
from wandbfs.cache.eviction import format_size
from wandbfs.model.entry_info import INFO_FIELDS, STATUS_XATTR, XATTR_PREFIX
from wandbfs.model.lockfile import LockEntry, render_lock
from wandbfs.cli.resolve_cmd import ResolveError, path_resolution, read_mounts, resolve_name
from wandbfs.cli.targets import (find_in_mounts, is_collection_path, locate, looks_like_path, on_mount,
                                 resolve_target)

MIN_ANSWER_TIME = 1.0    # seconds each later mount gets once an earlier one used up the deadline


class UnstatedPath(click.ParamType):
    """A path argument that click does not ``stat`` (``click.Path`` always does, and a stat of a
    mount whose daemon does not answer blocks in the kernel)."""

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        return Path(value)


PATH_ARG = UnstatedPath()


def _fail(msg: str) -> None:
    click.echo(f"wandbfs: {msg}", err=True)
    sys.exit(1)


class NotReachable(Exception):
    """Neither way to ask works: no control socket of ours, and the mount serves no xattrs."""


def _not_reachable(mountpoint: str, e: OSError) -> NotReachable:
    return NotReachable(f"{mountpoint}: its daemon has no control socket in {state_dir()} (another user's "
                        f"mount, or another WANDBFS_STATE_DIR) and the mount serves no extended attributes "
                        f"({e.strerror}; its owner can mount it with --xattrs)")


def locate_in_mount(path: str | Path) -> tuple[str, tuple[str, ...]]:
    """The wandbfs mount holding ``path`` and the names below its root. Lexically when it can
    (no syscall on the mount); through symlinks only when it must, bounded."""
    abs_path = os.path.abspath(path)
    mounts = list(dict.fromkeys(read_mounts()))
    hit = find_in_mounts(abs_path, mounts)   # also a mount point reached through a symlink
    if hit is None and mounts:
        try:   # a symlink elsewhere that points into a mount
            hit = locate(bounded(os.path.realpath, abs_path), mounts)
        except NoAnswer as e:
            raise ResolveError(f"{path}: a mount on the way did not answer within {e.timeout:.0f}s") from None
    if hit is None:
        raise ResolveError(f"{path} is not inside a wandbfs mount")
    return hit


def read_info(mountpoint: str, parts: tuple[str, ...], path: str | Path) -> dict[str, str]:
    """The info fields of the entry ``parts`` names below ``mountpoint`` (alias links followed):
    from the daemon's control socket, else from the mount's ``user.wandb.*`` attributes."""
    problem = daemon_problem(mountpoint)
    if problem:
        raise ResolveError(problem)
    try:
        info: dict[str, str] = ask_daemon(mountpoint, {"op": "info", "path": list(parts)})["info"]
        return info
    except NoAnswer as e:
        raise ResolveError(no_answer_message(mountpoint, e.timeout)) from None
    except NoSocket:
        pass
    try:
        return on_mount(mountpoint, _info_from_xattrs, path)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.ENODATA):
            raise _not_reachable(mountpoint, e) from None
        raise


def _info_from_xattrs(path: str | Path) -> dict[str, str]:
    names = [n for n in os.listxattr(path) if n.startswith(XATTR_PREFIX)]
    return {n[len(XATTR_PREFIX):]: os.getxattr(path, n).decode() for n in names}


@click.command("info")
@click.argument("path", type=PATH_ARG)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info_command(path: Path, as_json: bool) -> None:
    """What the Registry knows about a file or folder in a mount.

    Its exact version, the aliases on it now, digest, md5, size, creation time and the
    version's metadata, asked from the mount's daemon (on a mount made with --xattrs, the
    same values are extended attributes: getfattr -d -m user.wandb PATH).
    """
    try:
        mp, parts = locate_in_mount(path)
        info = read_info(mp, parts, path)
    except (ResolveError, NotReachable) as e:
        _fail(str(e))
    except NoAnswer as e:
        _fail(f"{path} did not answer within {e.timeout:.0f}s")
    except FileNotFoundError:
        _fail(f"{path}: no such file or directory")
    except OSError as e:
        _fail(f"{path}: no info ({e.strerror})")
    if not info:
        _fail(f"{path} is not a file or folder inside a version of a wandbfs mount")
    if as_json:
        out: dict[str, Any] = dict(info)
        out["metadata"] = json.loads(info.get("metadata") or "{}")
        out["aliases"] = [a for a in info.get("aliases", "").split(",") if a]
        click.echo(json.dumps(out, indent=1, ensure_ascii=False))
        return
    width = max(len(k) for k in info)
    for k in INFO_FIELDS:
        if info.get(k):
            click.echo(f"{k:<{width}}  {info[k]}")


def _mounts(mountpoint: Path | None, everyone: bool = True) -> list[str]:
    """The mount asked for, else the wandbfs mounts (only the caller's unless ``everyone``)."""
    if mountpoint:
        return [str(mount_path(mountpoint))]
    if everyone:
        return list(dict.fromkeys(read_mounts()))
    from wandbfs.daemon.mounttab import mounts_of

    return list(dict.fromkeys(mounts_of(owner=os.getuid())))


def read_status(mountpoint: str, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
    """The mount's status: from its daemon's control socket, else from the root's
    ``user.wandbfs.status`` (bounded); ``NoAnswer`` after ``timeout``."""
    try:
        status: dict[str, Any] = ask_daemon(mountpoint, {"op": "status"}, timeout)["status"]
        return status
    except NoSocket:
        pass
    try:
        return json.loads(bounded(os.getxattr, mountpoint, STATUS_XATTR, timeout=timeout))  # type: ignore[no-any-return]
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.ENODATA):
            raise _not_reachable(mountpoint, e) from None
        raise


@click.command("status")
@click.argument("mountpoint", required=False, type=PATH_ARG)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per mount.")
@click.option("--all", "everyone", is_flag=True, help="Every user's wandbfs mounts, not only yours.")
def status_command(mountpoint: Path | None, as_json: bool, everyone: bool) -> None:
    """Per mount: cache hit ratio, bytes from the cache and from W&B, downloads in flight,
    lineage pending, errors, uptime. Without MOUNTPOINT, your own wandbfs mounts; --all:
    every user's (one that is not yours to ask is named on stderr)."""
    mounts = _mounts(mountpoint, everyone)
    if not mounts:
        others = len(_mounts(None)) if not everyone else 0
        _fail(f"no wandbfs mounts of yours ({others} of other users: --all lists them)" if others
              else "no wandbfs mounts")
    failed = False
    problems = {mp: daemon_problem(mp) for mp in mounts}
    # One deadline for all: a daemon that does not answer leaves the others a second each.
    deadline = time.monotonic() + CALL_TIMEOUT
    for mp in mounts:
        if problems[mp]:
            click.echo(f"wandbfs: {problems[mp]}", err=True)
            failed = True
            continue
        try:
            s = read_status(mp, max(deadline - time.monotonic(), MIN_ANSWER_TIME))
        except NoAnswer as e:
            click.echo(f"wandbfs: {no_answer_message(mp, e.timeout)}", err=True)
            failed = True
            continue
        except NotReachable as e:   # another user's mount: only a failure when asked for by name
            click.echo(f"wandbfs: {e}", err=True)
            failed = failed or mountpoint is not None
            continue
        except OSError as e:
            click.echo(f"wandbfs: {mp}: no status ({e.strerror}); is it a wandbfs mount?", err=True)
            failed = True
            continue
        if as_json:
            click.echo(json.dumps({"mountpoint": mp, **s}))
            continue
        ratio = "-" if s["cache_hit_ratio"] is None else f"{100 * s['cache_hit_ratio']:.1f}%"
        offline = "" if s["wandb_offline_since_s"] is None else f"  (W&B unreachable for {s['wandb_offline_since_s']:.0f}s)"
        click.echo(f"{mp}  pid {s['pid']}  up {s['uptime_s'] / 60:.1f} min{offline}")
        click.echo(f"  cache hits {s['cache_hits']}  misses {s['cache_misses']}  hit ratio {ratio}")
        click.echo(f"  read {format_size(s['bytes_read'])}: {format_size(s['bytes_from_cache'])} from the cache, "
                   f"{format_size(s['bytes_from_wandb'])} while downloading; downloaded {format_size(s['bytes_downloaded'])}")
        if s.get("shared_cache"):
            down = "" if s["shared_cache_up"] else "  (unreachable: reading from W&B)"
            click.echo(f"  fetched {format_size(s['bytes_downloaded'])} from W&B, "
                       f"{format_size(s['bytes_from_shared'])} from the shared cache {s['shared_cache']}{down}; "
                       f"published {format_size(s['bytes_to_shared'])} ({s['shared_published']} objects)")
        click.echo(f"  downloads in flight {s['downloads_in_flight']}  served uncached {s['uncached_files']}  "
                   f"evictions {s['evictions']}  open files {s['open_files']}")
        click.echo(f"  inodes {s['inodes']} ({s['inode_nodes']} with a node)")
        lin = "off" if s["lineage_pending"] is None else f"{s['lineage_recorded']} recorded, {s['lineage_pending']} pending"
        errs = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items())) or "none"
        click.echo(f"  lineage {lin}  errors {errs}")
    if failed:
        sys.exit(1)


@click.command("refresh")
@click.argument("mountpoint", type=PATH_ARG)
@click.argument("paths", nargs=-1)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the daemon.")
def refresh_command(mountpoint: Path, paths: tuple[str, ...], timeout: float) -> None:
    """Drop the mount's listing and alias caches now (all, or under each PATH).

    PATH is relative to MOUNTPOINT (acme/model/resnet50) or a path inside it. The next
    listing or alias lookup asks W&B. Same as SIGHUP to the daemon, which drops everything.
    """
    from wandbfs.daemon.state import refresh_file, taking_file

    mp = Path(mountpoint).absolute()
    daemon = find_daemon(mp)
    if daemon is None:
        _fail(f"{mp}: no running wandbfs daemon of yours is serving it")
    assert daemon is not None
    if daemon.stopped:
        _fail(stopped_message(daemon))
    pid = daemon.pid
    rels = []
    for p in paths:
        rel = os.path.relpath(os.path.abspath(p), mp) if os.path.isabs(p) else p
        if rel.startswith(".."):
            _fail(f"{p} is not inside {mp}")
        rels.append(rel.strip("/") or "/")
    req = refresh_file(mp)
    with open(req, "a") as f:
        f.write("\n".join(rels or ["/"]) + "\n")
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while req.exists() or taking_file(mp).exists():
        if time.monotonic() > deadline:
            _fail(f"the refresh was not taken: {no_answer_message(mp, timeout)}")
        time.sleep(0.02)
    click.echo(f"wandbfs: refreshed {', '.join(rels) if rels else 'everything'} in {mp}")


def _lock_entry(spec: str, mounts: list[str]) -> LockEntry:
    """``spec``'s alias and the version it points to: in the mount for a path, W&B's for a name."""
    t = resolve_target(spec, mounts)
    r = path_resolution(t) if t.mount_path is not None else resolve_name(t)
    if r.alias is None:
        raise ResolveError(f"{spec}: names a fixed version ({r.version}); lock takes aliases")
    return LockEntry(r.requested, r.version)


@click.command("lock")
@click.argument("targets", nargs=-1, required=True)
def lock_command(targets: tuple[str, ...]) -> None:
    """Print the alias -> version map in force, for `wandbfs mount --lock FILE`.

    Each TARGET is an alias path in a mount (/mnt/wandb/acme/model/resnet50/production),
    a collection folder (every alias in it) or a registry name with an alias
    (acme/wandb-registry-model/resnet50:production). Usage: wandbfs lock ... > wandbfs.lock
    """
    entries: list[LockEntry] = []
    mounts = list(dict.fromkeys(read_mounts()))
    try:
        for t in targets:
            specs = [t]
            if looks_like_path(t) and is_collection_path(t, mounts):   # every alias in it
                mp = find_in_mounts(os.path.abspath(t), mounts)
                specs = on_mount(mp[0] if mp else t, _alias_links, t)
            entries += [_lock_entry(spec, mounts) for spec in specs]
    except ResolveError as e:
        _fail(str(e))
    click.echo(render_lock(entries), nl=False)


def _alias_links(collection_dir: str) -> list[str]:
    """The alias symlinks of a collection folder (run where it can be abandoned: a mount)."""
    return [os.path.join(collection_dir, n) for n in sorted(os.listdir(collection_dir))
            if os.path.islink(os.path.join(collection_dir, n))]
