"""W&B outages: cached versions stay readable, nothing hangs, the mount recovers by itself."""

from __future__ import annotations

import errno
import os
import time

import pytest

from tests.helpers import wait_for

COLL = "acme/model/bert-base"


def test_outage_serves_cached_versions_then_recovers(outage, outage_env, mount):
    m = mount("--list-ttl", "0.5", "--alias-ttl", "0.5", "--read-timeout", "2", env=outage_env)
    coll = m.path / COLL
    cached = (coll / "production/config.json").read_bytes()
    outage.down()
    time.sleep(1.0)  # let the listing TTLs lapse, so the mount has to ask W&B again
    t0 = time.monotonic()
    assert {"v0", "v1", "v2", "production"} <= set(os.listdir(coll))   # last known listing
    assert (coll / "production/config.json").read_bytes() == cached    # cached bytes
    with pytest.raises(OSError) as ei:
        (coll / "v2/pytorch_model.bin").read_bytes()                   # never fetched: EIO, no hang
    assert ei.value.errno in (errno.EIO, errno.ENOENT)
    assert time.monotonic() - t0 < 60
    outage.up()
    wait_for(lambda: _readable(coll / "v2/pytorch_model.bin"), timeout=60, what="recovery after the outage")
    assert "W&B stopped answering" in m.log and "W&B answering again" in m.log


def test_mount_started_during_an_outage_serves_the_cache(outage, outage_env, mount):
    first = mount("--project", "offline-lineage", env=outage_env)
    cached = (first.path / COLL / "v1/config.json").read_bytes()
    (first.path / COLL / "v0/config.json").read_bytes()
    assert first.unmount().returncode == 0
    before = len(outage.emu.uses())
    outage.down()
    second = mount("--project", "offline-lineage", env=outage_env)
    assert (second.path / COLL / "v1/config.json").read_bytes() == cached
    assert "production" in os.listdir(second.path / COLL)
    (second.path / COLL / "v0/config.json").read_bytes()  # a cached version, used while W&B is down
    emu = outage.up()
    second_run = lambda: [u for u in emu.uses()[before:] if u["run"] and "offline-lineage" in u["run"]]  # noqa: E731
    wait_for(lambda: any((u["used_as"] or "").endswith("bert-base:v0") for u in second_run()), timeout=90,
             what="the use made during the outage to be recorded after it")


def _readable(p) -> bool:
    try:
        p.read_bytes()
        return True
    except OSError:
        return False
