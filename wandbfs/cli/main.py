"""The ``wandbfs`` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from wandbfs.cli.mount_options import mount_params
from wandbfs.cli.ops_cmd import PATH_ARG
from wandbfs.emulator.cli import emulator_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wandbfs")
def main() -> None:
    """wandbfs: the W&B Registry as a read-only filesystem.

    Server and credentials come from the wandb SDK's usual sources: WANDB_API_KEY or
    `wandb login` (netrc), and WANDB_BASE_URL for a dedicated or local server.

    \b
    Start here:
      wandbfs mount /mnt/wandb
      ls /mnt/wandb/<org>/<registry>/<collection>       versions (v0, v1...) and aliases
      python train.py --weights /mnt/wandb/acme/model/resnet50/production/model.safetensors
      wandbfs resolve <file>      which exact version a path is, and the SDK snippet
      wandbfs status              what each mount is doing
      wandbfs unmount /mnt/wandb
    Each command has --help; docs/usage.md walks through it all.
    """


@main.command(params=[click.Argument(["mountpoint"], type=PATH_ARG), *mount_params()])
def mount(mountpoint: Path, orgs: tuple[str, ...], cache_dir: Path | None, cache_max_size: str | None,
          cache_min_free: str, lock_file: Path | None, alias_ttl: float, list_ttl: float,
          negative_ttl: float, entity: str | None, project: str, job_type: str, run_id: str | None,
          no_lineage: bool, reader_runs: bool, missing_run_grace: float, access_log: Path | None, allow_other: bool, read_timeout: float, lookup_timeout: float,
          wandb_timeout: float, verify: str, part_size: int,
          concurrency: int, fill: str, warm: bool, read_ahead_kb: int, xattrs: bool, links: str,
          shared_cache: str | None, shared_lease_ttl: float, metrics_addr: str | None, log_format: str,
          foreground: bool, log_file: Path | None, debug: bool) -> None:
    """Mount the W&B Registry at MOUNTPOINT (returns once the mount answers)."""
    from wandbfs.cache.eviction import parse_size
    from wandbfs.daemon.config import MountConfig, MountError
    from wandbfs.daemon.process import mount_daemon, mount_foreground

    try:
        max_size = parse_size(cache_max_size) if cache_max_size else None
        min_free = parse_size(cache_min_free)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--cache-max-size/--cache-min-free") from None
    config = MountConfig(cache_max_size=max_size, cache_min_free=min_free, reader_runs=reader_runs,
                         missing_run_grace=missing_run_grace,
                         lock_file=lock_file.absolute() if lock_file else None,
                         metrics_addr=metrics_addr, log_format=log_format, xattrs=xattrs, links=links,
                         shared_cache=shared_cache, shared_lease_ttl=shared_lease_ttl,
                         access_log=access_log.absolute() if access_log else None, mountpoint=mountpoint.absolute(), orgs=list(orgs) or None, cache_dir=cache_dir,
                         alias_ttl=alias_ttl, list_ttl=list_ttl, negative_ttl=negative_ttl,
                         lineage=not no_lineage, entity=entity, project=project, job_type=job_type,
                         run_id=run_id, allow_other=allow_other, read_timeout=read_timeout, verify=verify,
                         lookup_timeout=lookup_timeout, wandb_timeout=wandb_timeout,
                         part_size=part_size << 20, concurrency=concurrency, adaptive=fill == "adaptive",
                         read_ahead_kb=read_ahead_kb, warm=warm,
                         log_file=log_file.absolute() if log_file else None, debug=debug)
    try:
        if foreground:
            sys.exit(mount_foreground(config))
        mount_daemon(config)
    except MountError as e:
        click.echo(f"wandbfs: {_one_line(str(e))}", err=True)
        sys.exit(1)
    click.echo(f"wandbfs: mounted at {config.mountpoint} (unmount with: wandbfs unmount {config.mountpoint})")


def _one_line(msg: str) -> str:
    """CLI mistakes get one line; the daemon log has the rest."""
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    return lines[0] if lines else "failed"


@main.command()
@click.argument("mountpoint", type=PATH_ARG)
@click.option("--force", is_flag=True,
              help="Detach a mount whose daemon does not answer (stopped or hung): abort its FUSE "
                   "connection, lazy unmount, kill the daemon. Pending lineage stays in the journal "
                   "for the next mount.")
@click.option("--timeout", default=15.0, show_default=True,
              help="Seconds to wait for the daemon to exit after the unmount.")
def unmount(mountpoint: Path, force: bool, timeout: float) -> None:
    """Unmount MOUNTPOINT and wait for the daemon to finish its W&B run.

    If the daemon does not answer (a command said it is stopped or hung), --force detaches it.
    """
    from wandbfs.cli.control import unmount as do_unmount
    from wandbfs.daemon.config import MountError

    try:
        done = do_unmount(mountpoint.absolute(), timeout=timeout, force=force)
    except MountError as e:
        click.echo(f"wandbfs: {e}", err=True)
        sys.exit(1)
    if force:
        click.echo(f"wandbfs: {mountpoint.absolute()}: {', '.join(done)}; pending lineage stays in its "
                   "journal for the next mount", err=True)


@main.command()
@click.argument("target")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Object cache to fill (default: the SDK's, as for mount).")
@click.option("--part-size", default=8, show_default=True, help="MiB per ranged GET.")
@click.option("--concurrency", default=4, show_default=True, help="Parallel ranged GETs per file.")
@click.option("--files", "files_at_once", default=4, show_default=True, help="Files downloaded at once.")
@click.option("--shared-cache", metavar="URL", envvar="WANDBFS_SHARED_CACHE",
              help="The cluster's shared cache tier (as for mount): files come from it before W&B.")
@click.option("--shared", is_flag=True,
              help="Seed the shared cache: publish every file the tier lacks (one node's job prolog).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def prefetch(target: str, cache_dir: Path | None, part_size: int, concurrency: int, files_at_once: int,
             shared_cache: str | None, shared: bool, quiet: bool) -> None:
    """Download a version (or a folder or file in it) into the cache before it is read.

    TARGET is a registry name (acme/wandb-registry-model/resnet:production) or a path in a
    wandbfs mount (/mnt/wandb/acme/model/resnet/production/weights). With --shared, the files
    also go to the shared cache tier, for every host of the cluster.
    """
    from wandbfs.fill.fetcher import FetchPolicy
    from wandbfs.cli.prefetch_cmd import default_cache, prefetch_with_progress, resolve_target
    from wandbfs.sdk.client import WandbError

    try:
        tgt = resolve_target(target)
    except ValueError as e:
        click.echo(f"wandbfs: {e}", err=True)
        sys.exit(1)
    if shared and not shared_cache:
        raise click.UsageError("--shared needs the tier: --shared-cache URL (or $WANDBFS_SHARED_CACHE)")
    tier = None
    if shared_cache:
        from wandbfs.shared.tier import SharedTier

        try:
            tier = SharedTier.open(shared_cache)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--shared-cache") from None
    policy = FetchPolicy(part_size=part_size << 20, concurrency=concurrency)
    try:
        files, total, published = prefetch_with_progress(tgt, default_cache(cache_dir), policy, files_at_once,
                                                         "prefetch", quiet, tier=tier, share=shared)
    except WandbError as e:
        click.echo(f"wandbfs: {_one_line(str(e))}", err=True)
        sys.exit(1)
    click.echo(f"wandbfs: {files} files, {total} bytes in the cache" +
               (f"; {published} published to {tier.url}" if shared and tier is not None else ""))
    if shared and tier is not None and tier.stats.errors:
        click.echo(f"wandbfs: the shared cache {tier.url} failed {tier.stats.errors} times (see above)", err=True)
        sys.exit(1)


@main.command()
@click.argument("mountpoint", required=False, type=PATH_ARG)
@click.option("--pending", is_flag=True, help="Only uses not yet recorded in W&B.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def lineage(mountpoint: Path | None, pending: bool, as_json: bool) -> None:
    """List the artifact uses a mount recorded in W&B, and those still pending.

    Reads the mounts' lineage journals (all mounts of this user, or MOUNTPOINT's); pending
    uses are sent by the daemon as soon as W&B answers, and by the next daemon on that
    mount point if this one stops first.
    """
    import json
    import time

    from wandbfs.daemon.state import all_daemons, find_daemon, journal_file, state_dir, stopped_message
    from wandbfs.lineage.journal import read_journal

    # Only files in the state directory: the mount point itself is never touched.
    files = [journal_file(mountpoint.absolute())] if mountpoint else sorted(state_dir().glob("lineage-*.jsonl"))
    rows = [e for f in files for e in read_journal(f).values() if e.pending or not pending]
    for e in sorted(rows, key=lambda e: e.time):
        if as_json:
            click.echo(json.dumps({"state": "pending" if e.pending else "recorded", "run": e.run,
                                   "version": e.version_name, "used_as": e.used_as, "time": e.time,
                                   "recorded_at": e.done}))
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time))
            click.echo(f"{'pending ' if e.pending else 'recorded'}  {when}  {e.version_name}  "
                       f"as {e.used_as}  on {e.run}")
    if not rows and not as_json:
        click.echo("wandbfs: no pending uses" if pending else "wandbfs: no uses recorded yet", err=True)
    daemons = [find_daemon(mountpoint)] if mountpoint else all_daemons()
    stopped = [d for d in daemons if d is not None and d.stopped]
    for d in stopped:
        click.echo(f"wandbfs: {stopped_message(d)} (its pending uses wait until it runs again)", err=True)
    if stopped:
        sys.exit(1)


main.add_command(emulator_group)
from wandbfs.cli.ops_cmd import info_command, lock_command, refresh_command, status_command  # noqa: E402

main.add_command(info_command)
main.add_command(status_command)
main.add_command(refresh_command)
main.add_command(lock_command)
from wandbfs.cli.cache_cmd import cache_group, pin_command, unpin_command  # noqa: E402

main.add_command(cache_group)
main.add_command(pin_command)
main.add_command(unpin_command)
from wandbfs.cli.mount_helper import install_helper_command  # noqa: E402
from wandbfs.cli.resolve_cmd import path_command, resolve_command  # noqa: E402

main.add_command(resolve_command)
main.add_command(path_command)
main.add_command(install_helper_command)

if __name__ == "__main__":
    main()
