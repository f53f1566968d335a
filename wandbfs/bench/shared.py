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
  host that held the lease: what waiting for another host's parts costs.

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
        out: dict[int, Any] = {}
        barrier = threading.Barrier(n)
        threads = [threading.Thread(target=_read, args=(p, b.ds.big["sha256"], barrier, out, i))
                   for i, p in enumerate(paths)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(1800)
        wall = time.perf_counter() - t0
        if len(out) != n or not all(ok for _, _, ok in out.values()):
            raise WrongBytes(f"R12 {tier} x{n}: a host read wrong bytes or did not finish ({out})")
        pulled = [_status(h)["bytes_downloaded"] for h in c.hosts]
        holder = max(range(n), key=lambda i: pulled[i])   # the host that pulled most from W&B
        return {"wall": wall, "bytes": _storage_bytes(b), "first": {i: f for i, (_, f, _) in out.items()},
                "holder": holder, "pulled": pulled}
    finally:
        c.down()
        logs = b.work / "r12-logs" / f"{tier or 'alone'}-{n}"   # the last round's daemon logs, for a miss
        rmtree(logs)
        logs.mkdir(parents=True)
        for h in c.hosts:
            (logs / f"{h.name}.log").write_text(h.log())
        rmtree(work)


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
        import boto3  # noqa: F401
        import moto  # noqa: F401
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
            firsts_wait, firsts_hold = [], []
            for r in rounds:
                firsts_hold += [f for i, f in r["first"].items() if i == r["holder"] and f is not None]
                firsts_wait += [f for i, f in r["first"].items() if i != r["holder"] and f is not None]
            b.raw.setdefault("R12", {})[f"{kind}.{n}"] = [{k: v for k, v in r.items()} for r in rounds]
            if firsts_wait and firsts_hold:
                b.add(Row("R12", f"R12.{kind}.{n}.first", "... first MiB: the hosts that waited for another's "
                          "parts vs the lease holder", link, "ms", firsts_wait, firsts_hold, "the holder", None,
                          "", None, statistics.median(firsts_wait) / statistics.median(firsts_hold)))
