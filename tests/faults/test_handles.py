"""Object handles on a real mount: after every reader has closed, the daemon holds nothing.

Readers open, read (partially, to EOF, or not at all) and close - some mid-download, some
killed inside a read - the same and different files at once. Every descriptor the daemon
keeps on an object carries a shared flock that eviction respects, so one leaked descriptor
is an object that can never be evicted until unmount: after the last close, none may stay.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.faults.test_fault_matrix import record
from tests.fs.conftest import run_cli
from tests.helpers import wait_for
from wandbfs.emulator.seed import publish

MiB = 1 << 20
FILES = {**{f"big{i}.bin": random.Random(300 + i).randbytes(3 * MiB + 1000 * i) for i in range(4)},
         **{f"small{i}.txt": random.Random(400 + i).randbytes(20_000 + 10 * i) for i in range(3)}}
READERS = 64


@pytest.fixture(scope="module")
def handles(emulator):
    publish(emulator.store, "acme", "dataset", "handles", FILES, ["production"], type_name="dataset")
    return "acme/dataset/handles/v0"


def cache_fds(pid: int, cache: Path) -> list[str]:
    """What the daemon holds open inside the cache directory (objects, temps, lock files)."""
    out = []
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except FileNotFoundError:
            continue  # closed while we looked
        if target.startswith(str(cache) + "/"):
            out.append(target)
    return out


def _reader(root: Path, seed: int, wrong: list[str], done: list[int]) -> None:
    """One of four kinds: to EOF, a few random preads, one read then close early, open only."""
    rng = random.Random(seed)
    name = "big0.bin" if seed % 3 == 0 else rng.choice(sorted(FILES))   # a third on one file
    want = FILES[name]
    kind = seed % 4
    with open(root / name, "rb", buffering=0) as f:
        fd = f.fileno()
        if kind == 0:
            got = f.read()
            if hashlib.sha256(got).digest() != hashlib.sha256(want).digest():
                wrong.append(f"{seed}: {name} read to EOF was wrong")
        elif kind == 1:
            for _ in range(4):
                off, n = rng.randrange(len(want)), rng.randrange(1, MiB)
                if os.pread(fd, n, off) != want[off:off + n]:
                    wrong.append(f"{seed}: {name} at {off}+{n}")
        elif kind == 2:
            if os.pread(fd, 4096, 0) != want[:4096]:
                wrong.append(f"{seed}: {name} head")
        # kind 3: open and close at once (the open's background attach races the release)
    done.append(seed)


KILLED_READER = ("import os, sys\n"
                 "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
                 "print('reading', flush=True)\n"
                 "os.pread(fd, 3 << 20, int(sys.argv[2]))\n")


@pytest.mark.timeout(240)
def test_no_object_fd_is_held_after_64_readers_close(emu, mount, handles, tmp_path, mount_env):
    cache = tmp_path / "cache"
    m = mount("--cache-dir", str(cache), "--part-size", "1", "--concurrency", "2", "--no-lineage")
    root = m.path / handles
    os.listdir(root)                                                   # metadata first
    emu.faults.set([{"route": "blob", "rate_bps": 6 * MiB}])          # closes land mid-download
    wrong: list[str] = []
    done: list[int] = []
    threads = [threading.Thread(target=_reader, args=(root, seed, wrong, done)) for seed in range(READERS)]
    # Readers killed inside a read: the kernel releases the file while the daemon still serves it.
    killed = [subprocess.Popen([sys.executable, "-c", KILLED_READER, str(root / f"big{i}.bin"), str(i * MiB)],
                               stdout=subprocess.PIPE, text=True) for i in range(4)]
    for t in threads:
        t.start()
    for p in killed:
        assert p.stdout is not None and p.stdout.readline() == "reading\n"
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads) and len(done) == READERS and not wrong, wrong
    emu.faults.clear()
    pid = m.pid
    # Fills that readers left behind finish in the background; then nothing may stay open.
    t0 = time.monotonic()
    wait_for(lambda: not cache_fds(pid, cache), timeout=60,
             what=f"the daemon to close every fd into the cache (holds {cache_fds(pid, cache)})")
    settled = time.monotonic() - t0
    # And so every object can be evicted: none is "in use" any more.
    r = run_cli(["cache", "clear", "--cache-dir", str(cache), "--yes"], mount_env)
    assert r.returncode == 0 and "in use" not in r.stdout, r.stdout
    assert not [p for p in (cache / "artifacts/obj").rglob("*") if p.is_file()]
    # The mount still serves everything, right (fetched again).
    for name, data in FILES.items():
        assert (root / name).read_bytes() == data
    record(f"{READERS} readers (to EOF, partial, closed early, open only) + 4 killed mid-read, 7 files",
           READERS + 4, len(wrong), f"all right; {settled:.1f} s after the last close the daemon held no fd "
           "into the cache; cache clear removed every object")


ONE_PART = {"header.json": b'{"__metadata__": {"format": "pt"}}' + b" " * 4000,
            "exactly-one-part.bin": random.Random(500).randbytes(MiB)}


@pytest.fixture(scope="module")
def one_part(emulator):
    publish(emulator.store, "acme", "model", "one-part-files", ONE_PART)
    return "acme/model/one-part-files/v0"


@pytest.mark.parametrize("name", sorted(ONE_PART))
def test_files_of_one_part_are_served_only_verified(emu, mount, one_part, fresh_cache, name):
    """A file no larger than one part is one request anyway: its first read waits for the
    digest, so a corrupt blob is EIO, never bytes (safetensors read "invalid UTF-8 in header")."""
    m = mount("--cache-dir", str(fresh_cache), "--part-size", "1", "--no-warm", "--no-lineage")
    path = m.path / one_part / name
    os.stat(path)
    emu.faults.set([{"route": "blob", "corrupt": True}])
    served: list[bytes] = []
    outcomes = []
    for off, n in [(0, 8), (0, 4096), (100, 50), (0, 1 << 20)]:
        with open(path, "rb", buffering=0) as f:
            try:
                served.append(os.pread(f.fileno(), n, off))
                outcomes.append("data")
            except OSError as e:
                outcomes.append(errno_name(e))
    assert served == [] and outcomes == ["EIO"] * 4, outcomes
    emu.faults.clear()
    with open(path, "rb", buffering=0) as f:                   # once W&B serves the right bytes
        assert os.pread(f.fileno(), 8, 0) == ONE_PART[name][:8]
        assert f.read() == ONE_PART[name]
    record(f"corrupt blob, a file of one part ({name}), stream mode, 4 reads", 4, 0,
           "EIO every time, no byte served before the digest matched")


def errno_name(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e))
