"""Single flight: at most one load per key, however many callers want it.

A lookup that stops waiting (its ``--lookup-timeout`` passed) does not stop the load: with
the mount's nursery the load runs there and the next caller finds its result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Hashable, TypeVar

import trio

from wandbfs.sdk.client import Unreachable

T = TypeVar("T")

__all__ = ["SingleFlight"]


@dataclass
class _Flight:
    """One load in progress; every caller for the same key waits on it (single flight)."""

    done: trio.Event = field(default_factory=trio.Event)
    value: Any = None
    error: BaseException | None = None
    inline: Callable[[], Awaitable[Any]] | None = None   # no nursery: the first waiter runs it


class SingleFlight:
    """At most one load per key; callers wait for its result, each for as long as it may.

    With a nursery the load runs there, so it outlives a caller that stopped waiting (the
    next caller finds its result); without one it runs in the first waiting caller's task.
    """

    def __init__(self) -> None:
        self._inflight: dict[Hashable, _Flight] = {}
        self.nursery: trio.Nursery | None = None

    def __contains__(self, key: Hashable) -> bool:
        return key in self._inflight

    def start(self, key: Hashable, fn: Callable[[], Awaitable[Any]]) -> _Flight:
        """The load of ``key``, started now unless one is already running."""
        flight = self._inflight.get(key)
        if flight is None:
            flight = self._inflight[key] = _Flight()
            if self.nursery is not None:
                self.nursery.start_soon(self._run, key, flight, fn)
            else:
                flight.inline = fn
        return flight

    async def _run(self, key: Hashable, flight: _Flight, fn: Callable[[], Awaitable[Any]]) -> None:
        try:
            flight.value = await fn()
        except Exception as e:  # noqa: BLE001 - handed to every waiter
            flight.error = e
        except BaseException:
            flight.error = Unreachable("the lookup was abandoned (no answer in time)")
            raise
        finally:
            if self._inflight.get(key) is flight:
                del self._inflight[key]
            flight.done.set()

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[T]], timeout: float = float("inf"),
                  what: str = "") -> T:
        """The result of the (shared) load, waiting at most ``timeout`` seconds for it."""
        flight = self.start(key, fn)
        with trio.move_on_after(timeout):
            if flight.inline is not None:
                inline, flight.inline = flight.inline, None
                await self._run(key, flight, inline)
            else:
                await flight.done.wait()
        if not flight.done.is_set():
            raise Unreachable(f"W&B did not answer {what or 'a lookup'} within {timeout:g}s (--lookup-timeout)")
        if flight.error is not None:
            raise flight.error
        return flight.value  # type: ignore[no-any-return]
