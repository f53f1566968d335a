"""The cases R1-R9. Each is a function of the bench and can run alone (``--cases R4``).

Every measurement is paired with its baseline in the same run, the two alternating round by
round; what a client returned is checked against the source's sha256 after each timed
read (outside the timing), so a fast wrong answer fails instead of winning.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wandbfs.bench.infra import MiB, WrongBytes, dir_usage, graphql_counts, read_file, reset_peak, rmtree, timed
from wandbfs.bench.report import Row, speed_ratio

if TYPE_CHECKING:
    from wandbfs.bench.infra import Link
    from wandbfs.bench.runner import Bench

BIG = "bundle/v0/model.bin"
MEM_BOUND = 64 * MiB  # R8: the daemon may grow this much while reading the large file, whatever its size


def _goal(ratio: float | None, at_least: float) -> bool | None:
    return None if ratio is None else ratio >= at_least


def _wan_or_note(b: "Bench", link: "Link") -> str:
    return "" if link.name == "wan" or "wan" in b.links else " (no WAN here: judged on loopback)"


def _first_mib_sha(b: "Bench") -> str:
    import hashlib

    with open(b.ds.src / BIG, "rb") as f:
        return hashlib.sha256(f.read(MiB)).hexdigest()


def _mem_sample(b: "Bench", case: str, link: "Link", m: Any, before: int, what: str) -> None:
    mem = m.mem()
    if mem:
        b.mem_samples.append({"case": case, "link": link.name, "what": what, "rss_before": before,
                              "hwm": mem.get("VmHWM", 0), "rss_after": mem.get("VmRSS", 0),
                              "file_size": b.ds.big["size"]})


def _arm_peak(m: Any) -> int:
    """Reset the daemon's VmHWM; return its RSS now."""
    reset_peak(m.pid)
    return m.mem().get("VmRSS", 0)


# ---- R1 -----------------------------------------------------------------------------------

def r1_warm_reread(b: "Bench") -> None:
    """Reads of a cached file through the mount vs. plain reads of the cache file itself."""
    link = b.links["lo"]
    big = b.ds.big
    size = big["size"]
    cache = b.new_dir("r1-cache")
    plain = cache / "artifacts" / "obj" / "md5" / big["md5"][:2] / big["md5"][2:]
    with b.guard("R1 warm"):
        with b.mount(link, cache) as m:
            p = m.root() / BIG
            read_file(p)  # download into the cache (not timed)
            b.verify(p, big, "wandbfs")
            if not plain.is_file():
                raise RuntimeError(f"the mount's cache has no object at {plain}")
            b.verify(plain, big, "cache file")
            ours, base = [], []
            for i in b.reps("R1 warm"):
                for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                    if which == 0:
                        ours.append(timed(lambda: read_file(p))[0])
                    else:
                        base.append(timed(lambda: read_file(plain))[0])
            b.verify(p, big, "wandbfs")
            r = speed_ratio(ours, base)
            b.add(Row("R1", "R1.warm", "warm re-read (page cache)", link.name, "MiB/s", ours, base,
                      "plain read of the cache file", size, ">= 0.80x", _goal(r, 0.8), r))

            ours, base = [], []
            for i in b.reps("R1 page cache dropped"):
                b.pc.drop(p, plain)
                ours.append(timed(lambda: read_file(p))[0])
                b.verify(p, big, "wandbfs")
                b.pc.drop(plain)
                base.append(timed(lambda: read_file(plain))[0])
            r = speed_ratio(ours, base)
            b.add(Row("R1", "R1.nopc", "first read, in cache, not in page cache", link.name, "MiB/s", ours, base,
                      "plain read after drop", size, ">= 0.80x", _goal(r, 0.8), r,
                      extra={"drop": b.pc.method}))

    # Each timed read comes right after its drop, ours as the baseline's: on this VM memory
    # freed by a drop is handed back to the host within seconds (virtio-balloon free page
    # reporting), and refilling the page cache after that runs at a third of the speed, so a
    # drop made before the mount started would charge the mount's start-up time to the read.
    with b.guard("R1 remount"):
        ours, base = [], []
        for i in b.reps("R1 remount"):
            with b.mount(link, cache) as m:
                p = m.root() / BIG
                os.stat(p)  # name resolution is R5's business
                b.pc.drop(plain)
                ours.append(timed(lambda: read_file(p))[0])
                b.verify(p, big, "wandbfs")
            b.pc.drop(plain)
            base.append(timed(lambda: read_file(plain))[0])
        r = speed_ratio(ours, base)
        b.add(Row("R1", "R1.remount", "first read after remount (cache on disk only)", link.name, "MiB/s",
                  ours, base, "plain read after drop", size, ">= 0.80x", _goal(r, 0.8), r))
    rmtree(cache)


