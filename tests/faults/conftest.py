"""Fault tests get their own emulator (they stop and restart it) and the mount helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.fs.conftest import daemon_env, mount, mount_env  # noqa: F401 - re-exported fixtures
from wandbfs.emulator import Emulator
from wandbfs.emulator.seed import seed_demo


class Outage:
    """An emulator that can go down and come back on the same port with the same state."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.emu = Emulator(state).start()
        seed_demo(self.emu.store)
        self.port = self.emu.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def down(self) -> None:
        self.emu.stop()

    def up(self) -> Emulator:
        self.emu = Emulator(self.state, port=self.port).start()
        return self.emu


@pytest.fixture
def outage(emulator, tmp_path: Path) -> Iterator[Outage]:
    o = Outage(tmp_path / "outage-state")
    yield o
    try:
        o.emu.stop()
    except Exception:  # noqa: BLE001 - already down
        pass


@pytest.fixture
def outage_env(outage: Outage, tmp_path: Path) -> dict[str, str]:
    return daemon_env(tmp_path, outage.url)
