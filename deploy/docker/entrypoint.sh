#!/bin/sh
# Container entrypoint: create the mount point (the last argument), then run the mount in the
# foreground as this container's main process (SIGTERM from docker stop / kubelet unmounts it).
set -eu
mountpoint=""
for arg in "$@"; do mountpoint="$arg"; done
case "$mountpoint" in
    /*) mkdir -p -- "$mountpoint" ;;
    *) echo "wandbfs entrypoint: the last argument must be the mount point (an absolute path)" >&2; exit 2 ;;
esac
exec wandbfs mount --foreground "$@"
