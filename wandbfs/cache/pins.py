"""Pinned versions: objects that cache eviction must never remove.

A pin names one immutable version (``acme/wandb-registry-model/resnet50:v3``) and lists
its objects' cache paths, so eviction needs no W&B call to know what to keep. Pinning an
alias pins the version the alias points to at that moment (what ``via`` records): a job
that pinned ``production`` keeps the bytes it was started with even after the alias moves.

Stored in ``<cache>/wandbfs-meta/pins.json`` beside the objects, so every mount and every
``wandbfs`` command on that cache agrees; read-modify-write under a lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["Pin", "PinStore"]


@dataclass(frozen=True)
class Pin:
    name: str                    # org/wandb-registry-R/collection:vN
    via: str | None              # the alias it was pinned through, if any
    objects: tuple[str, ...]     # cache paths, relative to the cache root
    size: int
    pinned_at: float


class PinStore:
    def __init__(self, cache_root: Path) -> None:
        self.cache_root = Path(cache_root)
        self.dir = self.cache_root / "wandbfs-meta"
        self.path = self.dir / "pins.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.dir / "pins.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) and isinstance(data.get("pins"), dict) else {"pins": {}}
        except FileNotFoundError:
            return {"pins": {}}
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable pins file %s: %s", self.path, e)
            return {"pins": {}}

    def _save(self, data: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".pins-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def all(self) -> list[Pin]:
        pins = self._load()["pins"]
        return [Pin(name, p.get("via"), tuple(p.get("objects", ())), int(p.get("size", 0)),
                    float(p.get("pinned_at", 0))) for name, p in sorted(pins.items())]

    def add(self, name: str, objects: list[Path], size: int, via: str | None = None) -> Pin:
        rel = tuple(sorted({os.path.relpath(p, self.cache_root) for p in objects}))
        with self._locked():
            data = self._load()
            data["pins"][name] = {"via": via, "objects": list(rel), "size": size, "pinned_at": time.time()}
            self._save(data)
        return Pin(name, via, rel, size, data["pins"][name]["pinned_at"])

    def remove(self, names: set[str], via: tuple[str, str] | None = None) -> list[str]:
        """Drop pins by exact name, and those pinned through alias ``via = (collection prefix, alias)``."""
        with self._locked():
            data = self._load()
            gone = [n for n, p in data["pins"].items()
                    if n in names or (via is not None and n.rsplit(":", 1)[0] == via[0] and p.get("via") == via[1])]
            for n in gone:
                del data["pins"][n]
            if gone:
                self._save(data)
        return sorted(gone)

    def objects(self, pins: list[Pin] | None = None) -> set[Path]:
        """Absolute cache paths of every pinned object (what eviction keeps); of ``pins``
        if given (already read)."""
        return {self.cache_root / rel for pin in (self.all() if pins is None else pins) for rel in pin.objects}
