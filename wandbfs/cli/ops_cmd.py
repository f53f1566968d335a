"""``wandbfs info|status|refresh|lock``: asking a running mount what it knows and does.

No control socket: ``info`` and ``status`` read extended attributes the mount serves
(``user.wandb.*`` on every entry under a version, ``user.wandbfs.status`` on its root);
``refresh`` leaves the paths in the state directory and sends the daemon SIGHUP; ``lock``
reads alias symlinks (or asks W&B for names).

None of them waits on a daemon that does not answer: a stopped daemon is named at once
(from /proc, without touching its mount), and every call on a mount runs with a deadline
(control.bounded); both messages name the way out (``kill -CONT``, ``unmount --force``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from wandbfs.cli.control import CALL_TIMEOUT, NoAnswer, Pending, bounded, daemon_problem, find_daemon, mount_path, \
    no_answer_message, stopped_message
from wandbfs.cache.eviction import format_size
from wandbfs.model.lockfile import LockEntry, render_lock
from wandbfs.cli.resolve_cmd import ResolveError, path_resolution, read_mounts, resolve_name
from wandbfs.cli.targets import (find_in_mounts, is_collection_path, locate, looks_like_path, on_mount,
                                 resolve_target)

XATTR = "user.wandb."
STATUS_XATTR = "user.wandbfs.status"


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


def read_info(path: str | Path) -> dict[str, str]:
    """The ``user.wandb.*`` attributes of a path in a mount (after following alias symlinks)."""
    names = [n for n in os.listxattr(path) if n.startswith(XATTR)]
    return {n[len(XATTR):]: os.getxattr(path, n).decode() for n in names}


def _mount_of(path: str | Path) -> str | None:
    """The wandbfs mount that lexically holds ``path`` (no syscall on it)."""
    hit = locate(os.path.abspath(path), read_mounts())
    return hit[0] if hit else None


@click.command("info")
@click.argument("path", type=PATH_ARG)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info_command(path: Path, as_json: bool) -> None:
    """What the Registry knows about a file or folder in a mount.

    Its exact version, the aliases on it now, digest, md5, size, creation time and the
    version's metadata; the same values are extended attributes (getfattr -d -m user.wandb PATH).
    """
    mp = _mount_of(path)
    try:
        info = on_mount(mp, read_info, path) if mp else bounded(read_info, path)
    except ResolveError as e:
        _fail(str(e))
    except NoAnswer as e:
        _fail(f"{path} did not answer within {e.timeout:.0f}s")
    except FileNotFoundError:
        _fail(f"{path}: no such file or directory")
    except OSError as e:
        _fail(f"{path}: cannot read its attributes ({e.strerror}); is it inside a wandbfs mount?")
    if not info:
        _fail(f"{path} is not a file or folder inside a version of a wandbfs mount")
    if as_json:
        out: dict[str, Any] = dict(info)
        out["metadata"] = json.loads(info.get("metadata") or "{}")
        out["aliases"] = [a for a in info.get("aliases", "").split(",") if a]
        click.echo(json.dumps(out, indent=1, ensure_ascii=False))
        return
    width = max(len(k) for k in info)
    for k in ["name", "version", "aliases", "path", "size", "digest", "md5", "ref", "created_at",
              "artifact_id", "metadata"]:
        if info.get(k):
            click.echo(f"{k:<{width}}  {info[k]}")


def _mounts(mountpoint: Path | None) -> list[str]:
    if mountpoint:
        return [str(mount_path(mountpoint))]
    return list(dict.fromkeys(read_mounts()))


def read_status(mountpoint: str) -> dict[str, Any]:
    return json.loads(os.getxattr(mountpoint, STATUS_XATTR))


@click.command("status")
@click.argument("mountpoint", required=False, type=PATH_ARG)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per mount.")
def status_command(mountpoint: Path | None, as_json: bool) -> None:
    """Per mount: cache hit ratio, bytes from the cache and from W&B, downloads in flight,
    lineage pending, errors, uptime. Without MOUNTPOINT, every wandbfs mount."""
    mounts = _mounts(mountpoint)
    if not mounts:
        _fail("no wandbfs mounts")
    failed = False
    # Every mount is asked at once, each in a child process, under one deadline.
    problems = {mp: daemon_problem(mp) for mp in mounts}
    asked = {mp: Pending(read_status, mp) for mp in mounts if not problems[mp]}
    deadline = time.monotonic() + CALL_TIMEOUT
    for mp in mounts:
        if mp not in asked:
            click.echo(f"wandbfs: {problems[mp]}", err=True)
            failed = True
            continue
        try:
            s = asked[mp].result(deadline)
        except NoAnswer:
            click.echo(f"wandbfs: {no_answer_message(mp, CALL_TIMEOUT)}", err=True)
            failed = True
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
        click.echo(f"  downloads in flight {s['downloads_in_flight']}  served uncached {s['uncached_files']}  "
                   f"evictions {s['evictions']}  open files {s['open_files']}")
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
