"""The adaptive fill's plan (model/readahead.py): what a pattern of reads asks storage for."""

from __future__ import annotations

import random

from wandbfs.model.ranges import RangeSet
from wandbfs.model.readahead import FillPlan, PlanLimits

KiB, MiB = 1 << 10, 1 << 20
READ = 128 * KiB   # what the kernel asks FUSE for at a time


def drain(plan: FillPlan) -> list[tuple[int, int]]:
    """Every request the plan wants now, as workers would take them."""
    out = []
    while (req := plan.next_request()) is not None:
        out.append(req)
    return out


def read_seq(plan: FillPlan, start: int, length: int) -> list[tuple[int, int]]:
    asked = []
    for off in range(start, start + length, READ):
        plan.on_read(off, off + READ)
        asked += drain(plan)
    return asked


def total(reqs: list[tuple[int, int]]) -> int:
    return sum(e - s for s, e in reqs)


def no_overlap(reqs: list[tuple[int, int]]) -> bool:
    seen = RangeSet()
    for s, e in reqs:
        if seen.missing(s, e) != [(s, e)]:
            return False
        seen.add(s, e)
    return True


def test_a_small_read_far_into_a_file_asks_for_about_its_own_range():
    plan = FillPlan(256 * MiB)
    plan.on_read(200 * MiB + 10, 200 * MiB + 10 + 4 * KiB)
    assert drain(plan) == [(200 * MiB, 200 * MiB + 64 * KiB)]
    assert not plan.whole


def test_a_first_read_at_zero_is_one_request_with_the_first_window():
    plan = FillPlan(256 * MiB)
    plan.on_read(0, READ)
    assert drain(plan) == [(0, 1 * MiB)]


def test_two_mib_read_from_the_start_fetches_a_few_mib_not_the_file():
    plan = FillPlan(256 * MiB)
    asked = read_seq(plan, 0, 2 * MiB)
    assert 2 * MiB <= total(asked) <= 8 * MiB and no_overlap(asked)
    assert not plan.whole


def test_the_read_ahead_window_grows_and_a_long_sequential_read_becomes_whole():
    plan = FillPlan(256 * MiB)
    sizes = []
    for off in range(0, 40 * MiB, READ):
        plan.on_read(off, off + READ)
        sizes += [e - s for s, e in drain(plan)] if not plan.whole else []
        if plan.whole:
            break
    assert plan.whole and off < 40 * MiB
    assert max(sizes) >= 4 * MiB   # windows doubled on the way
    rest = drain(plan)              # the whole file: every missing part, none twice
    assert all(e - s <= 8 * MiB for s, e in rest) and no_overlap(rest)
    assert plan.claimed.total() == 256 * MiB


def test_reads_covering_half_the_file_make_it_whole():
    rng = random.Random(1)
    plan = FillPlan(16 * MiB)
    offs = list(range(0, 16 * MiB, 64 * KiB))
    rng.shuffle(offs)
    for off in offs:
        plan.on_read(off, off + 4 * KiB)
        drain(plan)
        if plan.whole:
            break
    assert plan.whole and plan.claimed.total() >= 8 * MiB


def test_a_waiting_read_jumps_the_read_ahead_queue():
    plan = FillPlan(256 * MiB)
    for off in range(0, 3 * MiB, READ):     # reads come faster than workers take requests
        plan.on_read(off, off + READ)
    queued = list(plan._queue)
    assert len(queued) >= 2, "expected read-ahead queued behind the first request"
    far = queued[-1]
    plan.on_read(far[0], far[0] + 4 * KiB)   # a reader now waits inside the last one
    assert plan.next_request() == far


def test_interleaved_sequential_runs_each_get_their_read_ahead():
    plan = FillPlan(512 * MiB)
    a, b = 10 * MiB, 300 * MiB
    asked = []
    for i in range(24):
        for base in (a, b):
            plan.on_read(base + i * READ, base + (i + 1) * READ)
            asked += drain(plan)
    ahead_a = max(e for s, e in asked if s < 200 * MiB)
    ahead_b = max(e for s, e in asked if s >= 200 * MiB)
    assert ahead_a > a + 24 * READ and ahead_b > b + 24 * READ   # both read ahead of their reader
    assert no_overlap(asked)


def test_ranges_already_present_are_never_asked_for():
    present = RangeSet()
    present.add(0, 4 * MiB)
    present.add(10 * MiB, 12 * MiB)
    plan = FillPlan(16 * MiB, present=present)
    plan.on_read(0, READ)
    assert drain(plan) == []
    plan.go_whole()
    rest = drain(plan)
    assert rest and all(present.missing(s, e) == [(s, e)] for s, e in rest)
    assert total(rest) == 16 * MiB - 6 * MiB


def test_whole_from_the_start_asks_for_the_reads_part_first_then_the_parts_in_order():
    plan = FillPlan(64 * MiB, PlanLimits(part=8 * MiB), whole=True)
    plan.on_read(40 * MiB + 5, 40 * MiB + READ)
    reqs = drain(plan)
    assert reqs[0] == (40 * MiB, 48 * MiB)
    assert [s for s, _ in reqs[1:]] == sorted(s for s, _ in reqs[1:])
    assert total(reqs) == 64 * MiB and no_overlap(reqs)


def test_a_run_of_reads_going_down_reads_ahead_below_and_becomes_whole():
    """A safetensors load copies each tensor from its end down, one 512 KiB fault at a time."""
    plan = FillPlan(256 * MiB)
    fault = 512 * KiB
    top = 200 * MiB
    asked: list[tuple[int, int]] = []
    reads = 0
    for off in range(top - fault, 100 * MiB, -fault):
        plan.on_read(off, off + fault)
        asked += drain(plan)
        reads += 1
        if plan.whole:
            break
    assert plan.whole and reads < 40                 # was one request per fault, ~240 of them
    below = [s for s, e in asked if e <= top - 2 * fault]
    assert min(below) < top - reads * fault           # asked for below the reader, not only at it
    assert no_overlap(asked)


def test_a_file_of_one_part_is_one_request_wherever_it_is_read():
    """A server that cannot send ranges gets one whole GET (the part is the object)."""
    plan = FillPlan(3 * MiB + 7, PlanLimits(part=3 * MiB + 7), whole=True)
    plan.on_read(2 * MiB, 2 * MiB + READ)
    assert drain(plan) == [(0, 3 * MiB + 7)]
