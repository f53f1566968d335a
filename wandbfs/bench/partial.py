"""R10, partial reads: what a reader that wants part of a file costs in bytes from storage,
and that a loader that wants all of it is not slowed down by the adaptive fill (issue #13).

Data (made once per work dir, published through the real SDK into two collections):

* ``r10-parquet/v0``: a dataset of ``PARQUET_FILES`` parquet files of 20-33 MB each
  (pyarrow, snappy, 100,000-row groups: 3-5 groups a file), seven columns of the usual
  kinds (ids, timestamps, a dictionary-encoded user, floats, a small label, free text);
* ``r10-safetensors/v0``: ``model.safetensors``, ~258 MiB, a transformer-shaped checkpoint
  (fp16 matrices, fp32 norms).

Rows, each from a fresh mount with an empty cache, names resolved first (untimed), on
every link. "From storage" is what the emulator sent for blob GETs of the files read (its
request log's ``bytes_out``, counted once the fill has gone quiet, so read-ahead and a
switch to a whole-file fill are counted too):

* ``R10.2mib`` / ``.mid``: 2 MiB read (two 1 MiB ``readv``) at offset 0 / 128 MiB of
  the 256 MiB file; goal <= 40 MiB from storage.
* ``R10.parquet.column``: ``pq.read_table(version_dir, columns=[COLUMN])``; goal: at most
  3x the column's bytes (its column chunks' ``total_compressed_size``, all files).
* ``R10.parquet.metadata`` / ``.count_rows``: ``pq.read_metadata`` of every file, and
  ``pyarrow.dataset.dataset(dir).count_rows()``, against the footer bytes (each file's
  ``serialized_size`` + 8); context.
* ``R10.safetensors``: ``safe_open(path, framework="np")`` and ``get_tensor`` of every key
  in ``keys()`` order (mmap), in a child process, timed there after its imports; the
  default mount against ``--fill whole``, alternating round by round; goal: no slower.

Every read is checked: the bytes against the source file, the parquet table and metadata
against the same calls on the local copy, the tensors' sha256 against the local file's.
pyarrow, safetensors and numpy are the ``[bench]`` extra (``scripts/bench`` installs it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from wandbfs.bench.infra import MiB, WrongBytes, rmtree, wait_until
from wandbfs.bench.report import Row, speed_ratio

if TYPE_CHECKING:
    from wandbfs.bench.infra import Link
    from wandbfs.bench.runner import Bench

LAYOUT = 1                      # bump when the generated data changes
PARQUET, SAFETENSORS = "r10-parquet", "r10-safetensors"
PARQUET_FILES = 6
ROW_GROUP = 100_000
COLUMN = "score"                # float32: ~400 KB a column chunk, ~7% of a file
ST_NAME = "model.safetensors"
READ = 2 * MiB
GOAL_2MIB = 40 * MiB
GOAL_COLUMN = 3.0               # fetched <= 3x the column's bytes
GOAL_ST = 0.95                  # whole-fill time / adaptive time, medians (noise on 2 shared CPUs: ~5%)
QUIET_S = 1.0                   # no new blob request and none open for this long: the fill is done

ST_LOAD = """
import hashlib, json, sys, time
import numpy
from safetensors import safe_open
wall0, t0 = time.time(), time.perf_counter()
with safe_open(sys.argv[1], framework="np") as f:
    tensors = {k: f.get_tensor(k) for k in f.keys()}
took = time.perf_counter() - t0
h = hashlib.sha256()
for k in sorted(tensors):
    h.update(k.encode()); h.update(tensors[k].tobytes())
