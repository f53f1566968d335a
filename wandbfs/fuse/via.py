"""Which alias a process came through to a version, for the lineage record.

``cat coll/production/model.pt``: the kernel resolves the ``production`` symlink with a
``readlink`` from the reading process, then opens ``v3/model.pt``; the open alone cannot
tell ``production/`` from ``v3/``. The readlink notes (pid, version) -> alias here, and an
open by the same pid of the same version soon after records the use as
``coll:production`` (the name the reader asked for) instead of ``coll:v3``.
"""

from __future__ import annotations

import time
from typing import Callable

from wandbfs.fuse.nodes import VersionKey

__all__ = ["AliasVia"]


class AliasVia:
    """(pid, version) -> the alias last read through, valid for ``FRESH_S`` seconds."""

    FRESH_S = 60.0
    KEPT = 10_000   # beyond this, entries too old to count are dropped

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: dict[tuple[int, VersionKey], tuple[str, float]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def note(self, pid: int, version: VersionKey, alias: str) -> None:
        """Process ``pid`` just resolved ``alias`` to ``version``."""
        now = self.clock()
        if len(self._seen) >= self.KEPT:
            self._seen = {k: v for k, v in self._seen.items() if now - v[1] < self.FRESH_S}
        self._seen[(pid, version)] = (alias, now)

    def alias(self, pid: int, version: VersionKey) -> str | None:
        """The alias ``pid`` came through to ``version`` within ``FRESH_S``, if any."""
        seen = self._seen.get((pid, version))
        if seen is None or self.clock() - seen[1] >= self.FRESH_S:
            return None
        return seen[0]
