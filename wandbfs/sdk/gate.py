"""The gate every W&B call passes: a deadline the daemon owns, and a circuit breaker.

W&B does not only refuse connections: its API stalls (slow GraphQL, half-open connections, a
proxy that never answers), and the SDK's own retry loops and wandb-core cannot be trusted to
end in time. So every call runs in a worker thread under a capacity limiter and is abandoned
when the daemon's deadline passes (an abandoned thread keeps its limiter slot until it ends,
which bounds how many can pile up). Once W&B stops answering, the breaker opens and calls fail
at once, until a background probe - a real round trip, never an answer from the SDK's memory -
gets through. One log line when W&B stops answering, one when it answers again, with the
measured outage.

``Breaker`` is the pure state machine (injectable clock); ``Gate`` is the trio side.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, TypeVar

import trio

from wandbfs.sdk.client import BackendError, Unreachable

log = logging.getLogger(__name__)
T = TypeVar("T")


class Breaker:
    """Closed (calls go through) or open since a time (calls fail fast).

    ``trial_after``: without a background prober, an open breaker lets one call through
    every that many seconds (half-open), so a mount without a nursery still recovers.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, trial_after: float = 5.0) -> None:
        self._clock = clock
        self.trial_after = trial_after
        self.opened_at: float | None = None
        self.reason = ""
        self._last_trial = 0.0
        self.outages = 0

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self, probing: bool) -> bool:
        """May a call go to W&B now? With a prober running, only the prober closes it."""
        if self.opened_at is None:
            return True
        if probing:
            return False
        now = self._clock()
        if now - self._last_trial >= self.trial_after:
            self._last_trial = now
            return True
        return False

    def trip(self, reason: str) -> bool:
        """W&B did not answer; True if this opened the breaker (the caller logs it once)."""
        if self.opened_at is not None:
            return False
        self.opened_at = self._last_trial = self._clock()
        self.reason = reason
        self.outages += 1
        return True

    def reset(self) -> float | None:
        """W&B answered; the outage's length if the breaker was open."""
        if self.opened_at is None:
            return None
        took = self._clock() - self.opened_at
        self.opened_at = None
        self.reason = ""
        return took

    def open_for(self) -> float:
        return 0.0 if self.opened_at is None else self._clock() - self.opened_at


class Gate:
    """Runs blocking SDK calls with a deadline, fails fast while W&B is not answering.

    ``probe`` is a blocking real round trip to W&B (``WandbClient.probe``); ``run()`` is
    the background task that calls it while the breaker is open.
    """

    def __init__(self, *, limiter: trio.CapacityLimiter | None = None, call_timeout: float = 30.0,
                 probe: Callable[[], Any] | None = None, probe_interval: float = 2.0,
                 probe_timeout: float = 10.0, breaker: Breaker | None = None,
                 observe: Callable[[str, float], None] | None = None, offline: str | None = None) -> None:
        """``observe``: told each call's name and seconds (metrics); ``offline``: why W&B is
        known not to answer already (the daemon's start): the breaker starts open."""
        self.limiter = limiter or trio.CapacityLimiter(8)
        self.call_timeout = call_timeout
        self.probe = probe
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.breaker = breaker or Breaker(clock=trio.current_time)
        self.abandoned = 0           # calls whose thread was left running past the deadline
        self.calls = 0
        self.observe = observe       # (call name, seconds): W&B call latency, for metrics
        self._probing = False
        self._tripped: trio.Event | None = None
        # The probe's own slots: hung calls abandoned in the main limiter must not keep it out.
        self._probe_limiter = trio.CapacityLimiter(2)
        if offline:
            self._trip(offline)

    @property
    def offline_for(self) -> float | None:
        """Seconds since W&B stopped answering, or None while it answers."""
        return self.breaker.open_for() if self.breaker.is_open else None

    async def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """``fn(*args)`` in a worker thread; ``Unreachable`` past the deadline or while open."""
        name = getattr(fn, "__name__", "call")
        if not self.breaker.allow(self._probing):
            raise Unreachable(f"W&B is not answering (for {self.breaker.open_for():.0f}s: "
                              f"{self.breaker.reason}); not asking again until it does")
        self.calls += 1
        limit = self.call_timeout if timeout is None else timeout
        t0 = trio.current_time()
        ran_at: list[float] = []

        def timed() -> T:
            ran_at.append(time.monotonic())
            return fn(*args)
        try:
            with trio.move_on_after(limit) as scope:
                result = await trio.to_thread.run_sync(timed, limiter=self.limiter, abandon_on_cancel=True)
            if scope.cancelled_caught:
                # Only a call that itself ran past the deadline says W&B is not answering;
                # one that spent it waiting for a slot (a burst of warm-ups) says we are busy.
                if ran_at and time.monotonic() - ran_at[0] >= limit * 0.5:
                    self.abandoned += 1
                    self._trip(f"{name} got no answer within {limit:.0f}s")
                    raise Unreachable(f"W&B did not answer {name} within {limit:.0f}s")
                raise BackendError(f"{name}: no free slot for a W&B call within {limit:.0f}s (too many at once)")
        except Unreachable as e:
            self._trip(str(e))
            raise
        finally:
            took = trio.current_time() - t0
            log.debug("W&B %s%r took %.0f ms", name, args[:4], took * 1000)
            if self.observe is not None:
                self.observe(name, took)
        if not self._probing:
            self._answered()   # a trial call (no prober) got through
        return result

    def _trip(self, reason: str) -> None:
        if self.breaker.trip(reason):
            log.warning("W&B stopped answering (%s); serving what is cached, failing new names fast "
                        "until it answers", reason)
            if self._tripped is not None:
                self._tripped.set()

    def _answered(self) -> None:
        took = self.breaker.reset()
        if took is not None:
            log.warning("W&B answering again after %.0fs without an answer", took)

    async def run(self) -> None:
        """The prober: while the breaker is open, a real round trip every ``probe_interval``."""
        if self.probe is None:
            return
        self._probing = True
        try:
            while True:
                if not self.breaker.is_open:
                    self._tripped = trio.Event()
                    if not self.breaker.is_open:
                        await self._tripped.wait()
                await trio.sleep(self.probe_interval)
                if await self._probe_once():
                    self._answered()
        finally:
            self._probing = False

    async def _probe_once(self) -> bool:
        assert self.probe is not None
        with trio.move_on_after(self.probe_timeout):
            try:
                await trio.to_thread.run_sync(self.probe, limiter=self._probe_limiter, abandon_on_cancel=True)
                return True
            except BackendError as e:
                log.debug("W&B probe: %s", e)
                return False
            except Exception as e:  # noqa: BLE001 - an auth error still means W&B answered
                log.debug("W&B probe answered with %s", e)
                return True
        self.abandoned += 1
        return False


def call_with_deadline(fn: Callable[[], T], timeout: float, what: str) -> T:
    """``fn()`` in a daemon thread, abandoned after ``timeout`` (``Unreachable``).

    For the blocking parts of the daemon's start and exit that run outside trio (the SDK's
    login, ``wandb.init``, ``run.finish``): a daemon thread never holds up the process's exit.
    """
    import threading

    box: list[Any] = []

    def target() -> None:
        try:
            box.append((True, fn()))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box.append((False, e))
    t = threading.Thread(target=target, name=f"wandbfs-{what}", daemon=True)
    t.start()
    t.join(timeout)
    if not box:
        raise Unreachable(f"{what}: no answer from W&B within {timeout:.0f}s")
    ok, value = box[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]
