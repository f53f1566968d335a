"""``wandbfs cache stats|prune|clear`` and ``wandbfs pin|unpin``: the cache, by hand.

These work on the cache directory directly (no daemon needed), with the same rules a
mount applies: objects that any process holds open and objects of pinned versions are
never removed; removal is one unlink per object, so a mount or the SDK sharing the cache
sees an object either whole or gone.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from wandbfs.cache.partial import Partials
from wandbfs.cache.store import ObjectCache, default_cache_root
from wandbfs.cache.eviction import CacheLimits, CachedObject, Evictor, format_size, parse_size
from wandbfs.cache.pins import PinStore

CACHE_DIR_HELP = "Cache directory (default: the SDK's, $WANDB_CACHE_DIR or ~/.cache/wandb, as for mount)."


def _cache(cache_dir: Path | None) -> ObjectCache:
    return ObjectCache(cache_dir or default_cache_root(), fsync=False)


def _size_option(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=name) from None


def cache_stats(cache: ObjectCache) -> dict[str, Any]:
    """What is in the cache, by kind, with pins, temps and the disk's free space."""
    evictor = Evictor(cache, CacheLimits())
    kinds: dict[str, dict[str, int]] = {}
    total = count = 0
    oldest = newest = None
    store = PinStore(cache.root)
    pins = store.all()
    pinned = store.objects(pins)
    pinned_bytes = pinned_count = 0
    for path, st in cache.iter_objects():
        kind = path.parent.parent.name
        k = kinds.setdefault(kind, {"objects": 0, "bytes": 0})
        k["objects"] += 1
        k["bytes"] += st.st_size
        count += 1
        total += st.st_size
        oldest = st.st_atime if oldest is None else min(oldest, st.st_atime)
        newest = st.st_atime if newest is None else max(newest, st.st_atime)
        if path in pinned:
            pinned_count += 1
            pinned_bytes += st.st_size
    temps = list(cache.iter_temps())
    partials = Partials(cache)
    parts = list(partials.iter())
    return {
        "cache_dir": str(cache.root),
        "objects": count, "bytes": total, "by_kind": kinds,
        "pinned_versions": len(pins), "pinned_objects": pinned_count,
        "pinned_bytes": pinned_bytes,
        "temp_files": len(temps), "temp_bytes": sum(st.st_blocks * 512 for _, st in temps),
        "partial_objects": len(parts), "partial_bytes": sum(partials.present_bytes(p) for p, _ in parts),
        "partial_disk_bytes": sum(st.st_blocks * 512 for _, st in parts),
        "disk_free": evictor.disk_free(),
        "least_recent_use": oldest, "most_recent_use": newest,
    }


@click.group("cache")
def cache_group() -> None:
    """Inspect and trim the object cache (shared with artifact.download() and every mount)."""


@cache_group.command("stats")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help=CACHE_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats_cmd(cache_dir: Path | None, as_json: bool) -> None:
    """Objects and bytes in the cache, partial objects, pinned versions, temp files, free disk space."""
    s = cache_stats(_cache(cache_dir))
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    click.echo(f"cache        {s['cache_dir']}")
    click.echo(f"objects      {s['objects']} ({format_size(s['bytes'])})")
    for kind, k in sorted(s["by_kind"].items()):
        click.echo(f"  {kind:<10} {k['objects']} ({format_size(k['bytes'])})")
    click.echo(f"pinned       {s['pinned_versions']} versions, {s['pinned_objects']} objects "
               f"({format_size(s['pinned_bytes'])})")
    click.echo(f"partial      {s['partial_objects']} objects read in part ({format_size(s['partial_bytes'])} "
               f"present; completed when a file is read to its end)")
    click.echo(f"temp files   {s['temp_files']} ({format_size(s['temp_bytes'])})")
    click.echo(f"disk free    {format_size(s['disk_free'])}")
    if s["least_recent_use"]:
        ago = (time.time() - s["least_recent_use"]) / 86400
        click.echo(f"oldest use   {ago:.1f} days ago")


def _progress_evict(length: int, quiet: bool, run: Any) -> Any:
    """Run an eviction with a progress bar over the bytes it has to free."""
    if quiet or length <= 0:
        return run(None)
    with click.progressbar(length=length, label="freeing", file=sys.stderr) as bar:
        def removed(obj: CachedObject) -> None:
            bar.update(obj.size)
        return run(removed)


def _report(result: Any, what: str) -> None:
    click.echo(f"wandbfs: {what} {result.removed} objects ({format_size(result.bytes_freed)})"
               + (f"; kept {result.in_use} in use" if result.in_use else "")
               + (f"; kept {result.skipped_pinned} pinned" if result.skipped_pinned else ""))


