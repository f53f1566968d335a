"""Adaptive fills through a real mount: a partial read fetches about what it reads, the
parts fetched stay on disk as a partial object across mounts, and the whole file is
completed and verified when it is read to the end."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys

import pytest

from tests.fs.conftest import blob_gets, run_cli
from wandbfs.emulator.seed import publish

KiB, MiB = 1 << 10, 1 << 20
SIZE = 64 * MiB + 777


@pytest.fixture(scope="module")
def big(emulator):
    data = random.Random(11).randbytes(SIZE)
    publish(emulator.store, "acme", "model", "partial", {"big.bin": data})
    return data


def sent(emu) -> int:
    """Bytes storage sent for blob GETs since the log was last cleared."""
    return sum(e.bytes_out for e in blob_gets(emu))


def partial_files(cache) -> list:
    d = cache / "wandbfs-meta" / "partial"
    return [p for p in d.rglob("*") if p.is_file()] if d.exists() else []


def objects(cache) -> list:
    d = cache / "artifacts" / "obj"
    return [p for p in d.rglob("*") if p.is_file()] if d.exists() else []


@pytest.fixture
def pmount(mount, fresh_cache, big):
    def do(*extra: str):
        m = mount("--cache-dir", str(fresh_cache), "--no-lineage", "--no-warm", *extra)
        p = m.path / "acme/model/partial/v0/big.bin"
        os.stat(p)          # names resolved: only the read is measured
        return m, p
    return do


def test_a_small_read_far_into_a_big_file_fetches_about_its_range(emu, pmount, big):
    m, p = pmount()
    emu.log.clear()
    with open(p, "rb", buffering=0) as f:
        assert os.pread(f.fileno(), 4 * KiB, 50 * MiB + 5) == big[50 * MiB + 5:50 * MiB + 5 + 4 * KiB]
    assert 4 * KiB <= sent(emu) <= 1 * MiB, sent(emu)


def test_two_mib_read_from_the_start_fetches_a_few_mib(emu, pmount, big):
    m, p = pmount()
    emu.log.clear()
    with open(p, "rb") as f:
        assert f.read(2 * MiB) == big[:2 * MiB]
    assert 2 * MiB <= sent(emu) <= 8 * MiB, sent(emu)


def test_a_sequential_read_fills_the_whole_file_once_and_caches_it(emu, pmount, big, fresh_cache):
    m, p = pmount()
    emu.log.clear()
    assert hashlib.sha256(p.read_bytes()).digest() == hashlib.sha256(big).digest()
    assert sent(emu) == SIZE                       # every byte once, none twice
    assert len(objects(fresh_cache)) == 1 and partial_files(fresh_cache) == []


MMAP_LOAD = """
import hashlib, mmap, sys
with open(sys.argv[1], "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
    h = hashlib.sha256()
    for off in range(0, len(mm), 4 << 20):      # the way a loader walks its tensors
        h.update(mm[off:off + (4 << 20)])
print(h.hexdigest())
"""


def test_an_mmap_load_reads_right_bytes_and_completes_the_object(emu, pmount, big, fresh_cache):
    # In its own process, as a loader is: a page fault holds the GIL, and the emulator
    # serving the mount runs in this one.
    m, p = pmount()
    emu.log.clear()
    r = subprocess.run([sys.executable, "-c", MMAP_LOAD, str(p)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == hashlib.sha256(big).hexdigest()
    assert SIZE <= sent(emu) <= SIZE + 2 * MiB


def test_a_partial_object_outlives_the_mount_and_is_completed_verified(emu, pmount, big, fresh_cache):
    m, p = pmount()
    with open(p, "rb", buffering=0) as f:
        assert os.pread(f.fileno(), 2 * MiB, 0) == big[:2 * MiB]
        assert os.pread(f.fileno(), 4 * KiB, 40 * MiB) == big[40 * MiB:40 * MiB + 4 * KiB]
    assert m.unmount().returncode == 0
    parts = partial_files(fresh_cache)
    assert len(parts) == 1 and objects(fresh_cache) == []
    assert "user.wandbfs.ranges" in os.listxattr(parts[0])

    stats = json.loads(run_cli(["cache", "stats", "--cache-dir", str(fresh_cache), "--json"], m.env).stdout)
    assert stats["partial_objects"] == 1 and 2 * MiB <= stats["partial_bytes"] < SIZE

    m2, p2 = pmount()
    emu.log.clear()
    with open(p2, "rb", buffering=0) as f:   # what the first mount fetched comes from disk
        assert os.pread(f.fileno(), 2 * MiB, 0) == big[:2 * MiB]
        assert os.pread(f.fileno(), 4 * KiB, 40 * MiB) == big[40 * MiB:40 * MiB + 4 * KiB]
    assert sent(emu) == 0
    assert hashlib.sha256(p2.read_bytes()).digest() == hashlib.sha256(big).digest()
    assert sent(emu) <= SIZE - 2 * MiB          # only what was missing
    assert partial_files(fresh_cache) == [] and len(objects(fresh_cache)) == 1


def test_a_corrupt_partial_object_is_never_served_at_eof(emu, pmount, big, fresh_cache):
    """Bytes on disk that do not match (planted under a partial object's ranges) cannot
    make a read to EOF succeed: the digest fails, EIO, and the partial object is gone."""
    m, p = pmount()
    with open(p, "rb", buffering=0) as f:
        assert os.pread(f.fileno(), 1 * MiB, 0) == big[:MiB]
    assert m.unmount().returncode == 0
    [part] = partial_files(fresh_cache)
    with open(part, "r+b") as f:
        f.seek(100)
        f.write(b"\0" * 10)
    m2, p2 = pmount()
    with pytest.raises(OSError) as err:
        p2.read_bytes()
    assert err.value.errno == 5
    assert partial_files(fresh_cache) == [] and objects(fresh_cache) == []
    assert hashlib.sha256(p2.read_bytes()).digest() == hashlib.sha256(big).digest()   # fetched afresh


def test_whole_fill_mode_fetches_the_whole_file_on_open(emu, pmount, big, fresh_cache):
    m, p = pmount("--fill", "whole")
    emu.log.clear()
    with open(p, "rb", buffering=0) as f:
        assert os.pread(f.fileno(), 4 * KiB, 0) == big[:4 * KiB]
    from tests.helpers import wait_for
    wait_for(lambda: len(objects(fresh_cache)) == 1, 60, what="the whole-file fill to complete")
    assert sent(emu) == SIZE


def test_a_read_of_the_end_alone_fetches_about_its_range(emu, pmount, big, fresh_cache):
    """A parquet footer or a zip's directory: the end of a file, read first, on its own."""
    m, p = pmount()
    emu.log.clear()
    with open(p, "rb", buffering=0) as f:
        assert os.pread(f.fileno(), 64 * KiB, SIZE - 64 * KiB) == big[-64 * KiB:]
    assert 64 * KiB <= sent(emu) <= 1 * MiB, sent(emu)
    assert objects(fresh_cache) == []                          # not fetched whole, not verified
    assert hashlib.sha256(p.read_bytes()).digest() == hashlib.sha256(big).digest()
    assert len(objects(fresh_cache)) == 1                      # a whole read completes it, verified


def test_a_reader_of_every_byte_in_any_order_gets_eio_on_corrupt_bytes(emu, pmount, big, fresh_cache):
    """Reads in a shuffled order, none of them at EOF last: once every byte is present the
    reads wait for the digest, so the reader never gets a whole wrong file without an error."""
    m, p = pmount()
    emu.faults.set([{"route": "blob", "corrupt": True}])
    offs = list(range(0, SIZE, 4 * MiB))
    random.Random(5).shuffle(offs)
    offs.remove(max(offs))
    offs.insert(0, max(offs) + 4 * MiB if max(offs) + 4 * MiB < SIZE else max(offs))   # the end first
    errors = 0
    with open(p, "rb", buffering=0) as f:
        for off in sorted(set(offs), key=offs.index):
            try:
                os.pread(f.fileno(), 4 * MiB, off)
            except OSError as e:
                assert e.errno == 5
                errors += 1
    emu.faults.clear()
    assert errors >= 1
    assert objects(fresh_cache) == [] and partial_files(fresh_cache) == []
