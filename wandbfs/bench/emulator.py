"""The bench's emulator process: ``wandbfs emulator serve``, with TCP_NODELAY on its sockets.

    python -m wandbfs.bench.emulator --state DIR [--host H] [--port P] [--stock]

The stock server (``wandbfs/emulator/server.py``) writes a response's headers and its
body with two ``send`` calls on a socket that keeps Nagle's algorithm on. On a kept-alive
connection the body then waits for the ACK of the headers, which the client delays by
about 40 ms: every GraphQL answer and every blob GET after a connection's first costs
~44 ms on loopback (measured: 0.5 ms with TCP_NODELAY). That is the server's cost, not
the client's, and it would swamp every per-request figure (R3, R4, R5, R9), so the bench
sets ``disable_nagle_algorithm`` on the handler class here, in its own process, and
leaves the emulator's source alone. ``--stock`` runs it unchanged.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--url-lifetime", type=float, default=86400.0)
    ap.add_argument("--stock", action="store_true", help="Keep the emulator's Nagle behaviour.")
    a = ap.parse_args(argv)

    from wandbfs.emulator import server

    if not a.stock:
        server._Handler.disable_nagle_algorithm = True  # StreamRequestHandler.setup sets TCP_NODELAY
    a.state.mkdir(parents=True, exist_ok=True)
    emu = server.Emulator(a.state, host=a.host, port=a.port, url_lifetime_s=a.url_lifetime)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    emu.start()
    print(f"WANDB_BASE_URL={emu.url}", flush=True)
    stop.wait()
    emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
