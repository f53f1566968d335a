"""Range serving through a real mount: parts, EOF, concurrent offsets, retried parts, TTFB."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time

import pytest

from tests.fs.conftest import blob_gets
from tests.helpers import wait_for
from wandbfs.emulator.seed import publish

MiB = 1 << 20
SIZE = 6 * MiB + 12345  # seven 1 MiB parts, the last one short


@pytest.fixture(scope="module")
def striped(emulator):
    data = random.Random(3).randbytes(SIZE)
    publish(emulator.store, "acme", "model", "striped", {"data.bin": data, "small.txt": b"tiny\n"})
    return data


@pytest.fixture
def smount(mount, fresh_cache, striped):
    m = mount("--cache-dir", str(fresh_cache), "--part-size", "1", "--concurrency", "3", "--no-lineage", "--no-warm")
    return m.path / "acme/model/striped/v0"


def test_reads_spanning_parts_and_past_eof(emu, smount, striped):
    with open(smount / "data.bin", "rb", buffering=0) as f:
        fd = f.fileno()
        assert os.pread(fd, 200, MiB - 100) == striped[MiB - 100:MiB + 100]          # across a part edge
        assert os.pread(fd, 3 * MiB, 2 * MiB - 1) == striped[2 * MiB - 1:5 * MiB - 1]  # several parts
        assert os.pread(fd, 100, SIZE - 10) == striped[-10:]                         # short read at EOF
        assert os.pread(fd, 100, SIZE) == b"" and os.pread(fd, 100, SIZE + 4096) == b""
    assert hashlib.sha256((smount / "data.bin").read_bytes()).digest() == hashlib.sha256(striped).digest()
    gets = blob_gets(emu)
    assert all(g.range for g in gets if g.bytes_out > 10)  # ranged GETs, one per part
    wait_for(lambda: all(g.done for g in blob_gets(emu)), timeout=10, what="the server's log")
    assert sum(g.bytes_out for g in blob_gets(emu) if "small" not in g.path) == SIZE  # each byte once


def test_concurrent_readers_at_random_offsets(smount, striped):
    errors: list[str] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        with open(smount / "data.bin", "rb", buffering=0) as f:
            for _ in range(40):
                off = rng.randrange(0, SIZE + 100)
                n = rng.randrange(1, 3 * MiB)
                if os.pread(f.fileno(), n, off) != striped[off:off + n]:
                    errors.append(f"seed {seed}: wrong bytes at {off}+{n}")
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)


def test_a_failed_part_is_retried(emu, smount, striped):
    emu.faults.set([{"route": "blob", "status": 503, "times": 2}, {"route": "blob", "reset_after": 300_000, "times": 1}])
    assert (smount / "data.bin").read_bytes() == striped
    statuses = [g.status for g in blob_gets(emu)]
    assert statuses.count(503) == 2 and 206 in statuses


def test_first_bytes_arrive_before_the_whole_file(emu, mount, fresh_cache, striped):
    m = mount("--cache-dir", str(fresh_cache), "--part-size", "1", "--concurrency", "1", "--no-lineage")
    path = m.path / "acme/model/striped/v0/data.bin"
    os.stat(path)  # metadata is not what this measures
    emu.faults.set([{"route": "blob", "rate_bps": 4 * MiB}])  # the whole file takes ~1.6 s
    t0 = time.monotonic()
    with open(path, "rb", buffering=0) as f:
        first = os.pread(f.fileno(), MiB, 0)
        ttfb = time.monotonic() - t0
        assert first == striped[:MiB]
        f.seek(MiB)
        assert f.read() == striped[MiB:]
        total = time.monotonic() - t0
    assert ttfb < total / 3, (ttfb, total)


def test_strict_mode_serves_only_verified_objects(emu, mount, fresh_cache, striped):
    m = mount("--cache-dir", str(fresh_cache), "--verify", "strict", "--part-size", "1", "--no-lineage")
    path = m.path / "acme/model/striped/v0/data.bin"
    with open(path, "rb", buffering=0) as f:
        assert os.pread(f.fileno(), 10, 0) == striped[:10]
        # The first read returned only after the whole object was in the cache, verified.
        assert any(p.stat().st_size == SIZE for p in (fresh_cache / "artifacts/obj/md5").rglob("*") if p.is_file())