# ---- R2 -----------------------------------------------------------------------------------

def _cold_read(b: "Bench", link: "Link", case: str, extra: list[str] | None = None) -> float:
    """Fresh mount, empty cache: stat the file (names resolved), then time open..EOF."""
    big = b.ds.big
    cache = b.new_dir("cold-cache")
    try:
        with b.mount(link, cache, extra) as m:
            p = m.root() / BIG
            os.stat(p)
            before = _arm_peak(m)
            t = timed(lambda: read_file(p))[0]
            _mem_sample(b, case, link, m, before, "cold read of the large file")
            b.verify(p, big, "wandbfs")
            return t
    finally:
        rmtree(cache)


def r2_cold_read(b: "Bench") -> None:
    big = b.ds.big
    size = big["size"]
    for link in b.links.values():
        with b.guard(f"R2 {link.name}"):
            emu_url = b.emu.signed_blob_url(link.emu_url, big["md5"])
            ng_url = f"{link.nginx_url}/blobs/{big['md5'][:2]}/{big['md5'][2:]}" if link.nginx_url else ""
            ours, curl_emu, curl_ng, curl_file = [], [], [], []
            for i in b.reps(f"R2 {link.name}"):
                b.warm_server(big)
                os.sync()
                c = b.curl(link, emu_url)
                if c["size"] != size:
                    raise RuntimeError(f"curl got {c['size']} bytes of {size}")
                curl_emu.append(c["total"])
                if ng_url:
                    curl_ng.append(b.curl(link, ng_url)["total"])
                out = b.new_dir("curl-out") / "blob"
                curl_file.append(b.curl(link, emu_url, out=str(out))["total"])
                b.verify(out, big, "curl")
                rmtree(out.parent)
                os.sync()
                ours.append(_cold_read(b, link, "R2"))
            r = speed_ratio(ours, curl_emu)
            b.add(Row("R2", f"R2.{link.name}", "cold read, empty cache", link.name, "MiB/s", ours, curl_emu,
                      "curl > /dev/null", size, ">= 0.90x" + _wan_or_note(b, link), _goal(r, 0.9), r))
            r = speed_ratio(ours, curl_file)
            b.add(Row("R2", f"R2.{link.name}.file", "cold read, empty cache", link.name, "MiB/s", ours, curl_file,
                      "curl > file", size, "", None, r))
            if curl_ng:
                b.add(Row("R2", f"R2.{link.name}.server", "server check: curl from the emulator", link.name, "MiB/s",
                          curl_emu, curl_ng, "curl from nginx", size, "", None, speed_ratio(curl_emu, curl_ng)))


# ---- R3 -----------------------------------------------------------------------------------

