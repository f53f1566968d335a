"""What a mount is asked to be (``wandbfs mount``'s options), and why it cannot start."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wandbfs.model.lockfile import parse_lock


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
    adaptive: bool = True          # --fill adaptive (else whole)
    read_ahead_kb: int = 1024
    warm: bool = True
    cache_max_size: int | None = None
    cache_min_free: int = 0
    reader_runs: bool = True
    missing_run_grace: float = 300.0
    lock_file: Path | None = None
    metrics_addr: str | None = None
    xattrs: bool = False             # user.wandb.* as extended attributes (info/status use the control socket)
    links: str = "absolute"          # alias and name links: absolute under the mount point, or relative
    shared_cache: str | None = None  # the shared cache tier: s3://bucket/prefix or a shared directory
    shared_lease_ttl: float = 30.0   # seconds a host's claim on fetching an object lasts unless renewed
    log_format: str = "text"
    access_log: Path | None = None
    log_file: Path | None = None
    debug: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def load_lock(config: MountConfig) -> dict[tuple[str, str, str], dict[str, int]]:
    """The aliases ``--lock`` keeps on their versions; checked before forking, used by the daemon."""
    if config.lock_file is None:
        return {}
    try:
        return parse_lock(config.lock_file.read_text())
    except (OSError, ValueError) as e:
        raise MountError(f"--lock {config.lock_file}: {e}") from None
