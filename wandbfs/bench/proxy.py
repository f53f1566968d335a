"""A small TCP proxy that delays every byte by a fixed time in each direction.

This kernel has no ``netem`` qdisc, so the WAN link's latency comes from here and its rate
from ``tc tbf`` on the veth pair (see ``netns.py``). Each direction of each connection has a
reader thread that stamps chunks with ``arrival + delay`` and a writer thread that sends
them when due, so the delay is added once per direction whatever the chunking, and bytes
keep flowing while earlier ones wait (a delay line, not a stop-and-wait). The line holds at
most ``--max-queue`` bytes per direction (default 16 MiB, well above 1 Gbit/s x 10 ms),
so a slow receiver pushes back on the sender instead of growing memory.

    python -m wandbfs.bench.proxy --delay-ms 10 --map 10.231.0.1:0=127.0.0.1:8080 [--map ...]

prints one JSON line ``{"10.231.0.1:0=127.0.0.1:8080": 41234, ...}`` (the listening
ports) once it accepts connections, and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import socket
import sys
import threading
import time
from typing import Callable

CHUNK = 256 * 1024


class _DelayLine:
    """One direction of one connection: src -> (delay) -> dst."""

    def __init__(self, src: socket.socket, dst: socket.socket, delay_s: float, max_queue: int,
                 on_done: Callable[[bool], None]) -> None:
        self.src, self.dst, self.delay, self.max_queue = src, dst, delay_s, max_queue
        self.q: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued = 0
        self.cv = threading.Condition()
        self.dead = False
        self.on_done = on_done

    def start(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def kill(self) -> None:
        with self.cv:
            self.dead = True
            self.cv.notify_all()

    def _read(self) -> None:
        while True:
            try:
                data = self.src.recv(CHUNK)
            except OSError:
                data = b""
            due = time.monotonic() + self.delay
            with self.cv:
                while self.queued > self.max_queue and not self.dead:
                    self.cv.wait()
                if self.dead:
                    return
                self.q.append((due, data or None))
                self.queued += len(data)
                self.cv.notify_all()
            if not data:
                return

    def _write(self) -> None:
        ok = False
        try:
            while True:
                with self.cv:
                    while True:
                        if self.dead:
                            return
                        if self.q:
                            due, data = self.q[0]
                            wait = due - time.monotonic()
                            if wait <= 0:
                                self.q.popleft()
                                self.queued -= len(data or b"")
                                self.cv.notify_all()
                                break
                            self.cv.wait(wait)
                        else:
                            self.cv.wait()
                if data is None:  # the sender half-closed: pass it on
                    try:
                        self.dst.shutdown(socket.SHUT_WR)
                        ok = True
                    except OSError:
                        pass
                    return
                try:
                    self.dst.sendall(data)
                except OSError:
                    return
        finally:
            self.on_done(ok)


class _Conn:
    def __init__(self, client: socket.socket, upstream: socket.socket, delay_s: float, max_queue: int) -> None:
        self.socks = (client, upstream)
        self.lock = threading.Lock()
        self.done = 0
        self.closed = False
        self.lines = (_DelayLine(client, upstream, delay_s, max_queue, self._line_done),
                      _DelayLine(upstream, client, delay_s, max_queue, self._line_done))

    def start(self) -> None:
        for line in self.lines:
            line.start()

    def _line_done(self, ok: bool) -> None:
        """A writer ended: after both half-closes, or on any error, close the connection."""
        with self.lock:
            self.done += 1
            finished = self.done == 2 or not ok
            if finished and self.closed:
                return
            self.closed = self.closed or finished
        if finished:
            self._close()

    def _close(self) -> None:
        for line in self.lines:
            line.kill()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def _serve(listener: socket.socket, target: tuple[str, int], delay_s: float, max_queue: int) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _Conn(client, upstream, delay_s, max_queue).start()


def _hostport(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--delay-ms", type=float, required=True, help="Delay added in each direction.")
    ap.add_argument("--map", action="append", required=True, metavar="LISTEN=TARGET",
                    help="host:port=host:port (listen port 0 picks one); repeatable.")
    ap.add_argument("--max-queue", type=int, default=16 << 20, help="Bytes in flight per direction.")
    args = ap.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ports = {}
    listeners = []
    for m in args.map:
        listen, _, target = m.partition("=")
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(_hostport(listen))
        ls.listen(128)
        listeners.append(ls)
        ports[m] = ls.getsockname()[1]
        threading.Thread(target=_serve, args=(ls, _hostport(target), args.delay_ms / 1000, args.max_queue),
                         daemon=True).start()
    print(json.dumps(ports), flush=True)
    stop.wait()
    for ls in listeners:
        ls.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
