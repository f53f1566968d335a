"""The gate: deadlines the daemon owns, the circuit breaker, the prober (no network)."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from wandbfs.sdk.gate import Breaker, Gate, call_with_deadline
from wandbfs.sdk.client import BackendError, NotFound, Unreachable


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_once_and_reports_the_outage():
    c = Clock()
    b = Breaker(clock=c, trial_after=5)
    assert b.allow(probing=True) and not b.is_open
    assert b.trip("no answer") is True
    assert b.trip("still none") is False          # one "stopped answering" per outage
    assert not b.allow(probing=True)               # with a prober, only the prober closes it
    assert not b.allow(probing=False)              # half-open: no trial before trial_after
    c.t += 5
    assert b.allow(probing=False) and not b.allow(probing=False)   # one trial, then wait again
    c.t += 7
    assert b.reset() == pytest.approx(12)
    assert b.reset() is None and b.allow(probing=True)


def test_a_hung_call_is_abandoned_at_the_deadline_and_opens_the_breaker():
    release = threading.Event()
    started = []

    def hang() -> str:
        started.append(1)
        release.wait(10)
        return "late"

    async def main() -> None:
        gate = Gate(call_timeout=0.3, limiter=trio.CapacityLimiter(2))
        t0 = trio.current_time()
        with pytest.raises(Unreachable):
            await gate.call(hang)
        assert trio.current_time() - t0 < 1.0
        assert gate.abandoned == 1 and gate.breaker.is_open and gate.offline_for is not None
        # open: fails at once, without starting a thread
        t0 = trio.current_time()
        with pytest.raises(Unreachable):
            await gate.call(hang)
        assert trio.current_time() - t0 < 0.05 and len(started) == 1
        release.set()
    trio.run(main)


def test_errors_w_and_b_sent_do_not_open_the_breaker():
    def missing() -> None:
        raise NotFound("no such artifact")

    def server_error() -> None:
        raise BackendError("HTTP 500")

    async def main() -> None:
        gate = Gate(call_timeout=5)
        with pytest.raises(NotFound):
            await gate.call(missing)
        with pytest.raises(BackendError):
            await gate.call(server_error)
        assert not gate.breaker.is_open
    trio.run(main)


def test_the_prober_closes_the_breaker_only_with_a_real_answer():
    answers = [Unreachable("refused"), Unreachable("refused"), None]

    def probe() -> None:
        a = answers.pop(0)
        if a is not None:
            raise a

    def ok() -> str:
        return "fresh"

    async def main() -> None:
        gate = Gate(call_timeout=5, probe=probe, probe_interval=0.01, probe_timeout=1)
        async with trio.open_nursery() as n:
            n.start_soon(gate.run)
            await trio.sleep(0)
            gate._trip("test outage")
            with pytest.raises(Unreachable):
                await gate.call(ok)      # not a trial: the prober decides
            with trio.fail_after(5):
                while gate.breaker.is_open:
                    await trio.sleep(0.01)
            assert not answers
            assert await gate.call(ok) == "fresh"
            n.cancel_scope.cancel()
    trio.run(main)


def test_call_with_deadline_abandons_a_blocking_call():
    t0 = time.monotonic()
    with pytest.raises(Unreachable):
        call_with_deadline(lambda: time.sleep(5), 0.2, "sleep")
    assert time.monotonic() - t0 < 1
    assert call_with_deadline(lambda: 7, 1, "quick") == 7
    with pytest.raises(ZeroDivisionError):
        call_with_deadline(lambda: 1 / 0, 1, "boom")


def test_waiting_for_a_slot_is_not_w_and_b_failing_to_answer():
    """A burst of calls (warm-ups) queued behind busy slots must not open the breaker."""
    def slow() -> str:
        time.sleep(0.6)
        return "done"

    async def main() -> None:
        gate = Gate(call_timeout=0.3, limiter=trio.CapacityLimiter(1))
        async with trio.open_nursery() as n:
            n.start_soon(lambda: gate.call(slow, timeout=5))
            await trio.sleep(0.05)
            with pytest.raises(BackendError) as ei:
                await gate.call(slow)                  # 0.3 s waiting for the one slot
            assert not isinstance(ei.value, Unreachable)
            assert not gate.breaker.is_open
    trio.run(main)
