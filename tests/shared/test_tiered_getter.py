"""``TieredGetter``'s choices between the tier and W&B, on a real directory tier. W&B's side
is a recording getter here (the mount tests in test_cluster.py use the emulator): what is
tested is which source each part comes from and how long a host waits for another."""

from __future__ import annotations

import base64
import hashlib
import random
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import wait_for
from wandbfs.fill.getter import FetchStats
from wandbfs.fill.tiered import TieredGetter
from wandbfs.model.manifest import ManifestEntry
from wandbfs.shared.lease import LeaseRecord
from wandbfs.shared.stores import open_store
from wandbfs.shared.tier import PART, SharedTier

pytestmark = pytest.mark.timeout(60)


class WandbSide:
    """Stands for the signed-URL getter: serves the object's bytes and records each range."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.ranges: list[tuple[int, int]] = []

    def fetch(self, start: int, end: int, sink) -> None:
        self.ranges.append((start, end))
        sink(start, self.data[start:end])


def entry_for(data: bytes) -> ManifestEntry:
    return ManifestEntry("w.bin", base64.b64encode(hashlib.md5(data).digest()).decode(), len(data))


def getter(tier: SharedTier, data: bytes, wandb: WandbSide) -> TieredGetter:
    md5 = hashlib.md5(data).hexdigest()
    return TieredGetter(tier, f"obj/md5/{md5[:2]}/{md5[2:]}", entry_for(data), wandb, None, lambda: True,
                        lambda: False, FetchStats())


def test_a_live_holder_that_publishes_nothing_is_waited_for_once(tmp_path: Path) -> None:
    """A holder that renews its lease but never publishes (stuck on its own link) holds a
    reader up at most ``wait_limit`` once: the fill fetches the rest itself at once."""
    data = random.Random(1).randbytes(3 * PART)
    tier = SharedTier(open_store(str(tmp_path / "tier")), wait_limit=1.0)
    wandb = WandbSide(data)
    g = getter(tier, data, wandb)
    folder = tier.fill_folder(g.rel)
    stuck = LeaseRecord(0, "other-host:1:beef", time.time() + 3600, True)   # whole, far from expiry
    tier.store.write(f"{folder}/lease.0", stuck.encode())
    out = bytearray(len(data))
    t0 = time.monotonic()
    g.fetch(0, len(data), lambda pos, chunk: out.__setitem__(slice(pos, pos + len(chunk)), chunk))
    took = time.monotonic() - t0
    assert bytes(out) == data
    assert wandb.ranges == [(0, PART), (PART, 2 * PART), (2 * PART, 3 * PART)]
    assert 1.0 <= took < 3.0, f"{took:.1f}s: waited for the stuck holder more than once"
    wait_for(lambda: sorted(tier.store.names(folder)) == ["lease.0", "part.0", "part.1", "part.2"], timeout=10,
             what="the parts to be published for the others")


def test_parts_come_from_the_tier_when_another_host_published_them(tmp_path: Path) -> None:
    data = random.Random(2).randbytes(2 * PART + 100)
    tier = SharedTier(open_store(str(tmp_path / "tier")))
    wandb = WandbSide(data)
    g = getter(tier, data, wandb)
    tier.put_part(g.rel, 1, data[PART:2 * PART])          # another host's
    out = bytearray(len(data))
    g.fetch(0, len(data), lambda pos, chunk: out.__setitem__(slice(pos, pos + len(chunk)), chunk))
    assert bytes(out) == data
    assert wandb.ranges == [(0, PART), (2 * PART, 2 * PART + 100)]   # only what the tier lacked
    assert g.lease is not None and g.lease.held                     # it took the free lease to fetch
    g.finish(None, bad=False)
    assert not [n for n in tier.store.names(tier.fill_folder(g.rel)) if n.startswith("lease.")]


def test_workers_asking_for_one_part_share_it(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(PART)
    tier = SharedTier(open_store(str(tmp_path / "tier")))
    gate = threading.Event()
    entered = threading.Event()

    class Slow(WandbSide):
        def fetch(self, start: int, end: int, sink) -> None:
            entered.set()
            gate.wait(10)
            super().fetch(start, end, sink)
    wandb = Slow(data)
    g = getter(tier, data, wandb)
    sink_calls: list[int] = []
    threads = [threading.Thread(target=g.fetch, args=(a, a + 4096, lambda pos, c: sink_calls.append(pos)))
               for a in (0, 4096, 1 << 20)]
    for t in threads:
        t.start()
    assert entered.wait(10)      # one worker is fetching part 0 from "W&B" and holds it there
    wait_for(lambda: all(t.is_alive() for t in threads) and len(g._inflight) == 1, timeout=5,
             what="the other two to wait for that part")
    gate.set()
    for t in threads:
        t.join(10)
    assert wandb.ranges == [(0, PART)]