@cache_group.command("prune")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help=CACHE_DIR_HELP)
@click.option("--max-size", metavar="SIZE", help="Evict least recently used objects until the cache fits (e.g. 50G).")
@click.option("--min-free", metavar="SIZE", help="Evict until this much is free on the cache's disk (e.g. 10G).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def prune_cmd(cache_dir: Path | None, max_size: str | None, min_free: str | None, quiet: bool) -> None:
    """Evict least recently used objects until the cache is within the limits given.

    Open objects and pinned versions are kept. Temp files left by dead downloads go too.
    """
    limits = CacheLimits(_size_option(max_size, "--max-size"), _size_option(min_free, "--min-free") or 0)
    if not limits.limited:
        raise click.UsageError("give --max-size and/or --min-free")
    cache = _cache(cache_dir)
    evictor = Evictor(cache, limits, pinned=PinStore(cache.root).objects)
    _, used = evictor.scan()
    over = max(used - limits.max_size if limits.max_size is not None else 0, limits.min_free - evictor.disk_free())
    result = _progress_evict(over, quiet, lambda cb: evictor.prune(on_removed=cb))
    temps = cache.cleanup_orphan_temps()
    _report(result, "evicted")
    if temps:
        click.echo(f"wandbfs: removed {temps} temp files of dead downloads")
    if not result.fits:
        click.echo("wandbfs: the cache is still over the limit (what is left is open or pinned)", err=True)
        sys.exit(2)


@cache_group.command("clear")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help=CACHE_DIR_HELP)
@click.option("--include-pinned", is_flag=True, help="Remove pinned versions' objects too (pins stay).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def clear_cmd(cache_dir: Path | None, include_pinned: bool, yes: bool, quiet: bool) -> None:
    """Remove every cached object that is not open (and not pinned). Metadata stays."""
    cache = _cache(cache_dir)
    if not yes:
        click.confirm(f"Remove every unpinned object in {cache.root}/artifacts/obj?", abort=True)
    evictor = Evictor(cache, CacheLimits(), pinned=PinStore(cache.root).objects)
    _, used = evictor.scan()
    result = _progress_evict(used, quiet, lambda cb: evictor.clear(include_pinned=include_pinned, on_removed=cb))
    cache.cleanup_orphan_temps()
    _report(result, "removed")


async def _resolve_version(spec: str) -> tuple[Any, Any, str | None]:
    """(target, detail, alias) for a registry name or a path in a mount.

    ``alias`` is the alias a name went through; a path in a mount names the ``vN`` its alias
    showed there (``Target.token``), so it pins that version without an alias."""
    from wandbfs.catalog.catalog import Catalog
    from wandbfs.cli.prefetch_cmd import resolve_target
    from wandbfs.sdk.client import WandbClient

    target = resolve_target(spec)
    catalog = Catalog(WandbClient())
    index = await catalog.resolve(target.org, target.registry, target.collection, target.token)
    detail = await catalog.version(target.org, target.registry, target.collection, index)
    alias = None if target.mount_path else target.alias
    return target, detail, alias


@click.command("pin")
@click.argument("target", required=False)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help=CACHE_DIR_HELP)
@click.option("--no-fetch", is_flag=True, help="Record the pin only; do not download the version now.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def pin_command(target: str | None, cache_dir: Path | None, no_fetch: bool, quiet: bool) -> None:
    """Keep a version in the cache for good: eviction never removes its files.

    TARGET is a registry name (acme/wandb-registry-model/resnet50:production) or a path in a
    wandbfs mount; the whole version it names is pinned. An alias pins the version it points
    to now, which stays pinned after the alias moves. Without TARGET, lists the pins.
    """
    import trio

    from wandbfs.cli.prefetch_cmd import prefetch_with_progress
    from wandbfs.cli.targets import Target
    from wandbfs.fill.fetcher import FetchPolicy
    from wandbfs.model.names import qualified_name
    from wandbfs.sdk.client import WandbError

    cache = _cache(cache_dir)
    pins = PinStore(cache.root)
    if target is None:
        for pin in pins.all():
            via = f" (via {pin.via})" if pin.via else ""
            click.echo(f"{pin.name}{via}\t{len(pin.objects)} files\t{format_size(pin.size)}")
        return
    try:
        tgt, detail, alias = trio.run(_resolve_version, target)
        name = qualified_name(detail.org, detail.registry, detail.collection, f"v{detail.index}")
        entries = list(detail.manifest.entries.values())  # reference entries too: they are cached alike
        pins.add(name, [cache.path_for(e) for e in entries], sum(e.size for e in entries), via=alias)
        if not no_fetch:
            exact = Target(tgt.org, tgt.registry, tgt.collection, f"v{detail.index}")  # the whole version
            prefetch_with_progress(exact, cache, FetchPolicy(), 4, "pin", quiet)
    except (ValueError, WandbError) as e:
        click.echo(f"wandbfs: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
        sys.exit(1)
    via = f" (via {alias})" if alias else ""
    click.echo(f"wandbfs: pinned {name}{via}: {len(entries)} files, {format_size(sum(e.size for e in entries))}")


@click.command("unpin")
@click.argument("target")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help=CACHE_DIR_HELP)
def unpin_command(target: str, cache_dir: Path | None) -> None:
    """Let eviction remove a pinned version's files again (they stay cached until then).

    TARGET as for pin. Through an alias, unpins the version the alias points to now and any
    version that was pinned through that alias.
    """
    import trio

    from wandbfs.model.names import qualified_name
    from wandbfs.sdk.client import WandbError

    pins = PinStore(_cache(cache_dir).root)
    try:
        _, detail, alias = trio.run(_resolve_version, target)
    except (ValueError, WandbError) as e:
        click.echo(f"wandbfs: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
        sys.exit(1)
    prefix = qualified_name(detail.org, detail.registry, detail.collection, "v0").rsplit(":", 1)[0]
    gone = pins.remove({f"{prefix}:v{detail.index}"}, via=(prefix, alias) if alias else None)
    if not gone:
        click.echo(f"wandbfs: {prefix}:v{detail.index} is not pinned", err=True)
        sys.exit(1)
    for name in gone:
        click.echo(f"wandbfs: unpinned {name}")
