"""``wandbfs emulator ...`` commands."""

from __future__ import annotations

import json
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

import click

from wandbfs.emulator.seed import seed_demo
from wandbfs.emulator.server import Emulator


@click.group("emulator")
def emulator_group() -> None:
    """A local W&B API (GraphQL + storage) for demos and tests; no account needed."""


@emulator_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=0, show_default=True, help="Port (0 picks a free one).")
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep state here so it survives restarts (default: a temporary dir).")
@click.option("--demo", is_flag=True, help="Seed org 'acme' with sample registries.")
@click.option("--url-lifetime", default=3600.0, show_default=True,
              help="Seconds a signed storage URL stays valid.")
@click.option("--fault", "faults", multiple=True,
              help='A fault rule as JSON, e.g. \'{"route":"blob","status":503,"times":2}\'.')
@click.option("-v", "--verbose", is_flag=True, help="Log every request.")
def serve(host: str, port: int, state_dir: Path | None, demo: bool, url_lifetime: float,
          faults: tuple[str, ...], verbose: bool) -> None:
    """Serve until SIGTERM/SIGINT; prints WANDB_BASE_URL=... once ready."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    tmp = None
    if state_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="wandbfs-emulator-")
        state_dir = Path(tmp.name)
    state_dir.mkdir(parents=True, exist_ok=True)
    emu = Emulator(state_dir, host=host, port=port, url_lifetime_s=url_lifetime,
                   faults=[json.loads(f) for f in faults])
    if demo:
        seed_demo(emu.store)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    emu.start()
    click.echo(f"WANDB_BASE_URL={emu.url}")
    sys.stdout.flush()
    stop.wait()
    emu.stop()
    if tmp is not None:
        tmp.cleanup()
