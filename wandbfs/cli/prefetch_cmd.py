"""``wandbfs prefetch NAME|PATH``: warm the object cache with the mount's own fill engine.

Runs in this process (no daemon needed): reads the target (targets.py), resolves its version
through the catalog (as a mount does), then fills every file of the version (or of a folder
in it) with the same parallel, verified fetcher a mount uses, into the same cache, so a
mount or ``artifact.download()`` later finds them.
Typical use: a Slurm prolog or an init container before training starts.

Reference entries (file://, http(s)://, s3://) are fetched like stored files, into the
SDK's cache keys for them. One that wandbfs cannot read (gs://, or s3:// without boto3)
is skipped with a warning naming it, unless it is already cached.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import trio

from wandbfs.cache.store import ObjectCache, default_cache_root
from wandbfs.catalog.catalog import Catalog
from wandbfs.cli import targets
from wandbfs.cli.resolve_cmd import read_mounts
from wandbfs.cli.targets import Target
from wandbfs.fill.fetcher import Fetcher, FetchPolicy
from wandbfs.fill.errors import Unsupported
from wandbfs.model.manifest import ManifestEntry
from wandbfs.sdk.client import BackendError, NotFound, WandbClient
from wandbfs.shared.tier import SharedTier

log = logging.getLogger(__name__)


def resolve_target(spec: str) -> Target:
    """A registry name (``acme/wandb-registry-model/resnet:production``) or a path in a mount,
    read like every command reads one (targets.resolve_target); ``ValueError`` if neither."""
    return targets.resolve_target(spec, read_mounts())


Progress = Callable[[int], None]


async def prefetch(client: WandbClient, target: Target, cache: ObjectCache, policy: FetchPolicy,
                   files_at_once: int = 4, on_total: Callable[[int, int], None] | None = None,
                   progress: Progress | None = None, tier: SharedTier | None = None,
                   share: bool = False) -> tuple[int, int, int]:
    """Fill every file under ``target``; returns (files, bytes) now in the cache and how
    many files were published to the shared ``tier`` (``share``: every file it lacks; else
    only what this process fetched from W&B as the lease holder, as a mount does).

    References wandbfs cannot read are skipped (a warning each) and left out of the counts."""
    catalog = Catalog(client)
    index = await catalog.resolve(target.org, target.registry, target.collection, target.token)
    detail = await catalog.version(target.org, target.registry, target.collection, index)
    prefix = "/".join(target.inner)
    entries: list[ManifestEntry] = [e for p, e in sorted(detail.manifest.entries.items())
                                    if not prefix or p == prefix or p.startswith(prefix + "/")]
    if not entries:
        raise NotFound(f"nothing to prefetch under {prefix or '/'} in {detail.name}")
    total = sum(e.size for e in entries)
    if on_total:
        on_total(len(entries), total)
    sem = trio.Semaphore(files_at_once)
    errors: list[Exception] = []
    skipped: list[ManifestEntry] = []
    async with trio.open_nursery() as nursery:
        fetcher = Fetcher(cache, catalog.file_url, policy=policy, nursery=nursery, tier=tier)
        published: list[ManifestEntry] = []

        async def one(entry: ManifestEntry) -> None:
            async with sem:
                if errors:
                    return  # stop starting new files after the first failure
                try:
                    if share and await fetcher.share(detail, entry):
                        published.append(entry)
                    elif not share:
                        await fetcher.ensure(detail, entry)
                except Unsupported as e:
                    log.warning("wandbfs: skipping %s", e)
                    skipped.append(entry)
                    return
                except Exception as e:  # noqa: BLE001 - reported once, below
                    errors.append(e)
                    return
                if progress:
                    progress(entry.size)
        try:
            async with trio.open_nursery() as work:
                for e in entries:
                    work.start_soon(one, e)
        finally:
            fetcher.close()
    if errors:
        raise errors[0]
    if skipped and len(skipped) == len(entries):
        raise BackendError(f"nothing could be prefetched under {prefix or '/'} in {detail.name}: "
                           f"{len(skipped)} references wandbfs cannot read")
    return len(entries) - len(skipped), total - sum(e.size for e in skipped), len(published)


def prefetch_with_progress(target: Target, cache: ObjectCache, policy: FetchPolicy, files_at_once: int,
                           label: str, quiet: bool, tier: SharedTier | None = None,
                           share: bool = False) -> tuple[int, int, int]:
    """``prefetch`` from a command: its own trio run, a progress bar on stderr unless ``quiet``."""
    import sys

    import click

    bar: list[Any] = []

    def on_total(n: int, total: int) -> None:
        if not quiet:
            bar.append(click.progressbar(length=total, label=f"{label} {n} files", file=sys.stderr))
            bar[0].__enter__()

    def progress(n: int) -> None:
        if bar:
            bar[0].update(n)
    try:
        return trio.run(lambda: prefetch(WandbClient(), target, cache, policy, files_at_once, on_total, progress,
                                         tier, share))
    finally:
        if bar:
            bar[0].__exit__(None, None, None)


def default_cache(cache_dir: Path | None) -> ObjectCache:
    return ObjectCache(cache_dir or default_cache_root(), fsync=False)
