"""Real mounts for tests: ``wandbfs mount`` as a user runs it, torn down even on failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.conftest import hermetic_env
from tests.helpers import wait_for
from wandbfs.daemon.mounttab import is_mounted
from wandbfs.daemon.state import runtime_file
from wandbfs.emulator import Emulator

pytestmark = pytest.mark.fuse


def _mounted(mp: Path) -> bool:
    """From the mount table, as wandbfs itself reads it (no syscall on the mount point)."""
    return is_mounted(mp)


class Mounted:
    def __init__(self, path: Path, env: dict[str, str], proc: subprocess.CompletedProcess[str]) -> None:
        self.path = path
        self.env = env
        self.result = proc

    @property
    def runtime(self) -> dict[str, object]:
        # Named without touching the mount point: its stat blocks when its daemon is stopped.
        return json.loads(runtime_file(self.path, Path(self.env["WANDBFS_STATE_DIR"])).read_text())

    @property
    def pid(self) -> int:
        return int(self.runtime["pid"])  # type: ignore[arg-type]

    @property
    def log(self) -> str:
        return Path(str(self.runtime["log_file"])).read_text()

    def unmount(self) -> subprocess.CompletedProcess[str]:
        return run_cli(["unmount", str(self.path)], self.env)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wandbfs.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def daemon_env(tmp_path: Path, base_url: str) -> dict[str, str]:
    """The environment a mount daemon gets in tests: its own SDK dirs and state dir."""
    env = dict(os.environ)
    env.update(hermetic_env(tmp_path / "daemon", base_url))
    env["WANDBFS_STATE_DIR"] = str(tmp_path / "daemon" / "state")
    return env


@pytest.fixture
def mount_env(emulator: Emulator, tmp_path: Path) -> dict[str, str]:
    return daemon_env(tmp_path, emulator.url)


@pytest.fixture
def mount(emu: Emulator, mount_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Mounted]]:
    """``mount(*options)`` mounts at a fresh directory; all mounts are removed at teardown."""
    made: list[Mounted] = []

    def do_mount(*options: str, env: dict[str, str] | None = None, mountpoint: Path | None = None) -> Mounted:
        mp = mountpoint or tmp_path / f"mnt{len(made)}"
        mp.mkdir(exist_ok=True)
        e = env or mount_env
        r = run_cli(["mount", str(mp), *options], e)
        assert r.returncode == 0, f"mount failed: {r.stderr}"
        assert _mounted(mp)
        m = Mounted(mp, e, r)
        made.append(m)
        return m

    yield do_mount
    for m in made:
        if _mounted(m.path):
            pid = None
            try:
                pid = m.pid
            except (OSError, ValueError, KeyError):
                pass
            r = m.unmount()
            if r.returncode != 0 or _mounted(m.path):
                subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True)
                if pid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        assert not _mounted(m.path)


def blob_gets(emu: Emulator) -> list:
    return [e for e in emu.log.entries("blob") if e.method == "GET"]


def wait_unmounted(path: Path, timeout: float = 30) -> None:
    wait_for(lambda: not _mounted(path), timeout, what=f"{path} to be unmounted")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, show the tail of each mount daemon's log (they run in the background)."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for logf in Path(os.environ.get("TMPDIR", "/tmp")).glob(f"pytest-of-*/pytest-*/{item.name[:30]}*/daemon/state/*.log"):
            rep.sections.append((f"daemon log {logf.name}", logf.read_text()[-3000:]))
