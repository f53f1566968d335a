"""Retry-After as storage and W&B send it (RFC 9110 10.2.3): seconds or an HTTP-date."""

from __future__ import annotations

from email.utils import formatdate

from wandbfs.model.retry_after import next_wait, retry_after_s


def test_delta_seconds():
    assert retry_after_s("3") == 3.0
    assert retry_after_s(" 120 ") == 120.0


def test_http_date_is_seconds_from_now():
    now = 1_800_000_000.0
    assert retry_after_s(formatdate(now + 7, usegmt=True), now=now) == 7.0
    assert retry_after_s(formatdate(now - 30, usegmt=True), now=now) == 0.0   # in the past: now


def test_absent_or_unreadable_means_our_own_backoff():
    for value in (None, "", "soon", "-1", "1.5e3x"):
        assert retry_after_s(value) is None


def test_next_wait_is_what_the_server_asked_within_the_budget():
    assert next_wait(None, 0.25, waited=9.0, budget=10.0) == 0.25      # not asked: our backoff
    assert next_wait(0.0, 0.25, waited=0.0, budget=10.0) == 0.0        # "0" means now, not our backoff
    assert next_wait(3.0, 0.25, waited=6.0, budget=10.0) == 3.0
    assert next_wait(3.0, 0.25, waited=7.0, budget=10.0) is None       # would reach the budget: give up
    assert next_wait(30.0, 0.25, waited=0.0, budget=10.0) is None
