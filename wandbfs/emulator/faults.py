"""Fault injection and the request log.

Reliability tests need the server to misbehave on demand, per route: answer with a status,
wait, stall, reset the connection mid-body, cut the body short, flip bytes, trickle, or
answer a ranged GET with another range (or the whole object).
Rules are set at start (``--fault JSON``) or at run time through ``/_emulator/faults``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

ROUTES = ("graphql", "blob", "manifest", "upload", "artifactsV2", "file_stream", "runfile", "otel")


@dataclass
class FaultRule:
    """One misbehaviour. ``times`` counts matching requests it still applies to (None = always)."""

    route: str = "*"
    operation: str | None = None       # GraphQL operationName, for route "graphql"
    path_contains: str | None = None
    status: int | None = None          # answer this status instead of the real response
    latency_ms: float = 0.0            # delay before answering
    stall_s: float = 0.0               # send headers (and reset_after bytes) then hang this long
    reset_after: int | None = None     # close the socket after this many body bytes
    truncate: int | None = None        # send only this many body bytes but claim the full length
    corrupt: bool = False              # flip a byte in every 4 KiB of the body (same length)
    rate_bps: float | None = None      # bandwidth cap, bytes per second
    ignore_range: bool = False         # answer a ranged GET with 200 and the whole object
    wrong_range: int = 0               # answer a ranged GET with the range shifted this many bytes (206)
    wrong_size: int | None = None      # a 206's Content-Range names this object size instead
    times: int | None = None
    hits: int = 0

    def matches(self, route: str, op: str | None, path: str) -> bool:
        if self.route not in ("*", route):
            return False
        if self.operation and self.operation != op:
            return False
        if self.path_contains and self.path_contains not in path:
            return False
        return self.times is None or self.hits < self.times


class Faults:
    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def set(self, rules: list[dict[str, Any]]) -> None:
        with self._lock:
            self._rules = [FaultRule(**r) for r in rules]

    def add(self, rule: dict[str, Any]) -> None:
        with self._lock:
            self._rules.append(FaultRule(**rule))

    def clear(self) -> None:
        self.set([])

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(r) for r in self._rules]

    def take(self, route: str, op: str | None, path: str) -> FaultRule | None:
        with self._lock:
            for r in self._rules:
                if r.matches(route, op, path):
                    r.hits += 1
                    return r
        return None


@dataclass
class LogEntry:
    t: float
    method: str
    route: str
    path: str
    status: int = 0
    operation: str | None = None
    variables: dict[str, Any] | None = None
    bytes_out: int = 0
    range: str | None = None
    user_agent: str | None = None
    missing: list[str] = field(default_factory=list)
    fault: bool = False
    done: bool = False


class RequestLog:
    """Every request the emulator saw; tests count blob GETs and GraphQL operations with it."""

    def __init__(self, limit: int = 200_000) -> None:
        self._entries: list[LogEntry] = []
        self._lock = threading.Lock()
        self.limit = limit
        self.missing_fields: set[str] = set()

    def add(self, e: LogEntry) -> None:
        with self._lock:
            self._entries.append(e)
            if len(self._entries) > self.limit:
                del self._entries[: len(self._entries) - self.limit]

    def note_done(self, e: LogEntry) -> None:
        with self._lock:
            e.done = True
            self.missing_fields.update(e.missing)

    def entries(self, route: str | None = None, operation: str | None = None) -> list[LogEntry]:
        with self._lock:
            return [e for e in self._entries if (route is None or e.route == route)
                    and (operation is None or e.operation == operation)]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.entries()]


def corrupt(chunk: bytes, offset: int) -> bytes:
    """Flip one bit every 4 KiB; length is unchanged, so only a digest check catches it."""
    b = bytearray(chunk)
    for i in range(len(b)):
        if (offset + i) % 4096 == 0:
            b[i] ^= 0x01
    return bytes(b)


def pace(sent: int, started: float, rate_bps: float | None) -> None:
    if rate_bps:
        due = started + sent / rate_bps
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def misrange(rng: tuple[int, int], size: int, fault: FaultRule | None) -> tuple[int, int] | None:
    """The (start, end inclusive) a ranged GET is answered with under ``fault``: None for the
    whole object (200), or the range shifted by ``wrong_range`` and kept inside the object.
    The body always matches what the headers say; only the range is not the one asked for."""
    if fault is None:
        return rng
    if fault.ignore_range:
        return None
    start, end = rng
    if fault.wrong_range:
        start = min(max(0, start + fault.wrong_range), size - 1)
        end = min(max(start, end + fault.wrong_range), size - 1)
    return start, end
