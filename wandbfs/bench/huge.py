"""R11, a huge version: 200,000 files in one folder of one version (``acme/bench/huge/v0``).

Each round is a fresh mount with an empty cache (names above the version resolved first,
untimed): ``ls -f`` of the version (the first listing: the manifest's load and parse
included), then ``ls -l`` on the same mount, then the first open and read of one file
(its signed URL included), and the daemon's peak RSS over the three (``VmHWM``, reset after
the mount). The goals are absolute (issue #13, item 5): 2 s, 2 s, 2 s and 150 MiB. Beside the
listings, for scale: the same ``ls`` of a local folder of as many empty files, warm.

The version is written straight into the emulator's store (``emulator.seed.publish``; the
SDK would take most of an hour for 200,000 files), with the contents of its files drawn
from 1,000 small blobs, and a few unique files that the reads use. It is made once per work
dir (``huge.json`` says how many files it has).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from wandbfs.bench.infra import MiB, WrongBytes, read_file, reset_peak, rmtree, sha256_file
from wandbfs.bench.report import Row, speed_ratio

if TYPE_CHECKING:
    from wandbfs.bench.runner import Bench

FILES = 200_000
COLLECTION = "huge"
GOAL_S = 2.0
GOAL_RSS = 150 * MiB


def _name(i: int) -> str:
    return f"sample-{i:06d}.json"


def _unique(i: int) -> bytes:
    return f"unique file {i}\n".encode() * 64


def ensure_data(b: "Bench", n: int = FILES) -> None:
    """Publish the huge version into the emulator's store, unless this work dir has it."""
    marker = b.work / "huge.json"
    try:
        if json.loads(marker.read_text()).get("files") == n:
            return
    except (OSError, ValueError):
        pass
    from wandbfs.emulator.seed import publish
    from wandbfs.emulator.store import Store

    b.progress(f"R11: publishing a version of {n:,} files into the emulator's store")
    t0 = time.perf_counter()
    b.emu.stop()
    try:
        store = Store(b.emu.state)
        real_save = store.save
        store.save = lambda: None  # type: ignore[method-assign] - one snapshot at the end
        blobs = [f"blob {k}\n".encode() * (1 + k % 40) for k in range(1000)]
        files = {_name(i): blobs[i % len(blobs)] for i in range(n)}
        for i in (n // 2, n // 2 + 1, n - 1):
            files[_name(i)] = _unique(i)
        publish(store, "acme", "bench", COLLECTION, files, type_name="dataset")
        real_save()
    finally:
        b.emu.start()
    marker.write_text(json.dumps({"files": n}))
    b.note(f"R11: a version of {n:,} files written straight into the emulator's store "
           f"({time.perf_counter() - t0:.0f}s; 1,000 distinct small blobs)")


def _local_folder(b: "Bench", n: int) -> Path:
    """A local folder of ``n`` empty files named like the version's (made once per work dir)."""
    d = b.work / f"huge-local-{n}"
    if not (d / _name(n - 1)).exists():
        d.mkdir(exist_ok=True)
        for i in range(n):
            (d / _name(i)).touch()
    return d


def _ls(args: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, timeout=600)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.decode(errors='replace').strip()[:300]}")
    return took, r.stdout.count(b"\n")


def r11_huge_version(b: "Bench") -> None:
    n = FILES
    ensure_data(b, n)
    link = b.links["lo"]
    local = _local_folder(b, n)
    ls_f: list[float] = []
    ls_l: list[float] = []
    local_f: list[float] = []
    local_l: list[float] = []
    first_read: list[float] = []
    peaks: list[float] = []
    befores: list[float] = []
    with b.guard("R11"):
        for i in b.reps("R11"):
            cache = b.new_dir("r11-cache")
            try:
                with b.mount(link, cache) as m:
                    vdir = m.root() / COLLECTION / "v0"
                    os.stat(m.root() / COLLECTION)      # names above the version: not timed
                    reset_peak(m.pid)
                    befores.append(float(m.mem().get("VmRSS", 0)))
                    took, lines = _ls(["ls", "-f", str(vdir)])
                    if lines not in (n, n + 2):         # every file (and "." and ".." if listed)
                        raise RuntimeError(f"ls -f listed {lines} names in {vdir}, the version has {n} files")
                    ls_f.append(took)
                    took, lines = _ls(["ls", "-l", str(vdir)])
                    if lines != n + 1:                  # "total", then every file
                        raise RuntimeError(f"ls -l printed {lines} lines for {n} files")
                    ls_l.append(took)
                    _ls(["ls", "-l", str(local)])                # warm
                    local_f.append(_ls(["ls", "-f", str(local)])[0])
                    local_l.append(_ls(["ls", "-l", str(local)])[0])
                    k = n // 2 + (i % 2)
                    p = vdir / _name(k)
                    t0 = time.perf_counter()
                    read_file(p)
                    first_read.append(time.perf_counter() - t0)
                    if sha256_file(p) != hashlib.sha256(_unique(k)).hexdigest():
                        raise WrongBytes(f"wandbfs: {p} does not hold what was published")
                    peaks.append(float(m.mem().get("VmHWM", 0)))
            finally:
                rmtree(cache)
        b.raw["R11"] = {"files": n, "ls_f": ls_f, "ls_l": ls_l, "first_read": first_read, "peak_rss": peaks,
                        "rss_before": befores, "local_ls_f": local_f, "local_ls_l": local_l}
        for key, what, samples, base in (
                ("ls", f"first ls -f of a {n:,}-file version (fresh mount)", ls_f, local_f),
                ("lsl", "then ls -l of it", ls_l, local_l),
                ("open", "then the first open + read of one file", first_read, None)):
            med = sorted(samples)[len(samples) // 2] if samples else None
            b.add(Row("R11", f"R11.{key}", what, link.name, "s", samples, base,
                      "local folder, warm" if base else "", None, f"<= {GOAL_S:g} s",
                      None if med is None else med <= GOAL_S, speed_ratio(samples, base) if base else None))
        med = sorted(peaks)[len(peaks) // 2] if peaks else None
        b.add(Row("R11", "R11.rss", "daemon peak RSS over the three", link.name, "MiB", peaks, befores,
                  "RSS after mounting", None, f"<= {GOAL_RSS // MiB} MiB", None if med is None else med <= GOAL_RSS,
                  None))
