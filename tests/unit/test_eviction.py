"""Cache limits: the LRU plan, eviction against real files, open objects and pins kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.unit.test_cache import md5_entry, write_temp
from wandbfs.cache.store import ObjectCache
from wandbfs.cache.eviction import CacheLimits, CachedObject, Evictor, format_size, parse_size, plan_eviction
from wandbfs.cache.pins import PinStore


def objs(*sizes_atimes: tuple[int, float]) -> list[CachedObject]:
    return [CachedObject(Path(f"/c/{i}"), s, a) for i, (s, a) in enumerate(sizes_atimes)]


def test_parse_size_accepts_the_usual_spellings_and_rejects_others():
    assert parse_size("1000") == 1000
    assert parse_size("10K") == 10 << 10
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("1.5g") == 3 << 29
    assert parse_size("2T") == 2 << 40
    for bad in ("", "ten", "-1G", "5X", "1..5G"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert format_size(3 << 29) == "1.5 GiB" and format_size(10) == "10 B"


def test_plan_evicts_least_recently_used_first_and_stops_when_it_fits():
    o = objs((100, 3.0), (100, 1.0), (100, 2.0), (100, 4.0))
    victims, fits = plan_eviction(o, used=400, free=10_000, need=150, limits=CacheLimits(max_size=400),
                                  keep=lambda p: False)
    assert fits and [v.path.name for v in victims] == ["1", "2"]   # atime 1.0 then 2.0: 150 more fit
    victims, fits = plan_eviction(o, used=400, free=10_000, need=0, limits=CacheLimits(max_size=400),
                                  keep=lambda p: False)
    assert fits and victims == []


def test_plan_honours_min_free_and_skips_kept_objects():
    o = objs((100, 1.0), (100, 2.0), (100, 3.0))
    victims, fits = plan_eviction(o, used=300, free=50, need=100, limits=CacheLimits(min_free=60),
                                  keep=lambda p: p.name == "0")
    assert fits and [v.path.name for v in victims] == ["1", "2"]  # 50+200-100 = 150 >= 60
    victims, fits = plan_eviction(o, used=300, free=50, need=500, limits=CacheLimits(min_free=60),
                                  keep=lambda p: p.name == "0")
    assert not fits and len(victims) == 2  # everything evictable, still short


def _put(cache: ObjectCache, data: bytes, atime: float, name: str = "f.bin") -> tuple[Path, object]:
    entry = md5_entry(data, name)
    path = cache.commit(write_temp(cache, data), entry)
    os.utime(path, (atime, os.stat(path).st_mtime))
    return path, entry


def test_evictor_removes_lru_objects_but_never_open_or_pinned_ones(tmp_path):
    cache = ObjectCache(tmp_path)
    now = time.time()
    paths = [_put(cache, bytes([i]) * 1000, now - 100 + i, f"f{i}")[0] for i in range(5)]
    pins = PinStore(tmp_path)
    pins.add("acme/wandb-registry-model/m:v0", [paths[1]], 1000)
    held = cache.open_shared(paths[0])       # the oldest is open
    assert held is not None
    ev = Evictor(cache, CacheLimits(max_size=3000), pinned=pins.objects)
    assert ev.reserve(1000)                  # 5000 + 1000 -> 3000: three must go, not 0 or 1
    assert [p.exists() for p in paths] == [True, True, False, False, False]
    assert ev.evictions == 3 and ev.bytes_evicted == 3000
    # Reserved bytes count until settled: another 1000 does not fit without the kept ones.
    assert not ev.reserve(1000)
    ev.settle(1000)
    assert ev.reserve(1000)                  # settled: 2000 + 1000 fits without evicting
    ev.settle(1000)
    os.close(held)                           # no longer open: now it may go, the pinned one still not
    assert ev.reserve(2000) and not paths[0].exists() and paths[1].exists()
    assert not ev.reserve(3000)


def test_open_shared_sees_an_evicted_object_as_gone(tmp_path):
    cache = ObjectCache(tmp_path)
    path, _ = _put(cache, b"x" * 10, time.time())
    assert cache.try_evict(path) and not path.exists()
    assert cache.open_shared(path) is None
    assert not cache.try_evict(path)


def test_open_shared_records_the_use_for_lru(tmp_path):
    cache = ObjectCache(tmp_path)
    path, _ = _put(cache, b"y" * 10, time.time() - 3600)
    mtime = os.stat(path).st_mtime_ns
    fd = cache.open_shared(path)
    assert fd is not None
    os.close(fd)
    st = os.stat(path)
    assert st.st_atime > time.time() - 60 and st.st_mtime_ns == mtime


def test_prune_and_clear(tmp_path):
    cache = ObjectCache(tmp_path)
    now = time.time()
    paths = [_put(cache, bytes([i]) * 100, now - 10 + i, f"f{i}")[0] for i in range(4)]
    PinStore(tmp_path).add("o/wandb-registry-r/c:v1", [paths[3]], 100)
    ev = Evictor(cache, CacheLimits(), pinned=PinStore(tmp_path).objects)
    res = ev.prune(CacheLimits(max_size=250))
    assert res.removed == 2 and res.fits and [p.exists() for p in paths] == [False, False, True, True]
    res = ev.clear()
    assert res.removed == 1 and res.skipped_pinned == 1 and paths[3].exists()
    assert ev.clear(include_pinned=True).removed == 1 and not paths[3].exists()


def test_pins_by_name_and_by_alias(tmp_path):
    pins = PinStore(tmp_path)
    pins.add("o/wandb-registry-r/c:v1", [tmp_path / "artifacts/obj/md5/aa/bb"], 5, via="production")
    pins.add("o/wandb-registry-r/c:v2", [tmp_path / "artifacts/obj/md5/cc/dd"], 7)
    assert {p.name for p in pins.all()} == {"o/wandb-registry-r/c:v1", "o/wandb-registry-r/c:v2"}
    assert pins.objects() == {tmp_path / "artifacts/obj/md5/aa/bb", tmp_path / "artifacts/obj/md5/cc/dd"}
    # unpin through the alias finds the version pinned through it even after the alias moved
    assert pins.remove({"o/wandb-registry-r/c:v3"}, via=("o/wandb-registry-r/c", "production")) == [
        "o/wandb-registry-r/c:v1"]
    assert pins.remove({"o/wandb-registry-r/c:v2"}) == ["o/wandb-registry-r/c:v2"]
    assert pins.all() == [] and oct(os.stat(pins.dir).st_mode & 0o777) == "0o700"