def r3_vs_sdk(b: "Bench") -> None:
    expect = b.ds.version_files("bundle", "v0")
    total = sum(v["size"] for v in expect.values())
    for link in b.links.values():
        with b.guard(f"R3 {link.name}"):
            ours, sdk = [], []
            for i in b.reps(f"R3 {link.name}"):
                b.warm_server(b.ds.big)
                os.sync()
                cache = b.new_dir("r3-cache")
                with b.mount(link, cache) as m:
                    vdir = m.root() / "bundle" / "v0"
                    before = _arm_peak(m)

                    def cat_all() -> int:
                        n = 0
                        for dirpath, dirs, files in os.walk(vdir):
                            dirs.sort()
                            for f in sorted(files):
                                n += read_file(os.path.join(dirpath, f))
                        return n

                    t, n = timed(cat_all)
                    _mem_sample(b, "R3", link, m, before, "cat of every file of the version")
                    if n != total:
                        raise RuntimeError(f"the mount returned {n} bytes, the version has {total}")
                    b.verify_tree(vdir, expect, "wandbfs")
                    ours.append(t)
                rmtree(cache)
                os.sync()
                cache, root = b.new_dir("r3-sdk-cache"), b.new_dir("r3-sdk-root")
                out = b.sdk_download(link, ["acme/wandb-registry-bench/bundle:v0"], [root], cache)
                sdk.append(out["seconds"])
                b.verify_tree(root, expect, "SDK download()")
                rmtree(cache)
                rmtree(root)
            r = speed_ratio(ours, sdk)
            goal = link.name == "wan" or "wan" not in b.links
            b.add(Row("R3", f"R3.{link.name}", f"cold cat of a version ({len(expect)} files)", link.name, "s",
                      ours, sdk, "SDK download()", total, ">= 2x" + _wan_or_note(b, link) if goal else "",
                      _goal(r, 2.0) if goal else None, r))


# ---- R4 -----------------------------------------------------------------------------------

def r4_first_byte(b: "Bench") -> None:
    big = b.ds.big
    want = _first_mib_sha(b)
    names = {meta["md5"]: rel.split("/", 2)[2] for rel, meta in b.ds.files.items() if rel.startswith("bundle/")}

    for link in b.links.values():
        with b.guard(f"R4 {link.name}"):
            url = b.emu.signed_blob_url(link.emu_url, big["md5"])
            ours, full, curl = [], [], []
            for i in b.reps(f"R4 {link.name}"):
                b.warm_server(big)
                c = b.curl(link, url, byte_range=f"0-{MiB - 1}")
                curl.append(c["total"])
                for names_warm, dest in ((True, ours), (False, full)):
                    cache = b.new_dir("r4-cache")
                    with b.mount(link, cache, b.stream_args) as m:
                        p = m.root() / BIG
                        if names_warm:
                            os.stat(p)
                        before = _arm_peak(m)
                        b.emu.clear_log()
                        t0 = time.time()  # the emulator stamps its log with time.time() too
                        dest.append(_timed_first_mib(p, want))
                        _mem_sample(b, "R4", link, m, before, "first MiB")
                        timeline = [(round((e["t"] - t0) * 1000, 1), e["route"], _label(e, names))
                                    for e in b.emu.log() if e["route"] != "control"][:12]
                        b.raw.setdefault("R4_timeline", {}).setdefault(
                            f"{link.name}.{'names_warm' if names_warm else 'fresh'}", []).append(
                            {"first_mib_ms": round(dest[-1] * 1000, 1), "requests": timeline})
                        if i == 0 and names_warm:
                            b.note(f"R4 {link.name} round 1: first MiB after {dest[-1] * 1000:.0f} ms; requests as "
                                   "the server saw them (ms after open: what): "
                                   + "; ".join(f"{t:+g} {what or route}" for t, route, what in timeline[:6]))
                    rmtree(cache)
            limit = 2 * link.rtt_ms + 10
            mode = " ".join(b.stream_args) or "default mode"
            goal = link.name == "wan" or "wan" not in b.links  # the goal is set for the WAN link
            b.add(Row("R4", f"R4.{link.name}", f"first MiB, cold, names resolved ({mode})", link.name, "ms", ours,
                      curl, "curl -r 0-1MiB", None, f"<= {limit:g} ms" + _wan_or_note(b, link) if goal else "",
                      (statistics.median(ours) * 1000 <= limit if ours else None) if goal else None,
                      speed_ratio(ours, curl)))
            b.add(Row("R4", f"R4.{link.name}.path", "first MiB, fresh mount, path not yet resolved", link.name, "ms",
                      full, curl, "curl -r 0-1MiB", None, "", None, speed_ratio(full, curl)))


