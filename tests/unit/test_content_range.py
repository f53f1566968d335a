"""Content-Range checks (wandbfs.model.ranges) and the fetch policy's timeouts: a 206 body is written
at the requested offset only when the server says it is exactly that range of that object."""

from __future__ import annotations

import pytest

from wandbfs.fill.getter import FetchPolicy
from wandbfs.model.ranges import content_range_problem, parse_content_range

SIZE = 10_000


@pytest.mark.parametrize("value, parsed", [
    ("bytes 0-99/10000", (0, 100, 10000)),
    ("bytes 9999-9999/10000", (9999, 10000, 10000)),
    ("bytes 5-9/*", (5, 10, None)),
    ("BYTES 5-9/10", (5, 10, 10)),                 # the unit is case-insensitive
    ("  bytes   5-9/10  ", (5, 10, 10)),
    ("bytes 0-9223372036854775806/9223372036854775807", (0, 2**63 - 1, 2**63 - 1)),
])
def test_parse_content_range(value: str, parsed: tuple[int, int, int | None]) -> None:
    assert parse_content_range(value) == parsed


@pytest.mark.parametrize("value", [
    None, "", "bytes */10000",                     # the unsatisfied form names no range
    "items 0-9/10", "bytes=0-9/10", "bytes 0-9", "bytes 0-/10", "bytes -9/10",
    "bytes 9-0/10",                                # last before first
    "bytes 0-10/10",                               # last byte past the object
    "bytes +0-9/10", "bytes 0-9/1e3", "bytes 0x0-9/10", "bytes ０-9/10", "bytes ²-9/10",
    "bytes 0-9/10, bytes 20-29/30",
])
def test_unparseable_content_range(value: str | None) -> None:
    assert parse_content_range(value) is None


def test_the_requested_range_of_the_right_object_is_accepted() -> None:
    assert content_range_problem("bytes 1000-1999/10000", 1000, 2000, SIZE) is None
    assert content_range_problem("bytes 1000-1999/*", 1000, 2000, SIZE) is None   # size unknown to it
    assert content_range_problem("bytes 0-9999/10000", 0, SIZE, SIZE) is None


@pytest.mark.parametrize("value, needle", [
    ("bytes 1001-2000/10000", "for a request of bytes 1000-1999"),   # shifted
    ("bytes 999-1998/10000", "for a request of bytes 1000-1999"),
    ("bytes 1000-1499/10000", "for a request of bytes 1000-1999"),   # clipped short
    ("bytes 1000-2999/10000", "for a request of bytes 1000-1999"),   # more than asked
    ("bytes 0-9999/10000", "for a request of bytes 1000-1999"),      # the whole object, as a 206
    ("bytes 1000-1999/20000", "names a 20000-byte object, the manifest says 10000"),
    ("bytes 1000-1999/9999", "names a 9999-byte object"),
    ("bytes */10000", "unusable Content-Range"),
    (None, "no Content-Range in a 206"),
])
def test_any_other_range_or_object_is_refused(value: str | None, needle: str) -> None:
    problem = content_range_problem(value, 1000, 2000, SIZE)
    assert problem is not None and needle in problem


def test_connect_timeout_follows_the_read_timeout() -> None:
    assert FetchPolicy(read_timeout=3).connect_timeout == 3
    assert FetchPolicy(read_timeout=0.5).connect_timeout == 0.5
    assert FetchPolicy(read_timeout=30).connect_timeout == 10          # capped, as before
    assert FetchPolicy().connect_timeout == 10
    assert FetchPolicy(read_timeout=60, max_connect_timeout=20).connect_timeout == 20
