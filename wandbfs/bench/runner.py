"""The bench's driver: options, set-up, the cases in order, the report, and clean-up."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from wandbfs.bench import cases, huge, partial, shared
from wandbfs.bench.data import DataSpec, Dataset, build, mirror_tree
from wandbfs.bench.infra import (MiB, Cleanup, WrongBytes, EmulatorProc, Link, Nginx, PageCache, RcloneMount, WandbfsMount,
                    hermetic_env, machine, rmtree, sha256_file)
from wandbfs.bench.netns import WanLink, WanUnavailable
from wandbfs.bench.report import Row, markdown, table, to_json

ALL_CASES = ["R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "R10", "R11", "R12"]


def parse_size(s: str) -> int:
    s = s.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    return int(float(s[:-1] if s[-1:] in "KMG" else s) * mult)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="scripts/bench", description="wandbfs benchmark: every case side by side, "
                                 "as ratios against a baseline measured in the same run (see docs/bench.md).")
    ap.add_argument("--quick", action="store_true",
                    help="Small smoke run: 64 MiB file, 100 versions for R5 and R9 (explicit sizes still win).")
    ap.add_argument("--big-size", type=parse_size, help="Size of the large file (default 1G; --quick: 64M).")
    ap.add_argument("--repeat", type=int, default=3, help="Repeats of every measurement (min and median shown).")
    ap.add_argument("--cases", default=",".join(ALL_CASES), help="Comma list of cases, e.g. R1,R2,R7.")
    ap.add_argument("--no-wan", action="store_true", help="Loopback only (no namespace, tbf or proxy).")
    ap.add_argument("--rtt-ms", type=float, default=20.0, help="WAN round trip (default 20).")
    ap.add_argument("--rate", default="1gbit", help="WAN rate for tc tbf (default 1gbit).")
    ap.add_argument("--many-versions", type=int, help="R5 versions (default 1000; --quick: 100).")
    ap.add_argument("--tiny-versions", type=int, help="R9 versions (default 300; --quick: 100).")
    ap.add_argument("--wide-files", type=int, default=1000, help="Files in the R7 'ls -l' version (default 1000).")
    ap.add_argument("--misses", type=int, default=10000, help="R6 stat calls per pass (default 10000).")
    ap.add_argument("--sdk-publish-budget", type=float,
                    help="Seconds the SDK may spend publishing R5/R9 versions before the rest is written "
                         "straight into the emulator's store (default 300; --quick: 30).")
    ap.add_argument("--slow-trial", type=float, default=90.0,
                    help="A measurement whose first round takes longer than this runs only once (default 90s).")
    ap.add_argument("--mount-args", default="", help="Extra options for every `wandbfs mount` (one string).")
    ap.add_argument("--out", type=Path, help="Write the results as JSON here.")
    ap.add_argument("--markdown", type=Path, help="Also write the table as markdown here.")
    ap.add_argument("--work-dir", type=Path, help="Keep data here; a later run with the same sizes reuses it.")
    ap.add_argument("--keep", action="store_true", help="Do not delete the work dir at the end.")
    a = ap.parse_args(argv)
    a.big_size = a.big_size or (64 * MiB if a.quick else 1 << 30)
    a.many_versions = a.many_versions or (100 if a.quick else 1000)
    a.tiny_versions = a.tiny_versions or (100 if a.quick else 300)
    a.sdk_publish_budget = a.sdk_publish_budget if a.sdk_publish_budget is not None else (30 if a.quick else 300)
    a.cases = [c.strip().upper() for c in a.cases.split(",") if c.strip()]
    bad = [c for c in a.cases if c not in ALL_CASES]
    if bad:
        ap.error(f"unknown cases: {', '.join(bad)} (known: {', '.join(ALL_CASES)})")
    if a.repeat < 1:
        ap.error("--repeat must be at least 1")
    return a


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.repeat = args.repeat
        self.cleanup = Cleanup()
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.raw: dict[str, Any] = {}
        self.mem_samples: list[dict[str, Any]] = []
        self.links: dict[str, Link] = {}
        self.pc = PageCache()
        self.mount_args = args.mount_args.split()
        self.stream_args: list[str] = []
        self.have: dict[str, bool] = {}
        self.failed: list[str] = []
        self.t_start = time.time()

    # ---- reporting ---------------------------------------------------------------------
    def note(self, msg: str) -> None:
        self.notes.append(msg)
        print(f"bench: note: {msg}", file=sys.stderr, flush=True)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(f"bench: {row.case} {row.link} {row.what}: {row.fmt(row.ours)}"
              + (f" vs {row.base_label} {row.fmt(row.base)}" if row.base else "")
              + (f" -> {row.ratio:.2f}x" if row.ratio is not None else "")
              + ({True: " (met)", False: " (MISSED)", None: ""}[row.met]), file=sys.stderr, flush=True)
        return row

    def progress(self, msg: str) -> None:
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """A failing part is reported and the bench goes on with the next one."""
        try:
            yield
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001
            self.failed.append(what)
            tb = traceback.format_exc()
            with (self.work / "errors.log").open("a") as f:
                f.write(f"== {what}\n{tb}\n")
            self.note(f"{what} failed: {type(e).__name__}: {str(e).strip()[:600]} (details: {self.errors_log})")

    def reps(self, label: str) -> Iterator[int]:
        t0 = time.monotonic()
        for i in range(self.repeat):
            yield i
            took = time.monotonic() - t0
            if i == 0 and self.repeat > 1 and took > self.args.slow_trial:
                self.note(f"{label}: one round took {took:.0f}s (> --slow-trial {self.args.slow_trial:.0f}s), "
                          f"so it ran once instead of {self.repeat} times")
                return

    @property
    def errors_log(self) -> Path:
        if self.args.keep or self.args.work_dir:
            return self.work / "errors.log"
        if self.args.out:
            return self.args.out.with_name(self.args.out.stem + ".errors.log")
        return Path(tempfile.gettempdir()) / f"wandbfs-bench-{os.getpid()}.errors.log"

    # ---- resources ---------------------------------------------------------------------
    def new_dir(self, tag: str) -> Path:
        p = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=self.work / "scratch"))
        return p

    @contextlib.contextmanager
    def mount(self, link: Link, cache: Path, extra: list[str] | None = None) -> Iterator[WandbfsMount]:
        m = WandbfsMount(self.work, link, cache, [*self.mount_args, *(extra or [])])
        undo = self.cleanup.push(f"wandbfs mount {m.path}", m.unmount)
        m.__enter__()
        try:
            yield m
        except BaseException as e:
            if not isinstance(e, KeyboardInterrupt):
                with (self.work / "errors.log").open("a") as f:
                    f.write(f"== {type(e).__name__}: {e}\n-- daemon log {m.log_file} ({link.name}), last lines:\n"
                            f"{m.log_tail(60)}\n")
            raise
        finally:
            self.cleanup.pop(undo)

    @contextlib.contextmanager
    def rclone(self, link: Link, cache: Path) -> Iterator[RcloneMount]:
        m = RcloneMount(self.work, link, cache)
        undo = self.cleanup.push(f"rclone mount {m.path}", m.unmount)
        m.__enter__()
        try:
            yield m
        finally:
            self.cleanup.pop(undo)

    def curl(self, link: Link, url: str, byte_range: str | None = None, out: str = "/dev/null") -> dict[str, float]:
        cmd = ["curl", "-sS", "--fail", "-o", out, "-w", "%{time_starttransfer} %{time_total} %{size_download}"]
        if byte_range:
            cmd += ["-r", byte_range]
        r = subprocess.run(link.wrap(cmd + [url]), capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"curl {url}: {r.stderr.strip()}")
        ttfb, total, size = r.stdout.split()
        return {"ttfb": float(ttfb), "total": float(total), "size": int(float(size))}

    def sdk_download(self, link: Link, names: list[str], roots: list[Path], cache: Path) -> dict[str, Any]:
        home = self.new_dir("sdk-home")
        env = hermetic_env(home, link.emu_url)
        env["WANDB_CACHE_DIR"] = str(cache)
        spec = home / "spec.json"
        spec.write_text(json.dumps({"names": names, "roots": [str(r) for r in roots]}))
        t0 = time.perf_counter()
        r = subprocess.run(link.wrap([sys.executable, "-m", "wandbfs.bench.sdkjobs", "download", str(spec)]),
                           env=env, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - t0
        rmtree(home)
        if r.returncode != 0:
            raise RuntimeError(f"SDK download failed: {r.stderr.strip()[-1500:]}")
        out = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
        out["wall"] = wall
        return out

    def verify(self, path: Path, meta: dict[str, Any], who: str) -> None:
        got = sha256_file(path)
        if got != meta["sha256"]:
            raise WrongBytes(f"{who}: {path} has sha256 {got[:12]}..., the source {meta['sha256'][:12]}...")

    def verify_tree(self, root: Path, expect: dict[str, dict[str, Any]], who: str) -> None:
        seen = set()
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                p = Path(dirpath) / f
                rel = str(p.relative_to(root))
                seen.add(rel)
                if rel in expect:
                    self.verify(p, expect[rel], who)
        missing = set(expect) - seen
        if missing:
            raise WrongBytes(f"{who}: {len(missing)} files missing under {root}, e.g. {sorted(missing)[:3]}")

    def blob(self, meta: dict[str, Any]) -> Path:
        return self.emu.state / "blobs" / meta["md5"][:2] / meta["md5"][2:]

    def warm_server(self, meta: dict[str, Any]) -> None:
        """Keep the server side's copy in the page cache: the client is what we measure."""
        from wandbfs.bench.infra import read_file

        read_file(self.blob(meta))

    # ---- set-up ------------------------------------------------------------------------
    def setup(self) -> None:
        a = self.args
        if a.work_dir:
            self.work = a.work_dir.absolute()
            self.work.mkdir(parents=True, exist_ok=True)
        else:
            self.work = Path(tempfile.mkdtemp(prefix="wandbfs-bench-"))
        if not a.keep and not a.work_dir:
            self.cleanup.push("work dir", lambda: rmtree(self.work))
        for sub in ("scratch", "mnt"):
            rmtree(self.work / sub)
            (self.work / sub).mkdir(parents=True)
        self.cleanup.push("scratch dirs", lambda: (rmtree(self.work / "scratch"), rmtree(self.work / "daemon")))
        self.progress(f"work dir {self.work}")

        for tool in ("curl", "nginx", "rclone", "fusermount3"):
            self.have[tool] = shutil.which(tool) is not None
        if not self.have["fusermount3"] or not os.path.exists("/dev/fuse"):
            raise SystemExit("bench: FUSE is not available (fusermount3 and /dev/fuse are needed)")
        if not self.have["curl"]:
            raise SystemExit("bench: curl is needed (scripts/bench installs it)")
        if not self.pc.global_ok:
            self.note(f"page cache dropped with {self.pc.method} (drop_caches is not writable)")

        spec = DataSpec(big_size=a.big_size, wide_files=a.wide_files, many_versions=a.many_versions,
                        tiny_versions=a.tiny_versions, sdk_budget_s=a.sdk_publish_budget)
        data_json = self.work / "data.json"
        reuse = False
        if data_json.exists() and (self.work / "emulator" / "state.json").exists():
            try:
                old = Dataset.load(data_json)
                reuse = dict(old.spec.__dict__, sdk_budget_s=0) == dict(spec.__dict__, sdk_budget_s=0)
            except (TypeError, ValueError, KeyError):
                reuse = False
        if reuse:
            self.ds = Dataset.load(data_json)
            self.emu = EmulatorProc(self.work / "emulator", self.work / "emulator.log").start()
            self.note(f"data: reused from {self.work} (published earlier: {self.ds.published_with})")
        else:
            for sub in ("emulator", "src", "nginx", "tree", "sdk-publish"):
                rmtree(self.work / sub)
            data_json.unlink(missing_ok=True)
            self.ds, self.emu = build(self.work, spec, self.note)
            self.ds.save(data_json)
        self.cleanup.push("emulator", self.emu.stop)
        self.raw["data"] = {"published_with": self.ds.published_with, "seconds": self.ds.seconds,
                            "spec": self.ds.spec.__dict__}

        if self.have["nginx"]:
            mirror_tree(self.ds, self.work / "tree", self.emu.state / "blobs")
            self.nginx = Nginx(self.work, self.emu.state / "blobs", self.work / "tree").start()
            self.cleanup.push("nginx", self.nginx.stop)
            nginx_url = self.nginx.url
        else:
            self.nginx = None
            nginx_url = ""
            self.note("nginx is not installed: no nginx reference rate and no rclone case (R7)")
        self.links["lo"] = Link("lo", 0.0, self.emu.url, nginx_url)

        if a.no_wan:
            self.note("WAN link skipped (--no-wan): every case runs on loopback only")
        else:
            wan = WanLink(rtt_ms=a.rtt_ms, rate=a.rate)
            try:
                self.cleanup.push("WAN namespace", wan.down)
                wan.up()
                targets = {"emu": f"127.0.0.1:{self.emu.port}"}
                if self.nginx:
                    targets["nginx"] = f"127.0.0.1:{self.nginx.port}"
                urls = wan.start_proxy(targets)
                self.links["wan"] = Link("wan", a.rtt_ms, urls["emu"], urls.get("nginx", ""), wan)
            except WanUnavailable as e:
                wan.down()
                self.note(f"WAN link unavailable ({e}); falling back to loopback only: the WAN goals "
                          "(R2, R3, R4) are judged on loopback figures and marked as such")

        help_text = subprocess.run([sys.executable, "-m", "wandbfs.cli", "mount", "--help"], capture_output=True,
                                   text=True).stdout
        if "--verify" in help_text and "stream" in help_text:
            self.stream_args = ["--verify", "stream"]
        else:
            self.note("this wandbfs has no streaming read mode (`--verify stream`); R4 measures the default mode")
        self.raw["mount_help_has"] = {opt: opt in help_text for opt in
                                      ("--verify", "--part-size", "--concurrency", "--read-timeout")}

    # ---- the run -----------------------------------------------------------------------
    def run(self) -> int:
        fns = {"R1": cases.r1_warm_reread, "R2": cases.r2_cold_read, "R3": cases.r3_vs_sdk,
               "R4": cases.r4_first_byte, "R5": cases.r5_metadata, "R6": cases.r6_misses,
               "R7": cases.r7_rclone, "R8": cases.r8_memory, "R9": cases.r9_cached_vs_sdk,
               "R10": partial.r10_partial_reads, "R11": huge.r11_huge_version, "R12": shared.r12_shared_tier}
        for c in self.args.cases:
            t0 = time.monotonic()
            self.progress(f"--- {c} ---")
            with self.guard(c):
                fns[c](self)
            self.raw.setdefault("case_seconds", {})[c] = time.monotonic() - t0
        return 0

    def report(self) -> str:
        m = machine()
        head = (f"wandbfs bench - {time.strftime('%Y-%m-%d %H:%M')} - {m['nproc']} CPUs ({m['cpu']}), "
                f"{m['mem_bytes'] / (1 << 30):.0f} GiB, kernel {m['kernel']}, wandbfs {m['wandbfs_commit']}\n"
                f"large file {self.args.big_size / MiB:,.0f} MiB, {self.repeat} repeats (best / median), links: "
                + "; ".join(f"{k} = {v.describe}" for k, v in self.links.items()))
        text = head + "\n\n" + table(self.rows)
        if self.notes:
            text += "\n\nNotes:\n" + "\n".join(f"- {n}" for n in self.notes)
        if self.args.out:
            self.args.out.write_text(to_json(self.rows, machine=m, notes=self.notes, raw=self.raw,
                                             mem_samples=self.mem_samples, failed=self.failed,
                                             config={k: (str(v) if isinstance(v, Path) else v)
                                                     for k, v in vars(self.args).items()},
                                             links={k: v.describe for k, v in self.links.items()},
                                             seconds=time.time() - self.t_start))
        if self.args.markdown:
            self.args.markdown.write_text(head + "\n\n" + markdown(self.rows) + "\n")
        return text


def keep_errors(b: Bench) -> None:
    """The work dir goes away at the end; the failures' tracebacks and daemon logs must not."""
    src = getattr(b, "work", None)
    if src is None or not (src / "errors.log").exists():
        return
    dst = b.errors_log
    if dst != src / "errors.log":
        shutil.copyfile(src / "errors.log", dst)
    print(f"bench: failures and daemon logs: {dst}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: not root: no drop_caches, no WAN namespace, no VmHWM reset; results will say so",
              file=sys.stderr)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    b = Bench(args)
    code = 0
    try:
        b.setup()
        b.run()
        print("\n" + b.report())
        if b.failed:
            code = 1
    except KeyboardInterrupt:
        print("\nbench: interrupted; cleaning up", file=sys.stderr)
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        keep_errors(b)
        b.cleanup.run()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return code
