"""The options of ``wandbfs mount``, in one place: the command and the mount(8) helper share them.

The helper turns ``-o cache_dir=/x`` into ``--cache-dir /x`` by reading this table, so an
option added here works in fstab at once; neither module imports the other.
"""

from __future__ import annotations

from pathlib import Path

import click


def mount_params() -> list[click.Parameter]:
    """``wandbfs mount``'s options, new objects on each call (click keeps state on them)."""
    return [
        click.Option(["--org", "orgs"], multiple=True, help="Organization to show (repeatable; default: all yours)."),
        click.Option(["--cache-dir"], type=click.Path(file_okay=False, path_type=Path),
                        help="Object cache (default: the SDK's, $WANDB_CACHE_DIR or ~/.cache/wandb, shared with "
                             "artifact.download())."),
        click.Option(["--cache-max-size"], metavar="SIZE",
                        help="Cap on the object cache (e.g. 50G); least recently used objects are evicted "
                             "before a download that would not fit. Open and pinned objects are never evicted."),
        click.Option(["--cache-min-free"], metavar="SIZE", default="0", show_default=True,
                        help="Free space to leave on the cache's disk (e.g. 10G). A file that cannot fit even "
                             "after eviction is served straight from W&B without caching."),
        click.Option(["--lock", "lock_file"], type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        help="Keep the aliases in this file (from `wandbfs lock`) on their versions for the "
                             "life of the mount."),
        click.Option(["--alias-ttl"], default=30.0, show_default=True, help="Seconds before aliases are re-resolved."),
        click.Option(["--list-ttl"], default=60.0, show_default=True,
                        help="Seconds before registry/collection listings are refreshed."),
        click.Option(["--negative-ttl"], default=30.0, show_default=True, help="Seconds a missing name stays missing."),
        click.Option(["--entity"], help="Entity of the lineage run (default: your default entity)."),
        click.Option(["--project"], default="wandbfs", show_default=True, help="Project of the lineage run."),
        click.Option(["--job-type"], default="wandbfs-mount", show_default=True, help="Job type of the lineage run."),
        click.Option(["--run-id"], help="Record uses on this existing run instead of starting one."),
        click.Option(["--no-lineage"], is_flag=True, help="Do not record artifact uses in W&B."),
        click.Option(["--reader-runs/--no-reader-runs"], default=True, show_default=True,
                        help="Record a use on the reading process's own run when its environment has "
                             "WANDB_RUN_ID (with WANDB_PROJECT/WANDB_ENTITY); else on the mount's run."),
        click.Option(["--missing-run-grace"], default=300.0, show_default=True,
                        help="Seconds to keep retrying a use for a reader's run that does not exist (yet) "
                             "before recording it on the mount's run."),
        click.Option(["--access-log"], type=click.Path(dir_okay=False, path_type=Path),
                        help="Append one JSON line per file opened (time, pid, uid, process, path, version, run)."),
        click.Option(["--allow-other"], is_flag=True, help="Let other users read the mount (needs user_allow_other)."),
        click.Option(["--read-timeout"], default=30.0, show_default=True,
                        help="Seconds without bytes before a download is abandoned and retried."),
        click.Option(["--lookup-timeout"], default=5.0, show_default=True,
                        help="Seconds a name never seen before waits for W&B, then EIO. Anything seen once "
                             "(listings, aliases, manifests, cached files) is served without waiting on W&B."),
        click.Option(["--wandb-timeout"], default=30.0, show_default=True,
                        help="The daemon's deadline on any one W&B call; past it the call is abandoned and "
                             "W&B counts as not answering until a probe gets through."),
        click.Option(["--verify"], type=click.Choice(["stream", "strict"]), default="stream", show_default=True,
                        help="stream: serve each read as soon as its bytes arrive; the read that reaches the end "
                             "of a file fails with EIO if the whole-file digest does not match. strict: serve "
                             "only objects whose digest was verified (the first read waits for the whole file)."),
        click.Option(["--part-size"], default=8, show_default=True, help="MiB per ranged GET for large files."),
        click.Option(["--concurrency"], default=4, show_default=True, help="Parallel ranged GETs per file."),
        click.Option(["--fill"], type=click.Choice(["adaptive", "whole"]), default="adaptive", show_default=True,
                        help="adaptive: fetch what is read plus a read-ahead window that grows on sequential "
                             "reads (whole file once reads are sequential or cover half of it; the parts fetched "
                             "stay in the cache for the next open). whole: every open of a file larger than one "
                             "part fetches all of it in the background."),
        click.Option(["--warm/--no-warm"], default=True, show_default=True,
                        help="Fetch ahead in the background: manifests when a collection is listed, signed URLs "
                             "when a version is looked up, a version's small files when one of them is opened."),
        click.Option(["--read-ahead-kb"], default=1024, show_default=True,
                        help="Kernel read-ahead for the mount (root only; 0 leaves the kernel default)."),
        click.Option(["--xattrs/--no-xattrs"], default=False, show_default=True,
                        help="Also serve what `wandbfs info` shows as user.wandb.* extended attributes (getfattr), "
                             "and the status as user.wandbfs.status on the root. Costs `ls -l` two extra requests "
                             "per file; `wandbfs info`/`status` work either way (the daemon's control socket)."),
        click.Option(["--links"], type=click.Choice(["absolute", "relative"]), default="absolute", show_default=True,
                        help="Alias symlinks (production -> v3) and pasted-name links point to an absolute path under "
                             "the mount point, so `cp -r`/`rsync -a`/`tar` of an alias keep a link that still finds "
                             "the version; relative where the mount is seen at another path (a container's bind mount)."),
        click.Option(["--shared-cache"], metavar="URL", envvar="WANDBFS_SHARED_CACHE",
                        help="A cache tier the cluster's hosts share: s3://bucket/prefix (boto3's credentials, "
                             "AWS_ENDPOINT_URL for MinIO/Ceph) or an absolute directory on NFS/Lustre/GPFS/CephFS. "
                             "Files come from the local cache, then this tier, then W&B; what one host fetched from "
                             "W&B the others read from here, verified ($WANDBFS_SHARED_CACHE)."),
        click.Option(["--shared-lease-ttl"], default=30.0, show_default=True,
                        help="Seconds a host's lease on fetching an object for the others lasts unless renewed; "
                             "a host that died or stalled is taken over after this."),
        click.Option(["--metrics-addr"], metavar="HOST:PORT",
                        help="Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9400). Off by default."),
        click.Option(["--log-format"], type=click.Choice(["text", "json"]), default="text", show_default=True,
                        help="Daemon log lines as text or as one JSON object each."),
        click.Option(["-f", "--foreground"], is_flag=True, help="Stay in the foreground and log to stderr."),
        click.Option(["--log-file"], type=click.Path(dir_okay=False, path_type=Path), help="Daemon log file."),
        click.Option(["-d", "--debug"], is_flag=True, help="Verbose logging."),
    ]
