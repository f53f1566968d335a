"""R12, one pull per cluster: N simulated hosts read the large file at the same moment through
the shared cache tier (issue #14).

Hosts are ``bench/cluster.py``'s: each its own network, pid and UTS namespace and its own
empty cache, W&B (the emulator) over its own shaped link (the bench's WAN: ``--rate``,
``--rtt-ms``) and the tier over an unshaped one. Two tiers: moto's S3 server (a separate
process, on every address) and a directory on this machine's disk (what an NFS/Lustre
tier looks like to wandbfs: files and renames). Each round starts cold (new caches, a new
tier prefix or directory):

* ``R12.<tier>.<n>.bytes``: bytes W&B storage sent (the emulator's request log) over the
  file's size; goal <= 1.1 (without the tier it is n);
* ``R12.<tier>.<n>.time``: seconds until every host has read (and checked) every byte,
  against one host alone on the same link without a tier; goal <= 1.5x;
* ``R12.<tier>.<n>.first``: the waiting hosts' first MiB (median over them) against the
  host that held the lease: what waiting for another host's parts costs;
* context, the limits of the same work on this one machine, where every simulated host
  shares two cores and one disk: ``.local`` (the same n mounts reading the file again from
  their own caches at once), ``.tier`` (n readers of the published object straight from the
  tier: curl or sha256sum) and ``.disk`` (n + 2 copies of the file written to this disk at
  once, what the round writes to it: n caches, the tier's parts and its object; nothing
  read or hashed).

Every host's bytes are checked against the file's sha256.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wandbfs.bench.cluster import Cluster, WanUnavailable
from wandbfs.bench.infra import MiB, WrongBytes, hermetic_env, rmtree, wait_until
from wandbfs.bench.report import Row

if TYPE_CHECKING:
    from wandbfs.bench.runner import Bench

HOSTS = (4, 8)
GOAL_BYTES = 1.1
GOAL_TIME = 1.5
AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_EC2_METADATA_DISABLED": "true"}
BUCKET = "wandbfs-bench-tier"


class _Moto:
    """moto's S3 server as a child process on every address (the hosts' fast veths reach it)."""

    def __init__(self, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "0.0.0.0", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=open(log, "ab"), start_new_session=True)
        import boto3

        self.client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.port}", aws_access_key_id="bench",
                                   aws_secret_access_key="bench", region_name="us-east-1")

        def ready() -> bool:
            try:
                self.client.list_buckets()
                return True
            except Exception:  # noqa: BLE001 - not listening yet
                return False
        wait_until(ready, 60, "moto's S3 server")
        self.client.create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _storage_bytes(b: "Bench") -> int:
    def quiet() -> bool:
        return all(e.get("done", True) for e in b.emu.log() if e.get("route") == "blob")
    wait_until(quiet, 60, "the emulator's blob log")
    return sum(int(e.get("bytes_out") or 0) for e in b.emu.log() if e.get("route") == "blob"
               and e.get("method") == "GET")


def _read(path: Path, want: str, barrier: threading.Barrier, out: dict[str, Any], key: int) -> None:
    barrier.wait(60)
    t0 = time.perf_counter()
    h = hashlib.sha256()
    first = None
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            if first is None:
                first = time.perf_counter() - t0
            h.update(chunk)
    out[key] = (time.perf_counter() - t0, first, h.hexdigest() == want)


def _round(b: "Bench", work: Path, n: int, tier: str | None, moto: _Moto | None) -> dict[str, Any]:
    """One cold round of ``n`` hosts (tier None: one host, no tier); times, first MiB, bytes."""
    a = b.args
    rmtree(work)
    work.mkdir(parents=True)
    c = Cluster(work, n, rtt_ms=a.rtt_ms, rate=None if a.no_wan else a.rate)
    env = hermetic_env(work / "sdk", b.emu.url)
    env["HOME"] = str(work / "home")
    c.up(b.emu.port, env)
    try:
        opts = ["--org", "acme", "--no-lineage", "--no-warm"]
        url = None
        if tier == "s3":
            url = f"s3://{BUCKET}/r{time.monotonic_ns()}"
        elif tier == "dir":
            (work / "tier").mkdir()
            url = str(work / "tier")
        for h in c.hosts:
            if tier == "s3" and moto is not None:
                url_s3 = c.s3_endpoint(h, moto.port)
                h.env.update(AWS, AWS_ENDPOINT_URL=url_s3, AWS_ENDPOINT_URL_S3=url_s3)
            h.mount(*opts, *(["--shared-cache", url] if url else []))
        rel = "acme/bench/bundle/v0/model.bin"
        paths = [h.mountpoint / rel for h in c.hosts]
        for p in paths:
            os.stat(p)                       # names resolved on every host: the bytes are measured
        b.pc.drop()
        b.emu.clear_log()
        wall, out = _read_all(paths, b.ds.big["sha256"])
        sent = _storage_bytes(b)
        pulled = [_status(h)["bytes_downloaded"] for h in c.hosts]
        holder = max(range(n), key=lambda i: pulled[i])   # the host that pulled most from W&B
        res = {"wall": wall, "bytes": sent, "first": {i: f for i, (_, f, _) in out.items()},
               "holder": holder, "pulled": pulled}
        if tier is not None:
            # The limits of the same work on this machine, in the same round: n mounts serving
            # the file from their own caches at once, and n readers of the tier's object alone.
            b.pc.drop()
            res["local"] = _read_all(paths, b.ds.big["sha256"])[0]
            res["tier_alone"] = _tier_alone(b, c, tier, url or "", moto)
        return res
    finally:
        c.down()
        logs = b.work / "r12-logs" / f"{tier or 'alone'}-{n}"   # the last round's daemon logs, for a miss
        rmtree(logs)
        logs.mkdir(parents=True)
        for h in c.hosts:
            (logs / f"{h.name}.log").write_text(h.log())
        rmtree(work)


def _at_once(n: int, fn: Any) -> float:
    """``fn(0) … fn(n-1)`` on n threads at once; seconds until the last one is done."""
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(1800)
    return time.perf_counter() - t0


def _read_all(paths: list[Path], want: str) -> tuple[float, dict[int, Any]]:
    """Every path read at the same moment; the wall time and each reader's (time, first MiB, ok)."""
    out: dict[int, Any] = {}
    barrier = threading.Barrier(len(paths))
    wall = _at_once(len(paths), lambda i: _read(paths[i], want, barrier, out, i))
    if len(out) != len(paths) or not all(ok for _, _, ok in out.values()):
        raise WrongBytes(f"R12: a host read wrong bytes or did not finish ({out})")
    return wall, out


