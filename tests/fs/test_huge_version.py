"""A version of 20,000 files on a real mount: listed whole, and opening one file asks W&B
for the URLs of a bounded batch of files, never for every page of the version's URLs."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.fs.conftest import blob_gets, run_cli
from tests.helpers import wait_for
from wandbfs.catalog.urls import SignedUrls
from wandbfs.emulator.seed import publish

N = 20_000
BLOBS = [f"shared content {k}\n".encode() * 4 for k in range(50)]


def _name(i: int) -> str:
    return f"sample-{i:05d}.json"


@pytest.fixture(scope="module")
def huge(emulator):
    """Published straight into the store (the SDK would take minutes for 20,000 files):
    a flat folder of 20,000 files and one unique file."""
    files = {_name(i): BLOBS[i % len(BLOBS)] for i in range(N)}
    files["unique.bin"] = os.urandom(5000)
    publish(emulator.store, "acme", "dataset", "huge-flat", files, type_name="dataset")
    return files


def _url_requests(emu):
    return [e for e in emu.log.entries("graphql")
            if e.operation in ("ArtifactMembershipFiles", "GetArtifactMembershipFileUrls")]


def test_listing_20000_files_and_opening_one_asks_for_one_batch(emu, mount, huge, tmp_path):
    m = mount("--cache-dir", str(tmp_path / "cache"), "--no-warm")
    vdir = m.path / "acme/dataset/huge-flat/v0"
    t0 = time.monotonic()
    names = os.listdir(vdir)
    listed = time.monotonic() - t0
    assert len(names) == N + 1 and set(names) == set(huge)
    assert _url_requests(emu) == [] and blob_gets(emu) == []   # a listing costs no URL, no byte
    out = subprocess.run(["ls", "-l", str(vdir)], capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.splitlines()[1:]               # after "total": every file, with its size
    assert len(lines) == N + 1
    sizes = {ln.split()[-1]: int(ln.split()[4]) for ln in lines}
    assert sizes == {name: len(data) for name, data in huge.items()}
    assert os.stat(vdir / _name(7)).st_size == len(huge[_name(7)])

    emu.log.clear()
    assert (vdir / "unique.bin").read_bytes() == huge["unique.bin"]
    reqs = _url_requests(emu)
    assert [r.operation for r in reqs] == ["ArtifactMembershipFiles"], reqs
    asked = reqs[0].variables["fileNames"]
    assert asked[0] == "unique.bin" and len(asked) <= SignedUrls.BATCH

    emu.log.clear()
    assert (vdir / _name(123)).read_bytes() == huge[_name(123)]
    assert (vdir / _name(124)).read_bytes() == huge[_name(124)]   # its URL came with the one before
    reqs = _url_requests(emu)
    assert [r.operation for r in reqs] == ["ArtifactMembershipFiles"]
    assert reqs[0].variables["fileNames"][:2] == [_name(123), _name(124)]
    print(f"listed {N} files in {listed:.2f}s")


def test_warm_ups_of_a_huge_version_stay_bounded(emu, mount, huge, tmp_path):
    m = mount("--cache-dir", str(tmp_path / "cache"))
    vdir = m.path / "acme/dataset/huge-flat/v0"
    emu.log.clear()
    assert (vdir / _name(5)).read_bytes() == huge[_name(5)]
    # The first open warms the files after it in its folder: at most Warmups.SMALL_FILES of
    # them, fetched by URL batches of at most BATCH names; never the whole version's pages.
    from wandbfs.fuse.warmups import Warmups

    wait_for(lambda: len({g.path for g in blob_gets(emu)}) >= len(BLOBS), timeout=60,
             what="the warm-up to fetch the folder's next files")
    reqs = _url_requests(emu)
    assert all(r.operation == "ArtifactMembershipFiles" for r in reqs)
    assert all(len(r.variables["fileNames"]) <= SignedUrls.BATCH for r in reqs[:SignedUrls.BATCH_AFTER])
    assert all(len(r.variables["fileNames"]) <= SignedUrls.BATCH_LATER for r in reqs)
    assert len(reqs) <= 2 + Warmups.SMALL_FILES // SignedUrls.BATCH
    asked = {n for r in reqs for n in r.variables["fileNames"]}
    assert len(asked) <= Warmups.SMALL_FILES + SignedUrls.BATCH_LATER


def _drop_kernel_caches() -> None:
    """The kernel forgets the inodes nobody uses (FUSE ``forget``), as under memory pressure."""
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")


@pytest.mark.timeout(300)
def test_a_huge_folder_keeps_inode_numbers_and_references_without_a_node_per_file(emu, mount, mount_env, huge,
                                                                                 tmp_path):
    """20,000 files is a lazy folder (inodes.LAZY_MIN): listed files get no node, yet their
    numbers match what stat and a later lookup say, before and after the kernel forgets them,
    and ``wandbfs status`` counts what the kernel holds."""
    m = mount("--cache-dir", str(tmp_path / "cache"), "--no-warm")
    vdir = m.path / "acme/dataset/huge-flat/v0"
    def status() -> dict:
        return json.loads(run_cli(["status", "--json", str(m.path)], mount_env).stdout)

    base = status()
    listed = {e.name: e.inode() for e in os.scandir(vdir)}           # readdirplus: numbers, no nodes
    assert len(listed) == N + 1
    after = status()
    held = after["inodes"]
    assert held >= base["inodes"] + N + 1                              # every listed file is held
    assert after["inode_nodes"] - base["inode_nodes"] < 10             # by no node of its own
    some = [_name(i) for i in (0, 1, 7777, N - 1)] + ["unique.bin"]
    assert {n: os.stat(vdir / n).st_ino for n in some} == {n: listed[n] for n in some}
    assert (vdir / _name(7777)).read_bytes() == huge[_name(7777)]     # an open makes its node
    _drop_kernel_caches()
    wait_for(lambda: status()["inodes"] < held - N // 2, timeout=60,
             what="the kernel's forgets to reach the lazy folder's counts")
    assert {n: os.stat(vdir / n).st_ino for n in some} == {n: listed[n] for n in some}   # looked up anew
    assert {e.name: e.inode() for e in os.scandir(vdir)} == listed    # and listed anew
    assert (vdir / _name(1)).read_bytes() == huge[_name(1)]
    assert "Traceback" not in m.log and "forget failed" not in m.log, m.log[-3000:]
