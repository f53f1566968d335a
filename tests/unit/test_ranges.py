"""RangeSet: merging, containment and gaps, checked against a brute-force model."""

import random

from wandbfs.model.ranges import RangeSet


def test_merge_and_contains():
    r = RangeSet()
    r.add(10, 20)
    r.add(30, 40)
    assert r.intervals() == [(10, 20), (30, 40)]
    assert r.contains(12, 18) and not r.contains(15, 35) and r.contains(5, 5)
    r.add(20, 30)
    assert r.intervals() == [(10, 40)] and r.contains(10, 40)
    r.add(0, 5)
    assert r.prefix() == 5 and r.missing(0, 50) == [(5, 10), (40, 50)]
    r.add(5, 10)
    assert r.prefix() == 40 and r.total() == 40


def test_against_a_model():
    rng = random.Random(7)
    for _ in range(200):
        r, model = RangeSet(), set()
        for _ in range(rng.randint(1, 12)):
            a = rng.randint(0, 100)
            b = a + rng.randint(0, 30)
            r.add(a, b)
            model.update(range(a, b))
        a = rng.randint(0, 120)
        b = a + rng.randint(0, 40)
        assert r.contains(a, b) == all(x in model for x in range(a, b))
        gaps = {x for s, e in r.missing(a, b) for x in range(s, e)}
        assert gaps == {x for x in range(a, b) if x not in model}
        assert r.total() == len(model)
        ivs = r.intervals()
        assert all(ivs[i][1] < ivs[i + 1][0] for i in range(len(ivs) - 1))  # merged, sorted


def test_total_is_kept_right_as_ranges_merge():
    rng = random.Random(9)
    rs = RangeSet()
    for _ in range(2000):
        s = rng.randrange(0, 10_000)
        rs.add(s, s + rng.randrange(1, 300))
        assert rs.total() == sum(e - s for s, e in rs.intervals())
