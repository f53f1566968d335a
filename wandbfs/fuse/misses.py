"""The names the kernel caches as missing, so ``refresh`` can take them back.

A lookup that finds nothing above a version answers with a negative entry that the kernel
keeps for ``--negative-ttl``: repeated misses never reach the daemon. A version or alias
created since would stay invisible that long; ``wandbfs refresh`` (and SIGHUP) asks the
kernel to drop those entries (``invalidate_entry``), and this is the list of them.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["Misses"]


class Misses:
    """Negative entries handed to the kernel, per parent inode; bounded (forgetting only
    means a refresh waits for the TTL instead)."""

    KEPT = 10_000

    def __init__(self, kept: int = KEPT) -> None:
        self.kept = kept
        self._by_parent: dict[int, set[bytes]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def remember(self, parent: int, name: bytes) -> None:
        """The kernel now caches ``name`` in directory ``parent`` as missing."""
        if self._count >= self.kept:
            self._by_parent.clear()
            self._count = 0
        names = self._by_parent.setdefault(parent, set())
        if name not in names:
            names.add(name)
            self._count += 1

    def take(self, wanted: Callable[[int], bool]) -> list[tuple[int, bytes]]:
        """Remove and return the (parent, name) pairs of every parent ``wanted`` accepts."""
        out: list[tuple[int, bytes]] = []
        for parent in [p for p in self._by_parent if wanted(p)]:
            names = self._by_parent.pop(parent)
            self._count -= len(names)
            out += [(parent, name) for name in names]
        return out
