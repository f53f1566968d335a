#!/bin/bash
# Slurm prolog: warm this node's wandbfs cache with the artifact versions a job will read,
# so training starts on local bytes instead of waiting on the network.
#
# slurm.conf:   Prolog=/etc/slurm/prolog.d/wandbfs.sh     (runs as root on each node of the job)
# A job names what it will read in its comment (Prolog does not see the job's environment):
#   sbatch --comment "wandbfs:acme/wandb-registry-model/resnet50:production,acme/wandb-registry-dataset/squad:v2" train.sh
# and reads it through the node's mount: /mnt/wandb/acme/model/resnet50/production/...
#
# Settings (environment or /etc/wandbfs/prolog.conf):
#   WANDBFS_ENV_FILE   credentials, KEY=VALUE lines (default /etc/wandbfs/wandbfs.env)
#   WANDBFS_CACHE_DIR  the cache the node's mount uses (default /var/cache/wandbfs)
#   WANDBFS_PREFETCH   names to prefetch, comma-separated (overrides the job comment)
#   WANDBFS_TIMEOUT    seconds for all prefetches together (default 600)
#   WANDBFS_BIN        the wandbfs command (default: wandbfs on PATH)
#   WANDBFS_SHARED_CACHE  the cluster's shared cache tier (s3://bucket/prefix or a shared
#                      directory; the nodes' mounts use the same shared_cache=): every node
#                      prefetches through it, so the job pulls each file from W&B once, and
#                      the job's first node also publishes what the tier lacks (--shared)
#
# A prolog that exits non-zero drains the node and requeues the job, so a failed prefetch
# is logged and the prolog still exits 0: the job then reads through the mount, only slower.

set -u

conf=/etc/wandbfs/prolog.conf
# shellcheck source=/dev/null
[ -r "$conf" ] && . "$conf"

WANDBFS_BIN=${WANDBFS_BIN:-wandbfs}
WANDBFS_ENV_FILE=${WANDBFS_ENV_FILE:-/etc/wandbfs/wandbfs.env}
WANDBFS_CACHE_DIR=${WANDBFS_CACHE_DIR:-/var/cache/wandbfs}
WANDBFS_TIMEOUT=${WANDBFS_TIMEOUT:-600}
job=${SLURM_JOB_ID:-none}

log() { logger -t wandbfs-prolog -- "job $job: $*" 2>/dev/null || true; echo "wandbfs-prolog: job $job: $*" >&2; }

# What to fetch: WANDBFS_PREFETCH, else the job comment's "wandbfs:NAME,NAME" part.
names=${WANDBFS_PREFETCH:-}
if [ -z "$names" ]; then
    comment=${SLURM_JOB_COMMENT:-}   # set for prologs by recent Slurm versions; else ask scontrol
    if [ -z "$comment" ] && [ "$job" != none ] && command -v scontrol >/dev/null 2>&1; then
        comment=$(scontrol show job -o "$job" 2>/dev/null | grep -o 'Comment=.*')
    fi
    case "$comment" in
        *wandbfs:*) names=${comment#*wandbfs:}; names=${names%% *} ;;
    esac
fi
[ -z "$names" ] && exit 0

# Credentials: fstab-style KEY=VALUE file (the same one mount.wandbfs's env_file= reads).
if [ -r "$WANDBFS_ENV_FILE" ]; then
    set -a
    # shellcheck source=/dev/null
    . "$WANDBFS_ENV_FILE"
    set +a
fi

# Through the shared tier, if there is one; the job's first node seeds it.
shared=()
if [ -n "${WANDBFS_SHARED_CACHE:-}" ]; then
    shared=(--shared-cache "$WANDBFS_SHARED_CACHE")
    first=${SLURM_JOB_NODELIST:-}
    if [ -n "$first" ] && command -v scontrol >/dev/null 2>&1; then
        first=$(scontrol show hostnames "$first" 2>/dev/null | head -n 1)
    else
        first=${first%%,*}
    fi
    node=${SLURMD_NODENAME:-$(hostname -s)}
    [ -z "$first" ] || [ "$first" = "$node" ] && shared+=(--shared)
fi

deadline=$(( $(date +%s) + WANDBFS_TIMEOUT ))
IFS=',' read -r -a targets <<< "$names"
failed=0
for name in "${targets[@]}"; do
    name=${name//[[:space:]]/}
    [ -z "$name" ] && continue
    left=$(( deadline - $(date +%s) ))
    if [ "$left" -le 0 ]; then
        log "time is up (${WANDBFS_TIMEOUT}s); not prefetching $name"
        failed=1
        continue
    fi
    if out=$(timeout "$left" "$WANDBFS_BIN" prefetch -q --cache-dir "$WANDBFS_CACHE_DIR" "${shared[@]}" "$name" 2>&1); then
        log "prefetched $name: ${out##*wandbfs: }"
    else
        log "prefetch of $name failed (the job will read it over the network): ${out//$'\n'/ }"
        failed=1
    fi
done
[ "$failed" = 0 ] || log "some prefetches failed; continuing"
exit 0