def _label(entry: dict[str, Any], names: dict[str, str]) -> str:
    """A request-log entry as "GraphQL operation" or "file [range]" (blobs are named by md5)."""
    if entry["route"] == "graphql":
        return entry.get("operation") or "graphql"
    if entry["route"] == "blob":
        name = names.get(entry["path"].rsplit("/", 1)[-1], "blob")
        return f"GET {name} {entry.get('range') or '(whole)'}"
    return f"{entry['method']} {entry['route']}"


# ---- R5 -----------------------------------------------------------------------------------

def _tool(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=3600)
    t = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed: {r.stderr.strip()[:300]}")
    return t


def _listing(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = os.stat(p).st_size
    return out


def r5_metadata(b: "Bench") -> None:
    n = b.ds.spec.many_versions
    local = b.ds.src / "many"
    expect = {k[len("many/"):]: v["size"] for k, v in b.ds.files.items() if k.startswith("many/")}
    # One request per version, plus the listing pages (the SDK lists 50 versions a page), plus 8 for
    # resolving the path once (viewer, server features, org, registries, registry, collections, collection).
    bound = n + math.ceil(n / 50) + 8
    for link in b.links.values():
        with b.guard(f"R5 {link.name}"):
            res: dict[str, list[float]] = {k: [] for k in ("ls_cold", "ls_warm", "find_cold", "find_warm",
                                                          "l_ls_cold", "l_ls_warm", "l_find_cold", "l_find_warm")}
            reqs: dict[str, list[dict[str, Any]]] = {"ls": [], "find": []}
            for i in b.reps(f"R5 {link.name}"):
                for tool, cmd in (("ls", ["ls", "-lR"]), ("find", ["find"])):
                    cache = b.new_dir("r5-cache")
                    with b.mount(link, cache) as m:
                        coll = m.root() / "many"
                        before = _arm_peak(m)
                        b.emu.clear_log()
                        res[f"{tool}_cold"].append(_tool(cmd + [str(coll)]))
                        reqs[tool].append(graphql_counts(b.emu.log()))
                        res[f"{tool}_warm"].append(_tool(cmd + [str(coll)]))
                        _mem_sample(b, "R5", link, m, before, f"{tool} over {n} versions")
                        if i == 0 and tool == "ls":
                            got = _listing(coll)
                            got = {k: v for k, v in got.items() if k.split("/", 1)[0].startswith("v")}
                            if got != expect:
                                diff = set(got.items()) ^ set(expect.items())
                                raise WrongBytes(f"wandbfs: listing of 'many' differs from the source in "
                                                 f"{len(diff)} entries, e.g. {sorted(diff)[:3]}")
                    rmtree(cache)
                    b.pc.drop(local)
                    res[f"l_{tool}_cold"].append(_tool(cmd + [str(local)]))
                    res[f"l_{tool}_warm"].append(_tool(cmd + [str(local)]))
            b.raw.setdefault("R5", {})[link.name] = {"requests": reqs, "times": res}
            for tool, label in (("ls", "ls -lR"), ("find", "find")):
                counts = [r["graphql"] for r in reqs[tool]]
                if not counts:
                    continue
                worst_round = max(reqs[tool], key=lambda r: r["graphql"])
                worst, ops = worst_round["graphql"], worst_round["by_operation"]
                spread = f"{min(counts)}" if min(counts) == worst else f"{min(counts)}-{worst}"
                b.add(Row("R5", f"R5.{link.name}.{tool}.cold", f"{label} of {n} versions x {b.ds.spec.many_files} "
                          f"files, cold ({spread} GraphQL)", link.name, "s", res[f"{tool}_cold"],
                          res[f"l_{tool}_cold"], "local tree, cold", None, f"<= {bound} GraphQL",
                          worst <= bound, speed_ratio(res[f"{tool}_cold"], res[f"l_{tool}_cold"]),
                          extra={"graphql": counts, "by_operation_worst_round": ops,
                                 "other_routes": worst_round["other_routes"]}))
                b.note(f"R5 {link.name} cold {label}: GraphQL requests per round {counts} for {n} versions; "
                       "the round with the most: " + ", ".join(f"{k} {v}" for k, v in ops.items())
                       + f"; storage GETs: {worst_round['other_routes']}")
                warm = res[f"{tool}_warm"]
                b.add(Row("R5", f"R5.{link.name}.{tool}.warm", f"{label}, warm", link.name, "s", warm,
                          res[f"l_{tool}_warm"], "local tree, warm", None, "<= 1 s",
                          (statistics.median(warm) <= 1.0) if warm else None,
                          speed_ratio(warm, res[f"l_{tool}_warm"])))


# ---- R6 -----------------------------------------------------------------------------------

def _stat_misses(d: Path, names: list[str]) -> float:
    t0 = time.perf_counter()
    for name in names:
        try:
            os.stat(os.path.join(d, name))
        except FileNotFoundError:
            continue
        raise RuntimeError(f"{d}/{name} exists")
    return time.perf_counter() - t0


def r6_misses(b: "Bench") -> None:
    link = b.links["lo"]
    k = b.args.misses
    local = b.ds.src / "bundle" / "v0"
    cache = b.new_dir("r6-cache")
    with b.mount(link, cache) as m:
        vdir = m.root() / "bundle" / "v0"
        coll = m.root() / "bundle"
        os.listdir(vdir)
        first, again, l_first, l_again, reqs = [], [], [], [], []
        c_first, c_again, c_reqs = [], [], []
        for i in b.reps("R6"):
            names = [f"missing-{i}-{j:05d}.json" for j in range(k)]
            b.emu.clear_log()
            first.append(_stat_misses(vdir, names))
            again.append(_stat_misses(vdir, names))
            reqs.append(graphql_counts(b.emu.log())["graphql"])
            l_first.append(_stat_misses(local, names))
            l_again.append(_stat_misses(local, names))
            cnames = [f"nope-{i}-{j:03d}" for j in range(100)]
            b.emu.clear_log()
            c_first.append(_stat_misses(coll, cnames))
            c_again.append(_stat_misses(coll, cnames))
            c_reqs.append(graphql_counts(b.emu.log())["graphql"])
    rmtree(cache)
    b.add(Row("R6", "R6.first", f"{k:,} stat of missing names in a version ({max(reqs)} GraphQL)", link.name, "s",
              first, l_first, "local dir", None, "", None, speed_ratio(first, l_first), extra={"graphql": reqs}))
    b.add(Row("R6", "R6.again", f"the same {k:,} names again", link.name, "s", again, l_again, "local dir", None,
              "", None, speed_ratio(again, l_again)))
    b.add(Row("R6", "R6.coll", f"100 missing names in a collection, first ({max(c_reqs)} GraphQL)", link.name, "s",
              c_first, None, "", None, "", None, None, extra={"graphql": c_reqs}))
    b.add(Row("R6", "R6.coll.again", "the same 100 names again", link.name, "s", c_again, None, "", None,
              "", None, None))


# ---- R7 -----------------------------------------------------------------------------------

def r7_rclone(b: "Bench") -> None:
    if not b.have.get("rclone") or not b.nginx:
        b.note("R7 skipped: rclone or nginx is not installed (scripts/bench installs them)")
        return
    big = b.ds.big
    size = big["size"]
    want_first = _first_mib_sha(b)
    n_wide = b.ds.spec.wide_files
    for link in b.links.values():
        with b.guard(f"R7 {link.name}"):
            res: dict[str, list[float]] = {k: [] for k in ("cold", "warm", "ttfb", "ls", "r_cold", "r_warm",
                                                          "r_ttfb", "r_ls")}
            rss: list[int] = []
            for i in b.reps(f"R7 {link.name}"):
                b.warm_server(big)
                for who in (("w", "r") if i % 2 == 0 else ("r", "w")):
                    pre = "" if who == "w" else "r_"
                    # cold read, then a warm re-read on the same mount
                    os.sync()
                    cache = b.new_dir("r7-cache")
                    with (b.mount(link, cache) if who == "w" else b.rclone(link, cache)) as m:
                        p = (m.root() if who == "w" else m.path) / BIG
                        os.stat(p)
                        res[pre + "cold"].append(timed(lambda: read_file(p))[0])
                        b.verify(p, big, "wandbfs" if who == "w" else "rclone")
                        res[pre + "warm"].append(timed(lambda: read_file(p))[0])
                        if who == "r":
                            rss.append(m.mem().get("VmHWM", 0))
                    rmtree(cache)
                    # time to the first MiB, cold
                    cache = b.new_dir("r7-cache")
                    with (b.mount(link, cache, b.stream_args) if who == "w" else b.rclone(link, cache)) as m:
                        p = (m.root() if who == "w" else m.path) / BIG
                        os.stat(p)
                        res[pre + "ttfb"].append(_timed_first_mib(p, want_first))
                    rmtree(cache)
                    # cold ls -l of the wide version
                    cache = b.new_dir("r7-cache")
                    with (b.mount(link, cache) if who == "w" else b.rclone(link, cache)) as m:
                        d = (m.root() if who == "w" else m.path) / "wide" / "v0"
                        res[pre + "ls"].append(_tool(["ls", "-l", str(d)]))
                        count = len(os.listdir(d))
                        if count != n_wide:
                            raise RuntimeError(f"{'wandbfs' if who == 'w' else 'rclone'} lists {count} files "
                                               f"in wide/v0, the version has {n_wide}")
                    rmtree(cache)
            b.raw.setdefault("R7", {})[link.name] = res | {"rclone_peak_rss": rss}
            for key, what, unit, nbytes in (("cold", "cold read, empty cache", "MiB/s", size),
                                            ("warm", "warm re-read", "MiB/s", size),
                                            ("ttfb", "first MiB, cold", "ms", None),
                                            ("ls", f"cold ls -l of {n_wide} files", "s", None)):
                r = speed_ratio(res[key], res["r_" + key])
                b.add(Row("R7", f"R7.{link.name}.{key}", what, link.name, unit, res[key], res["r_" + key],
                          "rclone", nbytes, ">= 1x (ahead)", _goal(r, 1.0), r))
            if rss:
                b.note(f"R7 {link.name}: rclone's peak RSS after a cold read of {size / MiB:,.0f} MiB: "
                       f"{max(rss) / MiB:.0f} MiB")


def _timed_first_mib(p: Path, want_sha256: str) -> float:
    """open + read until the first MiB is in: the time to first byte as a reader sees it."""
    import hashlib

    buf = bytearray(MiB)
    t, got = timed(lambda: _read_into(p, buf))
    if hashlib.sha256(buf[:got]).hexdigest() != want_sha256:
        raise WrongBytes(f"the first MiB of {p} does not match the source")
    return t


def _read_into(p: Path, buf: bytearray) -> int:
    mv = memoryview(buf)
    fd = os.open(p, os.O_RDONLY)
    try:
        got = 0
        while got < len(buf):
            k = os.readv(fd, [mv[got:]])
            if k == 0:
                break
            got += k
        return got
    finally:
        os.close(fd)


# ---- R8 -----------------------------------------------------------------------------------

def r8_memory(b: "Bench") -> None:
    if not b.mem_samples:
        b.note("R8: R2-R5 did not run, so R8 measures one cold read (R2's way) per link itself")
        for link in b.links.values():
            with b.guard(f"R8 {link.name}"):
                _cold_read(b, link, "R2")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in b.mem_samples:
        groups.setdefault((s["case"], s["link"]), []).append(s)
    size = b.ds.big["size"]
    for (case, link), samples in sorted(groups.items()):
        peaks = [float(s["hwm"]) for s in samples]
        befores = [float(s["rss_before"]) for s in samples]
        growth = max(s["hwm"] - s["rss_before"] for s in samples)
        big_read = case in ("R2", "R3")
        b.add(Row("R8", f"R8.{case}.{link}", f"daemon peak RSS during {case}: {samples[0]['what']} "
                  f"(+{growth / MiB:.0f} MiB)", link, "MiB", peaks, befores, "RSS before", None,
                  f"growth <= {MEM_BOUND // MiB} MiB" if big_read else "",
                  (growth <= MEM_BOUND) if big_read else None, None,
                  extra={"growth_bytes": growth, "file_size": size}))


# ---- R9 -----------------------------------------------------------------------------------

def r9_cached_vs_sdk(b: "Bench") -> None:
    n = b.ds.spec.tiny_versions
    names = [f"acme/wandb-registry-bench/tiny:v{v}" for v in range(n)]
    files = [(f"v{v}", b.ds.files[f"tiny/v{v}/weights.bin"]) for v in range(n)]
    import hashlib

    def read_all(root: Path) -> float:
        t0 = time.perf_counter()
        bad = []
        for v, meta in files:
            with open(root / "tiny" / v / "weights.bin", "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != meta["sha256"]:
                    bad.append(v)
        t = time.perf_counter() - t0
        if bad:
            raise WrongBytes(f"wandbfs: {len(bad)} of {n} files differ from the source, e.g. {bad[:3]}")
        return t

    cache = b.new_dir("r9-cache")  # shared by the mount and the SDK, like ~/.cache/wandb
    link0 = b.links["lo"]
    with b.mount(link0, cache) as m:
        read_all(m.root())  # fill the cache
    objects = [Path(d) / f for d, _, fs in os.walk(cache / "artifacts" / "obj") for f in fs]
    for link in b.links.values():
        with b.guard(f"R9 {link.name}"):
            ours, warm, sdk = [], [], []
            disk_ours = disk_sdk = 0
            for i in b.reps(f"R9 {link.name}"):
                with b.mount(link, cache) as m:
                    ours.append(read_all(m.root()))
                    b.pc.drop(*objects)
                    warm.append(read_all(m.root()))
                dl = b.new_dir("r9-dl")
                roots = [dl / f"v{v}" for v in range(n)]
                out = b.sdk_download(link, names, roots, cache)
                sdk.append(out["seconds"])
                for (v, meta), root in zip(files, roots):
                    b.verify(root / "weights.bin", meta, "SDK download()")
                disk_ours = dir_usage(cache / "artifacts" / "obj")
                disk_sdk = dir_usage(cache / "artifacts" / "obj", dl)
                rmtree(dl)
            r = speed_ratio(ours, sdk)
            b.add(Row("R9", f"R9.{link.name}", f"read {n} cached one-file versions, new mount", link.name, "s",
                      ours, sdk, "SDK download() each", None, ">= 20x", _goal(r, 20.0), r))
            b.add(Row("R9", f"R9.{link.name}.warm", "again on that mount (page cache dropped)", link.name, "s",
                      warm, sdk, "SDK download() each", None, "", None, speed_ratio(warm, sdk)))
            b.add(Row("R9", f"R9.{link.name}.disk", f"disk used for {n} versions", link.name, "MiB",
                      [float(disk_ours)], [float(disk_sdk)], "SDK: cache + copies", None, "", None,
                      disk_sdk / disk_ours if disk_ours else None))
    rmtree(cache)