print(json.dumps({"seconds": took, "wall0": wall0, "sha256": h.hexdigest(), "tensors": len(tensors)}))
"""


# ---- data ---------------------------------------------------------------------------------

def _file_meta(p: Path) -> dict[str, Any]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(p, "rb") as f:
        while chunk := f.read(8 * MiB):
            sha.update(chunk)
            md5.update(chunk)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest(), "size": p.stat().st_size}


def _write_parquet(d: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1013)
    users = pa.array([f"user-{i:05d}" for i in range(50_000)])
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ,.", dtype=np.uint8)
    start = 0
    for k in range(PARQUET_FILES):
        n = 300_000 + 40_000 * k                              # 18-30 MB a file
        lens = rng.integers(8, 56, n, dtype=np.int32)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(lens, out=offsets[1:])
        text = alphabet[rng.integers(0, len(alphabet), int(offsets[-1]))]
        table = pa.table({
            "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
            "ts": pa.array(1_700_000_000_000 + np.sort(rng.integers(0, 86_400_000 * 30, n)), pa.timestamp("ms")),
            "user": users.take(pa.array(rng.integers(0, len(users), n))).dictionary_encode(),
            COLUMN: pa.array(rng.random(n, dtype=np.float32)),
            "value": pa.array(rng.standard_normal(n)),
            "label": pa.array(rng.integers(0, 10, n, dtype=np.int32)),
            "text": pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text.tobytes())),
        })
        pq.write_table(table, d / f"part-{k:05d}.parquet", row_group_size=ROW_GROUP, compression="snappy")
        start += n


def _write_safetensors(d: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1014)
    hidden, mlp, vocab, layers = 1024, 2816, 32_000, 8

    def w(*shape: int) -> Any:
        return rng.standard_normal(shape, dtype=np.float32).astype(np.float16)

    t = {"model.embed_tokens.weight": w(vocab, hidden), "model.norm.weight": np.ones(hidden, np.float32)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[p + f"self_attn.{name}.weight"] = w(hidden, hidden)
        t[p + "mlp.gate_proj.weight"] = w(mlp, hidden)
        t[p + "mlp.up_proj.weight"] = w(mlp, hidden)
        t[p + "mlp.down_proj.weight"] = w(hidden, mlp)
        t[p + "input_layernorm.weight"] = rng.random(hidden, dtype=np.float32)
        t[p + "post_attention_layernorm.weight"] = rng.random(hidden, dtype=np.float32)
    save_file(t, str(d / ST_NAME), metadata={"format": "np"})


def ensure_data(b: "Bench") -> dict[str, Any]:
    """Make and publish R10's data unless this work dir's emulator already has it."""
    marker = b.work / "r10.json"
    src = b.work / "r10-src"
    try:
        info = json.loads(marker.read_text())
        if info.get("layout") == LAYOUT and all(
                b.blob(m).exists() and (src / rel).is_file() for rel, m in info["files"].items()):
            return info
    except (OSError, ValueError, KeyError):
        pass
    from wandbfs.bench.data import _sdk_publish

    rmtree(src)
    t0 = time.perf_counter()
    b.progress("R10: writing a parquet dataset and a safetensors file")
    _write_parquet(src / PARQUET / "v0")
    _write_safetensors(src / SAFETENSORS / "v0")
    files = {str(p.relative_to(src)): _file_meta(p) for p in sorted(src.rglob("*")) if p.is_file()}
    made = time.perf_counter() - t0
    b.progress("R10: publishing them through the SDK")
    t0 = time.perf_counter()
    _sdk_publish(b.work, b.emu, [
        {"collection": PARQUET, "source_name": f"{PARQUET}-src", "dir": str(src / PARQUET / "v0"), "type": "dataset"},
        {"collection": SAFETENSORS, "source_name": f"{SAFETENSORS}-src", "dir": str(src / SAFETENSORS / "v0"),
         "type": "model"},
    ], "r10")
    info = {"layout": LAYOUT, "files": files}
    marker.write_text(json.dumps(info))
    n_pq = sum(1 for r in files if r.startswith(PARQUET))
    b.note(f"R10: data made in {made:.0f}s and published through the SDK in {time.perf_counter() - t0:.0f}s: "
           f"{n_pq} parquet files ({sum(m['size'] for r, m in files.items() if r.startswith(PARQUET)) / MiB:.0f} MiB), "
           f"{ST_NAME} ({files[f'{SAFETENSORS}/v0/{ST_NAME}']['size'] / MiB:.0f} MiB)")
    return info


# ---- counting -----------------------------------------------------------------------------

def storage_gets(b: "Bench", md5s: set[str], timeout: float = 120) -> list[dict[str, Any]]:
    """The blob GETs of ``md5s`` since the log was cleared, once the fill has gone quiet:
    every request answered and no new one for ``QUIET_S`` (read-ahead and whole-file fills
    go on after the read returns; what they fetch is what the read cost)."""
    state: dict[str, Any] = {"n": -1, "since": time.monotonic(), "gets": []}

    def quiet() -> bool:
        gets = [e for e in b.emu.log() if e["route"] in ("blob", "artifactsV2") and e["method"] == "GET"]
        now = time.monotonic()
        if len(gets) != state["n"] or not all(e["done"] for e in gets):
            state.update(n=len(gets), since=now)
        state["gets"] = gets
        return now - state["since"] >= QUIET_S

    wait_until(quiet, timeout, "the mount's fills to go quiet")
    return [e for e in state["gets"] if e["path"].rsplit("/", 1)[-1] in md5s]


def _sent(gets: list[dict[str, Any]]) -> int:
    return sum(int(e["bytes_out"]) for e in gets)


def _ranges(gets: list[dict[str, Any]], t0: float) -> list[str]:
    """Each GET as "+ms-after-start blob[:6] range bytes" (the emulator stamps with time.time())."""
    return [f"+{(e['t'] - t0) * 1000:.0f}ms {e['path'].rsplit('/', 1)[-1][:6]} {e.get('range') or '(whole)'} "
            f"{e['bytes_out']}" for e in gets]


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# ---- the case -----------------------------------------------------------------------------

def r10_partial_reads(b: "Bench") -> None:
    try:
        import pyarrow  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as e:
        b.note(f"R10 skipped: {e.name} is not installed (scripts/bench installs the [bench] extra)")
        return
    info = ensure_data(b)
    for link in b.links.values():
        with b.guard(f"R10 2mib {link.name}"):
            _two_mib(b, link, info)
        with b.guard(f"R10 parquet {link.name}"):
            _parquet(b, link, info)
        with b.guard(f"R10 safetensors {link.name}"):
            _safetensors(b, link, info)


@contextlib.contextmanager
def _cold(b: "Bench", link: "Link", extra: list[str] | None = None) -> Iterator[Any]:
    """A fresh mount on an empty cache (the cache goes with the mount)."""
    cache = b.new_dir("r10-cache")
    try:
        with b.mount(link, cache, extra) as m:
            yield m
    finally:
        rmtree(cache)


def _two_mib(b: "Bench", link: "Link", info: dict[str, Any]) -> None:
    rel = f"{SAFETENSORS}/v0/{ST_NAME}"
    meta = info["files"][rel]
    src = b.work / "r10-src" / rel
    for key, off in (("2mib", 0), ("2mib.mid", meta["size"] // 2)):
        with open(src, "rb") as f:
            want = hashlib.sha256(os.pread(f.fileno(), READ, off)).hexdigest()
        fetched: list[float] = []
        secs: list[float] = []
        reqs: list[list[str]] = []
        for _ in b.reps(f"R10 {key} {link.name}"):
            b.warm_server(meta)
            with _cold(b, link) as m:
                p = m.root() / rel
                os.stat(p)
                b.emu.clear_log()
                buf = bytearray(READ)
                mv = memoryview(buf)
                wall = time.time()
                t0 = time.perf_counter()
                fd = os.open(p, os.O_RDONLY)
                try:
                    got = 0
                    while got < READ:
                        k = os.preadv(fd, [mv[got:got + MiB]], off + got)
                        if k == 0:
                            break
                        got += k
                finally:
                    os.close(fd)
                secs.append(time.perf_counter() - t0)
                if hashlib.sha256(buf[:got]).hexdigest() != want:
                    raise WrongBytes(f"wandbfs: 2 MiB at {off} of {p} differ from the source")
                gets = storage_gets(b, {meta["md5"]})
                fetched.append(float(_sent(gets)))
                reqs.append(_ranges(gets, wall))
        b.raw.setdefault("R10", {}).setdefault(link.name, {})[key] = {"fetched": fetched, "seconds": secs,
                                                                     "requests": reqs}
        where = "start" if off == 0 else f"{off // MiB} MiB in"
        b.add(Row("R10", f"R10.{link.name}.{key}", f"2 MiB read at the {where} of a {meta['size'] / MiB:.0f} MiB "
                  f"file: from storage ({len(reqs[-1])} GETs)", link.name, "MiB", fetched, [float(READ)] * len(fetched),
                  "bytes read", None, f"<= {GOAL_2MIB // MiB} MiB", _med(fetched) <= GOAL_2MIB,
                  READ / _med(fetched) if fetched else None, extra={"seconds": secs}))


def _parquet(b: "Bench", link: "Link", info: dict[str, Any]) -> None:
    import pyarrow.dataset as pds
    import pyarrow.parquet as pq

    rels = sorted(r for r in info["files"] if r.startswith(f"{PARQUET}/"))
    md5s = {info["files"][r]["md5"] for r in rels}
    local = b.work / "r10-src" / PARQUET / "v0"
    want_table = pq.read_table(local, columns=[COLUMN])
    want_meta = [pq.read_metadata(b.work / "r10-src" / r) for r in rels]
    want_rows = sum(md.num_rows for md in want_meta)
    ci = want_meta[0].schema.to_arrow_schema().get_field_index(COLUMN)
    column = sum(md.row_group(g).column(ci).total_compressed_size for md in want_meta for g in range(md.num_row_groups))
    footer = sum(md.serialized_size + 8 for md in want_meta)
    total = sum(info["files"][r]["size"] for r in rels)

    def read_column(vdir: Path) -> None:
        t = pq.read_table(vdir, columns=[COLUMN])
        if not t.equals(want_table):
            raise WrongBytes(f"wandbfs: read_table({vdir}, columns=[{COLUMN!r}]) differs from the local copy's")

    def read_meta(vdir: Path) -> None:
        for r, want in zip(rels, want_meta):
            if not pq.read_metadata(vdir / Path(r).name).equals(want):
                raise WrongBytes(f"wandbfs: the parquet metadata of {r} differs from the local copy's")

    def count_rows(vdir: Path) -> None:
        got = pds.dataset(vdir, format="parquet").count_rows()
        if got != want_rows:
            raise WrongBytes(f"wandbfs: count_rows() of {vdir} is {got}, the local copy has {want_rows}")

    res: dict[str, dict[str, list[Any]]] = {}
    for key, fn in (("column", read_column), ("metadata", read_meta), ("count_rows", count_rows)):
        r = res[key] = {"fetched": [], "seconds": [], "requests": []}
        for _ in b.reps(f"R10 parquet {key} {link.name}"):
            with _cold(b, link) as m:
                vdir = m.root() / PARQUET / "v0"
                os.listdir(vdir)
                b.emu.clear_log()
                wall = time.time()
                t0 = time.perf_counter()
                fn(vdir)
                r["seconds"].append(time.perf_counter() - t0)
                gets = storage_gets(b, md5s)
                r["fetched"].append(float(_sent(gets)))
                r["requests"].append(_ranges(gets, wall))
    b.raw.setdefault("R10", {}).setdefault(link.name, {})["parquet"] = res | {
        "column_bytes": column, "footer_bytes": footer, "files_bytes": total, "files": len(rels)}
    n = len(rels)
    got = res["column"]["fetched"]
    b.add(Row("R10", f"R10.{link.name}.parquet.column",
              f"read_table(columns=[{COLUMN!r}]) of {n} files ({total / MiB:.0f} MiB): from storage, "
              f"{_med(got) / column:.2f}x the column", link.name, "MiB", got, [float(column)] * len(got),
              "the column chunks", None, f"<= {GOAL_COLUMN:g}x the column",
              _med(got) <= GOAL_COLUMN * column, column / _med(got) if got else None,
              extra={"seconds": res["column"]["seconds"], "footer_bytes": footer}))
    for key, what in (("metadata", f"pq.read_metadata of each of the {n} files"),
                      ("count_rows", "dataset(dir).count_rows()")):
        got = res[key]["fetched"]
        b.add(Row("R10", f"R10.{link.name}.parquet.{key}", f"{what}: from storage, {_med(got) / footer:.1f}x "
                  f"the footers ({_med(got) / n / 1024:.0f} KiB a file)", link.name, "MiB", got,
                  [float(footer)] * len(got), "the footers", None, "", None, footer / _med(got) if got else None,
                  extra={"seconds": res[key]["seconds"]}))


def _st_load(p: Path) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-c", ST_LOAD, str(p)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"safetensors load of {p} failed: {r.stderr.strip()[-800:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _safetensors(b: "Bench", link: "Link", info: dict[str, Any]) -> None:
    rel = f"{SAFETENSORS}/v0/{ST_NAME}"
    meta = info["files"][rel]
    want = _st_load(b.work / "r10-src" / rel)["sha256"]
    times: dict[str, list[float]] = {"adaptive": [], "whole": []}
    fetched: dict[str, list[float]] = {"adaptive": [], "whole": []}
    reqs: dict[str, list[list[str]]] = {"adaptive": [], "whole": []}
    for i in b.reps(f"R10 safetensors {link.name}"):
        for mode in (("adaptive", "whole") if i % 2 == 0 else ("whole", "adaptive")):
            b.warm_server(meta)
            with _cold(b, link, ["--fill", mode]) as m:
                p = m.root() / rel
                os.stat(p)
                b.emu.clear_log()
                out = _st_load(p)
                if out["sha256"] != want:
                    raise WrongBytes(f"wandbfs (--fill {mode}): the tensors of {p} differ from the local file's")
                times[mode].append(out["seconds"])
                gets = storage_gets(b, {meta["md5"]})
                fetched[mode].append(float(_sent(gets)))
                reqs[mode].append(_ranges(gets, out["wall0"]))
    b.raw.setdefault("R10", {}).setdefault(link.name, {})["safetensors"] = {"seconds": times, "fetched": fetched,
                                                                           "requests": reqs}
    r = speed_ratio(times["adaptive"], times["whole"])
    b.add(Row("R10", f"R10.{link.name}.safetensors", f"safe_open + get_tensor of every key, cold "
              f"({meta['size'] / MiB:.0f} MiB; from storage {_med(fetched['adaptive']) / MiB:.0f} vs "
              f"{_med(fetched['whole']) / MiB:.0f} MiB)", link.name, "s", times["adaptive"], times["whole"],
              "--fill whole", meta["size"], f">= {GOAL_ST:g}x (no slower)", None if r is None else r >= GOAL_ST, r))
