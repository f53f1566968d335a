"""The shared cache tier on one host (#14): seeding it with `wandbfs prefetch --shared`, a tier
that cannot be reached, and what `wandbfs status` and the metrics say of it."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import urllib.request

import pytest

from tests.fs.conftest import blob_gets, run_cli
from tests.helpers import wait_for
from tests.shared.conftest import endpoint_env
from wandbfs.emulator.seed import publish

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(180)]

MiB = 1 << 20


def object_key(data: bytes) -> str:
    md5 = hashlib.md5(data).hexdigest()
    return f"obj/md5/{md5[:2]}/{md5[2:]}"


def test_prefetch_shared_seeds_the_tier_for_every_host(emu, mount, mount_env, tmp_path):
    big = random.Random(21).randbytes(17 * MiB + 3)
    small = b"config: 1\n"
    publish(emu.store, "acme", "model", "seeded", {"w.bin": big, "cfg.yaml": small})
    tier = tmp_path / "tier"
    tier.mkdir()
    r = run_cli(["prefetch", "-q", "--cache-dir", str(tmp_path / "prolog-cache"), "--shared",
                 "--shared-cache", str(tier), "acme/wandb-registry-model/seeded:v0"], mount_env)
    assert r.returncode == 0, r.stderr
    assert "2 published to" in r.stdout
    assert (tier / object_key(big)).read_bytes() == big and (tier / object_key(small)).read_bytes() == small
    # seeding again publishes nothing: the tier has both
    again = run_cli(["prefetch", "-q", "--cache-dir", str(tmp_path / "prolog-cache"), "--shared",
                     "--shared-cache", str(tier), "acme/wandb-registry-model/seeded:v0"], mount_env)
    assert again.returncode == 0 and "0 published to" in again.stdout, again.stdout + again.stderr
    # a node that never saw it reads both from the tier, with W&B storage refusing every blob
    m = mount("--cache-dir", str(tmp_path / "node-cache"), "--shared-cache", str(tier), "--no-lineage")
    v0 = m.path / "acme/model/seeded/v0"
    emu.log.clear()
    emu.faults.set([{"route": "blob", "status": 403}])
    assert (v0 / "w.bin").read_bytes() == big and (v0 / "cfg.yaml").read_bytes() == small
    assert not [g for g in blob_gets(emu) if g.status in (200, 206)]
    r = run_cli(["status", "--json", str(m.path)], mount_env)
    s = json.loads(r.stdout.splitlines()[0])
    assert s["shared_cache"] == str(tier) and s["bytes_from_shared"] == len(big) + len(small)
    assert s["bytes_downloaded"] == 0
    human = run_cli(["status", str(m.path)], mount_env).stdout
    assert f"from the shared cache {tier}" in human


def test_prefetch_shared_needs_a_tier(mount_env):
    r = run_cli(["prefetch", "--shared", "acme/wandb-registry-model/seeded:v0"], dict(mount_env, WANDBFS_SHARED_CACHE=""))
    assert r.returncode != 0 and "--shared needs the tier" in r.stderr


def test_an_unreachable_tier_falls_back_to_wandb_with_one_log_line(emu, mount, mount_env, tmp_path):
    pytest.importorskip("boto3")
    files = {f"f{i}.bin": random.Random(i).randbytes(3 * MiB + i) for i in range(3)}
    publish(emu.store, "acme", "model", "no-tier", files)
    with socket.socket() as s:       # a port nothing listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(mount_env, **endpoint_env(f"http://127.0.0.1:{port}"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    m = mount("--cache-dir", str(tmp_path / "c"), "--shared-cache", "s3://nowhere/wandbfs", "--no-lineage",
              "--metrics-addr", f"127.0.0.1:{metrics_port}", env=env)
    v0 = m.path / "acme/model/no-tier/v0"
    for name, data in files.items():
        assert (v0 / name).read_bytes() == data
    lines = [line for line in m.log.splitlines() if "shared cache unreachable" in line]
    assert len(lines) == 1, lines
    s = json.loads(run_cli(["status", "--json", str(m.path)], env).stdout.splitlines()[0])
    assert s["shared_cache_up"] is False and s["bytes_downloaded"] == sum(map(len, files.values()))
    body = wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode(),
                    timeout=10, what="metrics")
    assert 'wandbfs_fetched_bytes_total{source="wandb"}' in body and 'source="shared"' in body


def test_a_bad_shared_cache_url_is_one_line(mount_env, tmp_path):
    mp = tmp_path / "m"
    mp.mkdir()
    r = run_cli(["mount", str(mp), "--shared-cache", "relative/dir"], mount_env)
    assert r.returncode == 1 and "must be an absolute path" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli(["mount", str(mp), "--shared-cache", "gs://bucket/x"], mount_env)
    assert r.returncode == 1 and "only s3:// URLs and absolute directories" in r.stderr
