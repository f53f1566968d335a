"""Fault injection and the request log.

Reliability tests need the server to misbehave on demand, per route: answer with a status,
wait, stall, reset the connection mid-body, cut the body short, flip bytes, trickle, or
answer a ranged GET with another range (or the whole object).
Rules are set at start (``--fault JSON``) or at run time through ``/_emulator/faults``.
An injected status answers as W&B would on that route (a GraphQL error document, an S3-style
XML error from storage), a 429 with ``Retry-After``; ``stall_s`` hangs GraphQL as well as blobs.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any
from xml.sax.saxutils import escape

ROUTES = ("graphql", "blob", "manifest", "upload", "artifactsV2", "file_stream", "runfile", "otel")
STORAGE_ROUTES = ("blob", "manifest", "upload", "runfile")   # what a cloud bucket answers on W&B

# The ``extensions.code`` W&B's GraphQL server (gorilla, gqlgen) puts on an error it answers
# with this HTTP status; the SDK only reads ``message`` (wandb-core's ErrorFromWBResponse and
# normalize_exceptions), so the codes follow GraphQL convention where W&B's own are unknown.
GRAPHQL_CODES = {400: "BAD_USER_INPUT", 401: "UNAUTHENTICATED", 403: "PERMISSION_ERROR", 404: "NOT_FOUND",
                 409: "CONFLICT", 429: "RATE_LIMIT_EXCEEDED", 500: "INTERNAL_SERVER_ERROR"}
# S3's error codes by status (GCS answers the same XML shape through its S3-compatible API).
STORAGE_CODES = {400: "InvalidRequest", 401: "AccessDenied", 403: "AccessDenied", 404: "NoSuchKey",
                 416: "InvalidRange", 429: "SlowDown", 500: "InternalError", 503: "ServiceUnavailable"}


@dataclass
class FaultRule:
    """One misbehaviour. ``times`` counts matching requests it still applies to (None = always)."""

    route: str = "*"
    operation: str | None = None       # GraphQL operationName, for route "graphql"
    path_contains: str | None = None
    status: int | None = None          # answer this status instead of the real response, in W&B's shape
    message: str | None = None         # that answer's error message (default: the status's reason)
    retry_after: float | None = None   # its Retry-After, seconds (None: 1 for a 429, absent otherwise)
    latency_ms: float = 0.0            # delay before answering
    stall_s: float = 0.0               # blobs: send headers (and reset_after bytes) then hang this long;
                                       # other routes (GraphQL, ...): hold the request unanswered, then close
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

    def retry_after_header(self) -> str | None:
        """``Retry-After`` for this rule's answer: whole seconds, as W&B and GCS send it."""
        secs = self.retry_after if self.retry_after is not None else (1.0 if self.status == 429 else None)
        return None if secs is None else str(max(0, math.ceil(secs)))


def fault_body(rule: FaultRule, route: str) -> tuple[bytes, str]:
    """The body and content type of an injected ``rule.status`` on ``route``, shaped as W&B's
    answer there: a GraphQL error document on ``graphql`` (what wandb-core parses into the
    SDK's ``CommError``), S3/GCS-style XML on storage, ``{"error": ...}`` on W&B's other routes."""
    status = rule.status or 500
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    message = rule.message or reason.lower()
    if route == "graphql":
        code = GRAPHQL_CODES.get(status, "INTERNAL_SERVER_ERROR" if status >= 500 else "BAD_REQUEST")
        doc = {"errors": [{"message": message, "extensions": {"code": code}}], "data": None}
        return json.dumps(doc).encode(), "application/json"
    if route in STORAGE_ROUTES:
        code = STORAGE_CODES.get(status, "InternalError" if status >= 500 else "InvalidRequest")
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
               f"<Message>{escape(message)}</Message></Error>")
        return xml.encode(), "application/xml"
    return json.dumps({"error": message}).encode(), "application/json"


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
    response: Any = None   # the GraphQL answer sent, when RequestLog.keep_responses (fidelity tests)


class RequestLog:
    """Every request the emulator saw; tests count blob GETs and GraphQL operations with it."""

    def __init__(self, limit: int = 200_000) -> None:
        self._entries: list[LogEntry] = []
        self._lock = threading.Lock()
        self.limit = limit
        self.missing_fields: set[str] = set()
        self.keep_responses = False   # off by default: a long-lived server must not hold every answer

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
