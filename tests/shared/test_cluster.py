"""The shared cache tier across simulated hosts (#14): each host's mount in its own network,
pid and UTS namespace with its own local cache, reaching the emulator over its own link and
the tier (moto's S3 server, or a shared directory) over another. No host can see another's
processes: the lease is the only thing they share."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.fs.conftest import blob_gets, daemon_env
from tests.shared.conftest import endpoint_env
from tests.helpers import wait_for
from wandbfs.bench.cluster import Cluster, Host, WanUnavailable
from wandbfs.emulator.seed import publish

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(300)]

MiB = 1 << 20
BUCKET = "wandbfs-tier"


@pytest.fixture(scope="module")
def moto_all(moto_port: int) -> tuple[int, Any]:
    """The session's S3 server (on every address: the hosts reach it over their fast veth)."""
    import boto3

    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return moto_port, client


class Tier:
    """One tier for a test: its URL as the hosts see it, and a way to look inside."""

    def __init__(self, kind: str, root: Path, moto: tuple[int, Any] | None, prefix: str) -> None:
        self.kind = kind
        self.dir = root
        self.prefix = prefix
        self.moto = moto

    def url(self) -> str:
        return f"s3://{BUCKET}/{self.prefix}" if self.kind == "s3" else str(self.dir)

    def env(self, cluster: Cluster, host: Host) -> dict[str, str]:
        if self.kind != "s3":
            return {}
        assert self.moto is not None
        return endpoint_env(cluster.s3_endpoint(host, self.moto[0]))

    def keys(self) -> list[str]:
        if self.kind == "s3":
            assert self.moto is not None
            r = self.moto[1].list_objects_v2(Bucket=BUCKET, Prefix=self.prefix + "/")
            return sorted(o["Key"][len(self.prefix) + 1:] for o in r.get("Contents", []))
        return sorted(str(p.relative_to(self.dir)) for p in self.dir.rglob("*") if p.is_file())

    def get(self, key: str) -> bytes | None:
        if self.kind == "s3":
            assert self.moto is not None
            try:
                return self.moto[1].get_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}")["Body"].read()
            except Exception:  # noqa: BLE001 - NoSuchKey
                return None
        p = self.dir / key
        return p.read_bytes() if p.exists() else None

    def put(self, key: str, data: bytes) -> None:
        if self.kind == "s3":
            assert self.moto is not None
            self.moto[1].put_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}", Body=data)
        else:
            (self.dir / key).write_bytes(data)


@pytest.fixture(params=["dir", "s3"])
def tier(request: pytest.FixtureRequest, tmp_path: Path) -> Tier:
    moto = request.getfixturevalue("moto_all") if request.param == "s3" else None
    root = tmp_path / "tier"
    root.mkdir()
    return Tier(request.param, root, moto, f"t{time.monotonic_ns()}")


@pytest.fixture
def cluster(emu: Any, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(n: int) -> Cluster:
        env = daemon_env(tmp_path, emu.url)
        env.pop("WANDB_SERVICE", None)   # the test's SDK service is not on the hosts' networks
        port = int(emu.url.rsplit(":", 1)[1].rstrip("/"))
        try:
            c = Cluster(tmp_path / f"cluster{len(made)}", n, rate=None).up(port, env)
        except WanUnavailable as e:
            pytest.skip(f"cannot make host namespaces here: {e}")
        made.append(c)
        return c
    yield make
    for c in made:
        c.down()
    for c in made:
        for h in c.hosts:
            assert not os.path.ismount(h.mountpoint)


def start_hosts(c: Cluster, tier: Tier, hosts: list[Host], *extra: str) -> None:
    for h in hosts:
        h.env.update(tier.env(c, h))
        h.mount("--shared-cache", tier.url(), "--no-lineage", "--no-warm", *extra)


def read_all(paths: list[Path]) -> dict[int, str]:
    """Read every path at the same moment; md5 of each."""
    out: dict[int, str] = {}
    barrier = threading.Barrier(len(paths))

    def one(i: int) -> None:
        barrier.wait(30)
        h = hashlib.md5()
        with open(paths[i], "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        out[i] = h.hexdigest()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    return out


def storage_bytes(emu: Any) -> int:
    wait_for(lambda: all(g.done for g in blob_gets(emu)), timeout=30, what="the emulator's blob log")
    return sum(g.bytes_out for g in blob_gets(emu))


def status_of(h: Host) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "wandbfs.cli", "status", "--json", str(h.mountpoint)], env=h.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[0])


def object_key(data: bytes) -> str:
    md5 = hashlib.md5(data).hexdigest()
    return f"obj/md5/{md5[:2]}/{md5[2:]}"


def published(tier: Tier, data: bytes) -> bool:
    return tier.get(object_key(data)) == data


