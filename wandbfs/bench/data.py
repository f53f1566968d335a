"""The bench's own data: generated on disk, published into the emulator, described in data.json.

Collections in ``acme/wandb-registry-bench`` (the mount shows them under ``acme/bench/``):

| collection | versions | files per version | used by |
|---|---|---|---|
| ``bundle`` | 1 | ``model.bin`` (``--big-size``) + 200 small files under ``small/`` | R1-R4, R6-R8 |
| ``wide``   | 1 | ``--wide-files`` small files in one directory | R7 (``ls -l``) |
| ``many``   | ``--many-versions`` | 20 small files (5 top level, 15 under ``shards/``) | R5 |
| ``tiny``   | ``--tiny-versions`` | one 4 KiB ``weights.bin`` | R9 |

``bundle`` and ``wide`` always go through the real SDK (``wandb.init``, ``log_artifact``,
``link_artifact``). ``many`` and ``tiny`` start with the SDK too; after a few versions the
bench extrapolates, and if the rest would take longer than ``--sdk-publish-budget``
seconds it writes the remaining versions straight into the emulator's store with
``wandbfs.emulator.seed.publish`` (same data model, no network) and says so in a note.
The source trees under ``src/`` double as the local baselines (R5, R6).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from wandbfs.emulator.seed import SOURCE_ENTITY, SOURCE_PROJECT

from wandbfs.bench.infra import MiB, EmulatorProc, hermetic_env

ORG, REGISTRY = "acme", "bench"
SDK_PROBE_VERSIONS = 4


@dataclass
class DataSpec:
    big_size: int
    small_files: int = 200
    wide_files: int = 1000
    many_versions: int = 1000
    many_files: int = 20
    tiny_versions: int = 300
    sdk_budget_s: float = 300.0
    layout: int = 2  # bump when the generated data or its publishing changes (invalidates --work-dir reuse)


@dataclass
class Dataset:
    spec: DataSpec
    src: Path
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # "coll/vN/path" -> sha256, md5, size
    published_with: dict[str, str] = field(default_factory=dict)   # collection -> how
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    big_rel = "bundle/v0/model.bin"

    @property
    def big(self) -> dict[str, Any]:
        return self.files[self.big_rel]

    def version_files(self, coll: str, version: str) -> dict[str, dict[str, Any]]:
        prefix = f"{coll}/{version}/"
        return {k[len(prefix):]: v for k, v in self.files.items() if k.startswith(prefix)}

    def save(self, path: Path) -> None:
        d = asdict(self)
        d["src"] = str(self.src)
        path.write_text(json.dumps(d))

    @classmethod
    def load(cls, path: Path) -> "Dataset":
        d = json.loads(path.read_text())
        d["spec"] = DataSpec(**{"layout": 1, **d["spec"]})
        d["src"] = Path(d["src"])
        return cls(**d)


def _write(path: Path, data: bytes, out: dict[str, Any], rel: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    out[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest(), "size": len(data)}


def _write_big(path: Path, size: int, out: dict[str, Any], rel: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sha, md5 = hashlib.sha256(), hashlib.md5()
    left = size
    with open(path, "wb") as f:
        while left:
            chunk = os.urandom(min(left, 64 * MiB))
            sha.update(chunk)
            md5.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    out[rel] = {"sha256": sha.hexdigest(), "md5": md5.hexdigest(), "size": size}


def generate(spec: DataSpec, src: Path) -> Dataset:
    ds = Dataset(spec, src)
    rng = random.Random(1234)
    t0 = time.perf_counter()
    _write_big(src / ds.big_rel, spec.big_size, ds.files, ds.big_rel)
    for i in range(spec.small_files):
        rel = f"bundle/v0/small/part-{i:03d}.bin"
        _write(src / rel, rng.randbytes(rng.randint(1024, 64 * 1024)), ds.files, rel)
    for i in range(spec.wide_files):
        rel = f"wide/v0/file-{i:04d}.json"
        _write(src / rel, json.dumps({"i": i, "pad": "x" * rng.randint(50, 1500)}).encode(), ds.files, rel)
    names = ["config.json", "tokenizer.json", "vocab.txt", "README.md", "metrics.json"]
    names += [f"shards/shard-{k:02d}.bin" for k in range(spec.many_files - len(names))]
    for v in range(spec.many_versions):
        for k, name in enumerate(names):
            rel = f"many/v{v}/{name}"
            _write(src / rel, f"many v{v} {name}\n".encode() + rng.randbytes(rng.randint(16, 2048)), ds.files, rel)
    for v in range(spec.tiny_versions):
        rel = f"tiny/v{v}/weights.bin"
        _write(src / rel, rng.randbytes(4096), ds.files, rel)
    ds.seconds["generate"] = time.perf_counter() - t0
    return ds


def _sdk_publish(work: Path, emu: EmulatorProc, versions: list[dict[str, Any]], tag: str,
                 project: str = "bench-source") -> list[float]:
    spec = {"org": ORG, "registry": REGISTRY, "versions": versions, "entity": SOURCE_ENTITY, "project": project}
    spec_path = work / f"publish-{tag}.json"
    spec_path.write_text(json.dumps(spec))
    env = hermetic_env(work / "sdk-publish", emu.url)
    r = subprocess.run([sys.executable, "-m", "wandbfs.bench.sdkjobs", "publish", str(spec_path)], env=env,
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"SDK publishing ({tag}) failed:\n{r.stderr[-3000:]}")
    return [json.loads(line)["seconds"] for line in r.stdout.splitlines() if line.startswith("{")]


def _seed(state: Path, ds: Dataset, coll: str, first: int, count: int) -> None:
    """Direct store writes (the emulator must be stopped); one snapshot at the end."""
    from wandbfs.emulator.seed import publish
    from wandbfs.emulator.store import Store

    store = Store(state)
    real_save = store.save
    store.save = lambda: None  # type: ignore[method-assign] - one snapshot instead of one per change
    try:
        for v in range(first, count):
            files = {rel: (ds.src / coll / f"v{v}" / rel).read_bytes() for rel in ds.version_files(coll, f"v{v}")}
            publish(store, ORG, REGISTRY, coll, files, type_name="dataset")
    finally:
        real_save()


def build(work: Path, spec: DataSpec, note: Callable[[str], None]) -> tuple[Dataset, EmulatorProc]:
    """Generate, publish and return the dataset and a running emulator over it."""
    state = work / "emulator"
    from wandbfs.emulator.store import Store

    st = Store(state)  # the org and registry, as an admin would create them
    st.add_org(ORG)
    st.create_registry(ORG, REGISTRY, description="wandbfs bench data")
    del st
    print("bench: generating data", file=sys.stderr, flush=True)
    ds = generate(spec, work / "src")
    emu = EmulatorProc(state, work / "emulator.log").start()
    try:
        t0 = time.perf_counter()
        print("bench: publishing bundle and wide through the SDK", file=sys.stderr, flush=True)
        _sdk_publish(work, emu, [
            {"collection": "bundle", "source_name": "bundle-src", "dir": str(ds.src / "bundle/v0"), "type": "model"},
            {"collection": "wide", "source_name": "wide-src", "dir": str(ds.src / "wide/v0"), "type": "dataset"},
        ], "bundle")
        ds.published_with["bundle"] = ds.published_with["wide"] = "SDK"
        ds.seconds["sdk_bundle_wide"] = time.perf_counter() - t0

        # Probe the SDK's speed on a few versions of each bulk collection, then decide. These go
        # into the same source sequence (project and name) that seed.publish writes to, so a
        # version's number in its source sequence equals its number in the registry, as when
        # all of a collection's versions come from one training project (see docs/bench.md).
        probe = []
        for coll, n in (("many", spec.many_versions), ("tiny", spec.tiny_versions)):
            probe += [{"collection": coll, "source_name": f"{coll}-source", "dir": str(ds.src / coll / f"v{v}"),
                       "type": "dataset"} for v in range(min(SDK_PROBE_VERSIONS, n))]
        print(f"bench: publishing {len(probe)} probe versions through the SDK", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        times = _sdk_publish(work, emu, probe, "probe", SOURCE_PROJECT)
        probe_s = time.perf_counter() - t0
        # Per version as the SDK job timed it (without wandb.init and finish).
        per_version = sorted(times)[len(times) // 2] if times else probe_s / max(1, len(probe))
        remaining = {coll: max(0, n - SDK_PROBE_VERSIONS) for coll, n in
                     (("many", spec.many_versions), ("tiny", spec.tiny_versions))}
        estimate = per_version * sum(remaining.values())
        ds.seconds["sdk_probe"] = probe_s
        ds.seconds["sdk_per_version"] = per_version
        if estimate <= spec.sdk_budget_s:
            rest = []
            for coll, left in remaining.items():
                rest += [{"collection": coll, "source_name": f"{coll}-source", "dir": str(ds.src / coll / f"v{v}"),
                          "type": "dataset"} for v in range(SDK_PROBE_VERSIONS, SDK_PROBE_VERSIONS + left)]
            if rest:
                print(f"bench: publishing {len(rest)} more versions through the SDK (~{estimate:.0f}s)",
                      file=sys.stderr, flush=True)
                _sdk_publish(work, emu, rest, "rest", SOURCE_PROJECT)
            ds.published_with["many"] = ds.published_with["tiny"] = "SDK"
        else:
            emu.stop()
            t0 = time.perf_counter()
            for coll, left in remaining.items():
                n = SDK_PROBE_VERSIONS + left
                _seed(state, ds, coll, min(SDK_PROBE_VERSIONS, n), n)
                ds.published_with[coll] = f"SDK v0-v{min(SDK_PROBE_VERSIONS, n) - 1}, direct store writes after"
            ds.seconds["seed"] = time.perf_counter() - t0
            note(f"data: the SDK published {len(probe)} versions in {probe_s:.1f}s ({per_version:.2f}s per version "
                 f"without init/finish); the remaining {sum(remaining.values())} versions of 'many' and 'tiny' "
                 f"would take ~{estimate / 60:.1f} min (> {spec.sdk_budget_s:.0f}s budget), so they were written "
                 f"straight into the emulator's store with wandbfs.emulator.seed.publish "
                 f"({ds.seconds['seed']:.1f}s; same data model)")
            emu.start()
    except BaseException:
        emu.stop()
        raise
    return ds, emu


def mirror_tree(ds: Dataset, tree: Path, blobs: Path) -> None:
    """nginx's /tree/: the mount's layout as symlinks to the emulator's blobs (for rclone)."""
    for rel, meta in ds.files.items():
        coll = rel.split("/", 1)[0]
        if coll not in ("bundle", "wide"):
            continue
        link = tree / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        target = blobs / meta["md5"][:2] / meta["md5"][2:]
        if not target.exists():
            raise RuntimeError(f"blob for {rel} missing from the emulator's store ({target})")
        if not link.is_symlink():
            link.symlink_to(target)
