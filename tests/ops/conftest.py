"""Operator-facing commands and deployment files: resolve/path, the mount(8) helper, deploy/.

Real mounts come from the fixtures in tests/fs/conftest.py (re-exported here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.fs.conftest import _mounted, daemon_env, mount, mount_env, run_cli  # noqa: F401  (fixtures)
from wandbfs.cli.mount_helper import HELPER_NAMES

SBIN = Path("/sbin")


@pytest.fixture
def helper_installed() -> Iterator[Path]:
    """``wandbfs install-helper`` into /sbin for real (mount(8) only looks there), undone after.

    Whatever was at /sbin/mount.fuse.wandbfs and /sbin/mount.wandbfs before (another
    checkout's links) is put back.
    """
    if os.geteuid() != 0:
        pytest.skip("installing a mount helper in /sbin needs root")
    if not shutil.which("mount") or not os.path.exists("/dev/fuse"):
        pytest.skip("needs util-linux mount and /dev/fuse")
    before = {n: os.readlink(SBIN / n) if (SBIN / n).is_symlink() else None for n in HELPER_NAMES}
    if any((SBIN / n).exists() and not (SBIN / n).is_symlink() for n in HELPER_NAMES):
        pytest.skip("a mount.wandbfs helper that is not a symlink is installed; not touching it")
    r = run_cli(["install-helper", "--force"], dict(os.environ))
    assert r.returncode == 0, r.stderr
    yield SBIN / HELPER_NAMES[0]
    for name, target in before.items():
        link = SBIN / name
        if link.is_symlink():
            link.unlink()
        if target is not None:
            link.symlink_to(target)


def force_unmount(mp: Path, pid: int | None = None) -> None:
    """Teardown after a failed test: never leave a mount or a daemon behind."""
    if _mounted(mp):
        subprocess.run(["umount", "-l", str(mp)], capture_output=True)
    if pid:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