@pytest.mark.parametrize("hosts", [4, 8])
def test_hosts_reading_at_once_pull_the_file_from_wandb_once(emu, cluster, tier, hosts):
    if hosts == 8 and tier.kind == "dir":
        pytest.skip("8 hosts run once, on S3 (the directory tier is the same protocol)")
    data = random.Random(hosts).randbytes(96 * MiB + 4321)   # 13 parts: 1.1x leaves room for one refetched
    coll = f"shared-{tier.kind}-{hosts}"
    publish(emu.store, "acme", "model", coll, {"big.bin": data})
    c = cluster(hosts)
    start_hosts(c, tier, c.hosts)
    paths = [h.mountpoint / f"acme/model/{coll}/v0/big.bin" for h in c.hosts]
    for p in paths:
        os.stat(p)           # names resolved: what is measured is the bytes
    emu.log.clear()
    sums = read_all(paths)
    want = hashlib.md5(data).hexdigest()
    assert sums == {i: want for i in range(hosts)}, "every host must read every byte right"
    sent = storage_bytes(emu)
    pulled = [status_of(h)["bytes_downloaded"] // MiB for h in c.hosts]
    assert sent <= 1.1 * len(data), (f"W&B storage sent {sent / len(data):.2f}x the file for {hosts} hosts "
                                     f"(MiB each host pulled: {pulled})")
    wait_for(lambda: published(tier, data), timeout=60, what="the object in the tier")
    # Once published, the fill's parts and lease are gone: only the object and its sums stay.
    wait_for(lambda: [k for k in tier.keys() if "/fill/" in k] == [], timeout=30, what="the fill's parts to go")
    shared = [status_of(h)["bytes_from_shared"] for h in c.hosts]
    assert sum(shared) >= (hosts - 1.1) * len(data) * 0.9, shared


def test_a_holder_killed_half_way_is_taken_over(emu, cluster, tier):
    data = random.Random(7).randbytes(64 * MiB + 77)
    coll = f"shared-kill-{tier.kind}"
    publish(emu.store, "acme", "model", coll, {"big.bin": data})
    c = cluster(3)
    ttl = 3.0
    start_hosts(c, tier, c.hosts, "--shared-lease-ttl", str(ttl))
    paths = [h.mountpoint / f"acme/model/{coll}/v0/big.bin" for h in c.hosts]
    for p in paths:
        os.stat(p)
    emu.faults.set([{"route": "blob", "rate_bps": 24 * MiB}])   # the first host takes ~2.7 s
    holder = threading.Thread(target=lambda: _read_quietly(paths[0]))
    holder.start()
    wait_for(lambda: len([k for k in tier.keys() if "/part." in k]) >= 3, timeout=60,
             what="the holder to publish some parts")
    followers: dict[int, str] = {}
    ft = threading.Thread(target=lambda: followers.update(read_all(paths[1:])))
    ft.start()
    wait_for(lambda: len([k for k in tier.keys() if "/part." in k]) >= 5, timeout=60,
             what="the followers to be following")
    c.hosts[0].kill()                      # SIGKILL: no release, no goodbye
    killed = time.monotonic()
    assert tier.get(object_key(data)) is None, "a killed holder must leave no object in the tier"
    ft.join(240)
    took = time.monotonic() - killed
    want = hashlib.md5(data).hexdigest()
    assert followers == {0: want, 1: want}, "no host may read a wrong byte"
    logs = "".join(h.log() for h in c.hosts[1:])
    assert "took over the shared-cache lease" in logs
    assert took < ttl + 30, f"the followers needed {took:.1f}s after the kill"
    wait_for(lambda: published(tier, data), timeout=60, what="the taken-over object in the tier")
    holder.join(30)


def _read_quietly(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except OSError:
        pass    # its daemon was killed under it


def published_by_another_host(cluster: Callable[..., Cluster], tier: Tier, coll: str, data: bytes) -> tuple[Cluster, Host]:
    """Two hosts: the first reads ``w.bin`` of ``coll`` (and publishes it); the second, started
    afterwards with an empty cache, is returned."""
    c = cluster(2)
    first, second = c.hosts
    start_hosts(c, tier, [first])
    assert (first.mountpoint / f"acme/model/{coll}/v0/w.bin").read_bytes() == data
    wait_for(lambda: published(tier, data), timeout=60, what="the object in the tier")
    start_hosts(c, tier, [second])
    return c, second


def test_a_new_host_reads_from_the_tier_alone_when_wandb_storage_refuses(emu, cluster, tier):
    data = random.Random(11).randbytes(20 * MiB + 5)
    coll = f"shared-alone-{tier.kind}"
    publish(emu.store, "acme", "model", coll, {"w.bin": data})
    c, second = published_by_another_host(cluster, tier, coll, data)
    path = second.mountpoint / f"acme/model/{coll}/v0/w.bin"
    os.stat(path)
    emu.log.clear()
    emu.faults.set([{"route": "blob", "status": 403}])   # storage refuses every blob, every URL
    assert path.read_bytes() == data
    assert not [g for g in blob_gets(emu) if g.status in (200, 206)]
    s = status_of(second)
    assert s["bytes_from_shared"] == len(data) and s["bytes_downloaded"] == 0


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_a_damaged_object_in_the_tier_is_not_served_and_is_replaced(emu, cluster, tier, damage):
    data = random.Random(13).randbytes(24 * MiB + 9)
    coll = f"shared-damage-{tier.kind}-{damage}"
    publish(emu.store, "acme", "model", coll, {"w.bin": data})
    c, second = published_by_another_host(cluster, tier, coll, data)
    key = object_key(data)
    bad = bytearray(data)
    if damage == "corrupt":
        bad[9 * MiB + 5] ^= 0xFF          # one byte in the second part
    else:
        del bad[len(bad) // 2:]
    tier.put(key, bytes(bad))
    path = second.mountpoint / f"acme/model/{coll}/v0/w.bin"
    with open(path, "rb") as f:
        assert f.read() == data, "a damaged shared object must not reach a reader"
    assert "not served, removed" in second.log()
    wait_for(lambda: published(tier, data), timeout=60, what="the object to be replaced in the tier")