def _tier_alone(b: "Bench", c: Cluster, tier: str, url: str, moto: _Moto | None) -> float | None:
    """Seconds for every host to read the published object straight from the tier at once
    (curl from each host's network for S3, sha256sum of the file for a directory)."""
    md5 = b.ds.big["md5"]
    key = f"obj/md5/{md5[:2]}/{md5[2:]}"
    size = b.ds.big["size"]

    def published() -> bool:
        if tier == "s3" and moto is not None:
            bucket, _, prefix = url[len("s3://"):].partition("/")
            try:
                return int(moto.client.head_object(Bucket=bucket, Key=f"{prefix}/{key}")["ContentLength"]) == size
            except Exception:  # noqa: BLE001 - not there yet
                return False
        return os.path.exists(f"{url}/{key}") and os.path.getsize(f"{url}/{key}") == size
    wait_until(published, 300, "the object to be published to the tier")
    procs = []
    b.pc.drop()
    t0 = time.perf_counter()
    for h in c.hosts:
        if tier == "s3" and moto is not None:
            src = f"{c.s3_endpoint(h, moto.port)}/{url[len('s3://'):]}/{key}"
            cmd = h.wrap(["sh", "-c", f"curl -sf '{src}' | sha256sum"])
        else:
            cmd = ["sha256sum", f"{url}/{key}"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=1800)[0] for p in procs]
    took = time.perf_counter() - t0
    if not all(o.split()[:1] == [b.ds.big["sha256"]] for o in outs):
        b.note(f"R12 {tier}: the tier's object read alone did not match ({outs[0][:80]!r}); no tier-alone figure")
        return None
    return took


def _disk_floor(work: Path, n: int, size: int) -> float:
    """Seconds to write ``n`` files of ``size`` bytes to ``work``'s disk at once (no fsync,
    as the caches write): the disk's share of n cold hosts on one machine."""
    block = b"\xa5" * (8 << 20)
    work.mkdir(parents=True, exist_ok=True)

    def write(i: int) -> None:
        with open(work / f"disk-{i}", "wb", buffering=0) as f:
            left = size
            while left > 0:
                left -= f.write(block[:min(left, len(block))])
    took = _at_once(n, write)
    rmtree(work)
    os.sync()
    return took


