"""Shared fixtures: one hermetic W&B emulator per session and the SDK pointed at it.

wandb.init() keeps the first base URL it sees for the life of the process, so the suite
shares one emulator and calls ``wandb.teardown()`` after each test that touched runs.
The environment follows the fast-fail settings in shared/reference/wandb-sdk-protocol.md §5.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from wandbfs.sdk import env as sdk_env
from wandbfs.emulator import Emulator
from wandbfs.emulator.seed import seed_demo

API_KEY = "test" + "k" * 40

def hermetic_env(root: Path, base_url: str, api_key: str = API_KEY) -> dict[str, str]:
    """Everything the SDK writes goes under ``root``; used for subprocesses too."""
    return sdk_env.hermetic_env(root, base_url, api_key)


@pytest.fixture(scope="session")
def session_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="wandbfs-test-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def emulator(session_root: Path) -> Iterator[Emulator]:
    """The session's emulator, seeded with the demo org ``acme``."""
    emu = Emulator(session_root / "emulator-state").start()
    seed_demo(emu.store)
    old = dict(os.environ)
    os.environ.update(hermetic_env(session_root / "sdk", emu.url))
    tempfile.tempdir = None  # re-read TMPDIR
    yield emu
    import wandb

    wandb.teardown()
    emu.stop()
    os.environ.clear()
    os.environ.update(old)
    tempfile.tempdir = None


@pytest.fixture
def emu(emulator: Emulator) -> Iterator[Emulator]:
    """Per test: clean faults and log; fail the test if the SDK asked for a field we lack."""
    emulator.faults.clear()
    emulator.log.clear()
    emulator.log.missing_fields.clear()
    yield emulator
    emulator.faults.clear()
    missing = sorted(emulator.log.missing_fields)
    assert not missing, f"the SDK asked for GraphQL fields the emulator does not serve: {missing}"


@pytest.fixture
def fresh_cache(emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty WANDB_CACHE_DIR, so downloads really go to the server."""
    cache = tmp_path / "wandb-cache"
    cache.mkdir()
    monkeypatch.setenv("WANDB_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def wandb_teardown() -> Iterator[None]:
    yield
    import wandb

    wandb.teardown()


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator:
    """``view(dir)``: a read-only bind mount of ``dir`` (root only), removed at teardown."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("needs root for a read-only bind mount")
    made: list[Path] = []

    def view(d: Path) -> Path:
        ro = tmp_path / f"ro-view{len(made)}"
        ro.mkdir()
        subprocess.run(["mount", "--bind", str(d), str(ro)], check=True)
        made.append(ro)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        return ro
    try:
        yield view
    finally:
        for ro in made:
            subprocess.run(["umount", "-l", str(ro)], check=False)
