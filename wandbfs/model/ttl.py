"""A small map whose entries expire: the bookkeeping behind listing, alias and miss caches.

Pure logic with an injectable clock, so TTL behaviour is tested without sleeping.
"""

from __future__ import annotations

import time
from typing import Callable, Generic, Hashable, TypeVar

V = TypeVar("V")
_MISSING = object()


class TtlMap(Generic[V]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._items: dict[Hashable, tuple[float, V]] = {}

    def get(self, key: Hashable, default: V | None = None) -> V | None:
        item = self._items.get(key)
        if item is None:
            return default
        expires, value = item
        if expires <= self._clock():
            return default  # kept for stale(); replaced by the next put()
        return value

    def __contains__(self, key: Hashable) -> bool:
        return self.get(key, _MISSING) is not _MISSING  # type: ignore[arg-type]

    def put(self, key: Hashable, value: V, ttl: float) -> V:
        self._items[key] = (self._clock() + ttl, value)
        return value

    def stale(self, key: Hashable) -> V | None:
        """The last value even if expired: what offline serving falls back to."""
        item = self._items.get(key)
        return item[1] if item else None

    def drop(self, key: Hashable) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()

    def drop_where(self, pred: Callable[[Hashable], bool]) -> int:
        """Drop every key ``pred`` accepts (a refresh of one subtree); returns how many."""
        keys = [k for k in self._items if pred(k)]
        for k in keys:
            del self._items[k]
        return len(keys)

    def expire_where(self, pred: Callable[[Hashable], bool]) -> list[Hashable]:
        """Expire (keep as stale) every key ``pred`` accepts; returns those keys."""
        keys = [k for k in self._items if pred(k)]
        for k in keys:
            self._items[k] = (float("-inf"), self._items[k][1])
        return keys

    def __len__(self) -> int:
        return len(self._items)