def _status(h: Any) -> dict[str, Any]:
    import json

    r = subprocess.run([sys.executable, "-m", "wandbfs.cli", "status", "--json", str(h.mountpoint)], env=h.env,
                       capture_output=True, text=True, timeout=60)
    return json.loads(r.stdout.splitlines()[0]) if r.returncode == 0 and r.stdout else {"bytes_downloaded": 0}


def r12_shared_tier(b: "Bench") -> None:
    size = b.ds.big["size"]
    if os.geteuid() != 0:
        b.note("R12 needs root (network and pid namespaces for the simulated hosts): skipped")
        return
    try:
        moto_proc: _Moto | None = _Moto(b.work / "moto.log")
    except ImportError:
        b.note("R12: boto3/moto not installed: the S3 tier is not measured")
        moto_proc = None
    if moto_proc is not None:
        b.cleanup.push("moto server", moto_proc.stop)
    free = shutil.disk_usage(b.work).free
    hosts = [n for n in HOSTS if (n + 2) * size < free * 0.8]
    if len(hosts) < len(HOSTS):
        b.note(f"R12: not enough disk for {max(HOSTS)} hosts' caches; ran {hosts}")
    link = "lo" if b.args.no_wan else "wan"
    try:
        alone = [_round(b, b.work / "r12", 1, None, None)["wall"] for _ in b.reps("R12 alone")]
    except WanUnavailable as e:
        b.note(f"R12: cannot make the simulated hosts ({e}): skipped")
        return
    for kind in ("s3", "dir"):
        if kind == "s3" and moto_proc is None:
            continue
        for n in hosts:
            rounds = [_round(b, b.work / "r12", n, kind, moto_proc) for _ in b.reps(f"R12 {kind} x{n}")]
            ratio = [r["bytes"] / size for r in rounds]
            walls = [r["wall"] for r in rounds]
            b.add(Row("R12", f"R12.{kind}.{n}.bytes", f"{n} cold hosts read one {size / MiB:,.0f} MiB file at once, "
                      f"{kind} tier: W&B storage bytes / file size", link, "count", ratio, [float(n)],
                      "without a tier", None, f"<= {GOAL_BYTES}", max(ratio) <= GOAL_BYTES,
                      statistics.median(ratio) / n))
            t_ratio = statistics.median(walls) / statistics.median(alone)
            b.add(Row("R12", f"R12.{kind}.{n}.time", f"... all {n} hosts done (s)", link, "s", walls, alone,
                      "one host alone, no tier", None, f"<= {GOAL_TIME}x", t_ratio <= GOAL_TIME, t_ratio))
            local = [r["local"] for r in rounds if r.get("local")]
            if local:
                b.add(Row("R12", f"R12.{kind}.{n}.local", f"... the same {n} mounts reading it again, each from its "
                          "own cache (this machine's floor for n mounts)", link, "s", local, alone,
                          "one host alone, no tier", None, "", None, statistics.median(local) / statistics.median(alone)))
            # What the round wrote to this one disk: n caches, plus the tier's parts and object.
            copies = n + 2
            disk = [_disk_floor(b.work / "r12-disk", copies, size) for _ in range(min(len(rounds), 2))]
            b.add(Row("R12", f"R12.{kind}.{n}.disk", f"... {copies} copies of the file written to this disk at once "
                      f"(the round's writes: {n} caches, the tier's parts and object)", link, "s", disk, alone,
                      "one host alone, no tier", None, "", None, statistics.median(disk) / statistics.median(alone)))
            direct = [r["tier_alone"] for r in rounds if r.get("tier_alone")]
            if direct:
                b.add(Row("R12", f"R12.{kind}.{n}.tier", f"... {n} readers of the published object straight from the "
                          f"{kind} tier (its own limit here)", link, "s", direct, walls, "wandbfs, all done", None, "",
                          None, statistics.median(walls) / statistics.median(direct)))
            firsts_wait, firsts_hold = [], []
            for r in rounds:
                firsts_hold += [f for i, f in r["first"].items() if i == r["holder"] and f is not None]
                firsts_wait += [f for i, f in r["first"].items() if i != r["holder"] and f is not None]
            b.raw.setdefault("R12", {})[f"{kind}.{n}"] = [{k: v for k, v in r.items()} for r in rounds]
            if firsts_wait and firsts_hold:
                b.add(Row("R12", f"R12.{kind}.{n}.first", "... first MiB: the hosts that waited for another's "
                          "parts vs the lease holder", link, "ms", firsts_wait, firsts_hold, "the holder", None,
                          "", None, statistics.median(firsts_wait) / statistics.median(firsts_hold)))
