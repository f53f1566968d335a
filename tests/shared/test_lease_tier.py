"""Unit tests of the generational lease (wandbfs/shared/lease.py) and the tier on top of
the stores (wandbfs/shared/tier.py), no mount needed.

Lease and tier tests run against both stores: a ``DirStore`` on a local directory and an
``S3Store`` against moto's real S3 API on loopback (a fresh bucket per test). The breaker
tests use a small fake store that raises ``TierError`` on demand.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from wandbfs.shared import tier as tier_mod
from wandbfs.shared.lease import PREFIX as LEASE_PREFIX
from wandbfs.shared.lease import Lease, LeaseRecord, current_lease, holder_id, lease_gen
from wandbfs.shared.stores import DirStore, S3Store, TierError
from wandbfs.shared.tier import PART, SharedTier, Sums, part_bounds, part_count

MiB = 1 << 20
from tests.shared.conftest import S3_PREFIX
TIER_LOG = "wandbfs.shared.tier"

# ---- fixtures (moto's server: conftest.py) ----------------------------------------------

@pytest.fixture
def leases() -> Iterator[Callable[..., Lease]]:
    """Makes leases and releases every one at the end (their renewal threads stop)."""
    made: list[Lease] = []

    def make(store: Any, folder: str, ttl: float, holder: str | None = None,
             whole: Callable[[], bool] = lambda: False) -> Lease:
        lease = Lease(store, folder, ttl, holder or holder_id(), whole)
        made.append(lease)
        return lease

    yield make
    for lease in made:
        lease._stop.set()
        try:
            lease.release()
        except Exception:
            pass


def wait_for(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``cond`` until it is truthy (returned) or ``timeout`` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        out = cond()
        if out:
            return out
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def lease_names(store: Any, folder: str) -> list[str]:
    return sorted(n for n in store.names(folder) if n.startswith(LEASE_PREFIX))


class Stallable:
    """A real store whose writes fail while ``stalled`` (a holder cut off from the store:
    its renewals do not land, so its lease expires); everything else passes through."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.url = inner.url
        self.stalled = False

    def write(self, key: str, data: bytes) -> None:
        if self.stalled:
            raise TierError(f"{self.url}: stalled")
        self.inner.write(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Recording:
    """A real store that records the order of the mutating calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.url = inner.url
        self.ops: list[tuple[str, str]] = []

    def _wrap(self, name: str) -> Callable[..., Any]:
        fn = getattr(self.inner, name)

        def call(key: str, *args: Any) -> Any:
            self.ops.append((name, key))
            return fn(key, *args)
        return call

    def __getattr__(self, name: str) -> Any:
        if name in ("write", "write_file", "create", "delete", "compose"):
            return self._wrap(name)
        return getattr(self.inner, name)


class FakeStore:
    """The TierStore protocol over a directory, every operation raising ``TierError``
    while ``broken`` (the store unreachable). ``calls`` counts the operations tried."""

    def __init__(self, root: Path) -> None:
        self.inner = DirStore(root)
        self.url = "fake://tier"
        self.broken = True
        self.calls = 0
        self._lock = threading.Lock()

    def _op(self, name: str, *args: Any) -> Any:
        with self._lock:
            self.calls += 1
        if self.broken:
            raise TierError(f"{self.url}: {name}: connection refused")
        return getattr(self.inner, name)(*args)

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        return self._op("read", key, start, end)

    def size(self, key: str) -> int | None:
        return self._op("size", key)

    def names(self, folder: str) -> list[str]:
        return self._op("names", folder)

    def write(self, key: str, data: bytes) -> None:
        return self._op("write", key, data)

    def write_file(self, key: str, src: Any, size: int) -> None:
        return self._op("write_file", key, src, size)

    def create(self, key: str, data: bytes) -> bool:
        return self._op("create", key, data)

    def delete(self, key: str) -> None:
        return self._op("delete", key)

    def compose(self, key: str, parts: list[tuple[str, int]]) -> bool:
        return self._op("compose", key, parts)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def rel_of(data: bytes) -> str:
    h = md5(data)
    return f"obj/md5/{h[:2]}/{h[2:]}"


def part_sums(data: bytes) -> tuple[str, ...]:
    """Each part's checksum, as the tier's sums hold them (xxh3-128)."""
    import xxhash

    return tuple(xxhash.xxh3_128_hexdigest(data[i:i + PART]) for i in range(0, max(len(data), 1), PART))


def tier_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == TIER_LOG and r.levelno == logging.WARNING]


@pytest.fixture
def objects(tmp_path: Path) -> dict[str, tuple[str, Path, bytes]]:
    """A 3-part object (2 full 8 MiB parts and a short one) and a small one-part object,
    each as (rel, local path, bytes)."""
    rng = random.Random(1234)
    out = {}
    for name, n in (("big", 2 * PART + 12345), ("small", 1000)):
        data = rng.randbytes(n)
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        out[name] = (rel_of(data), path, data)
    return out


# ---- LeaseRecord --------------------------------------------------------------------------

def test_record_round_trips() -> None:
    rec = LeaseRecord(7, "host-a:1234:abcd", 1700000000.125, False, frozenset({3, 1, 2}))
    back = LeaseRecord.decode(7, rec.encode())
    assert back == rec
    assert back is not None and back.parts == frozenset({1, 2, 3})
    assert LeaseRecord.decode(9, rec.encode()).gen == 9    # the generation is the file's name
    whole = LeaseRecord(0, "h:1:x", 5.0, True)
    assert LeaseRecord.decode(0, whole.encode()) == whole


@pytest.mark.parametrize("garbage", [
    b"", b"not json", b"\xff\xfe\x00", b"null", b"[]", b"42", b"{}", b'{"holder": "h"}',
    b'{"expires": 5}', b'{"holder": "h", "expires": "soon"}',
    b'{"holder": "h", "expires": 5, "parts": [1, "x"]}', b'{"holder": "h", "expires": 5, "parts": 3}',
    b'{"holder": "h", "exp',
])
def test_record_decode_of_garbage_is_none(garbage: bytes) -> None:
    assert LeaseRecord.decode(0, garbage) is None


def test_record_covers_and_expired() -> None:
    whole = LeaseRecord(0, "h", 100.0, True)
    assert all(whole.covers(i) for i in (0, 1, 57))
    some = LeaseRecord(0, "h", 100.0, False, frozenset({1, 9}))
    assert some.covers(1) and some.covers(9)
    # the two parts after one being fetched: the holder reads up the file, it asks for them next
    assert some.covers(2) and some.covers(3) and some.covers(10) and some.covers(11)
    assert not some.covers(0) and not some.covers(4) and not some.covers(8) and not some.covers(12)
    assert not LeaseRecord(0, "h", 100.0, False).covers(0)
    assert some.expired(100.0) and some.expired(101.0) and not some.expired(99.9)
    assert LeaseRecord(0, "h", time.time() - 1, False).expired()
    assert not LeaseRecord(0, "h", time.time() + 60, False).expired()


def test_lease_gen_and_holder_id() -> None:
    assert lease_gen("lease.0") == 0 and lease_gen("lease.12") == 12
    for name in ("lease.", "lease.x", "lease.-1", "part.3", "lease", ".lease.1.tmp-h-1-ab"):
        assert lease_gen(name) is None, name
    a, b = holder_id(), holder_id()
    assert a != b
    assert a.split(":")[1] == str(os.getpid())


# ---- current_lease --------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_current_lease_none_and_highest_generation(store: Any) -> None:
    folder = "wandbfs/fill/md5/ab/cd"
    assert current_lease(store, folder) is None
    store.write(f"{folder}/part.0", b"data")        # not leases: ignored
    store.write(f"{folder}/lease.x", b"{}")
    assert current_lease(store, folder) is None
    store.write(f"{folder}/lease.2", LeaseRecord(2, "old", 10.0, False).encode())
    store.write(f"{folder}/lease.10", LeaseRecord(10, "new", 20.0, True).encode())  # 10 > 2, not "10" < "2"
    gen, rec = current_lease(store, folder)
    assert gen == 10 and rec == LeaseRecord(10, "new", 20.0, True)


@pytest.mark.timeout(60)
def test_current_lease_unreadable_is_gen_none(store: Any, leases: Callable[..., Lease]) -> None:
    folder = "wandbfs/fill/md5/ab/garbage"
    store.write(f"{folder}/lease.3", b"\x00half a lease{")
    assert current_lease(store, folder) == (3, None)
    # an unreadable lease never blocks: it is taken over at the next generation
    lease = leases(store, folder, 30.0)
    assert lease.try_acquire() is True
    assert lease.gen == 4
    gen, rec = current_lease(store, folder)
    assert gen == 4 and rec is not None and rec.holder == lease.holder
    assert lease_names(store, folder) == ["lease.4"]


@pytest.mark.timeout(60)
def test_current_lease_lists_again_when_a_listed_lease_is_gone(store: Any) -> None:
    """A lease released between the listing and the read makes it list again: falling back
    to an older generation (or to "no lease") would let a racing host create one that is
    not the newest."""
    folder = "wandbfs/fill/md5/ab/stale"
    store.write(f"{folder}/lease.2", LeaseRecord(2, "h2", 10.0, False).encode())
    listings = []

    class StaleOnce:
        url = store.url

        def names(self, f: str) -> list[str]:
            listings.append(f)
            return store.names(f) + (["lease.5"] if len(listings) == 1 else [])

        def read(self, key: str, *a: Any) -> bytes | None:
            return store.read(key, *a)

    gen, rec = current_lease(StaleOnce(), folder)
    assert gen == 2 and rec is not None and rec.holder == "h2" and len(listings) == 2

    class AlwaysStale(StaleOnce):
        def names(self, f: str) -> list[str]:
            return store.names(f) + ["lease.5"]
    with pytest.raises(TierError):
        current_lease(AlwaysStale(), folder)


# ---- Lease ----------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_second_holder_waits_while_the_lease_is_live(store: Any, leases: Callable[..., Lease]) -> None:
    folder = "wandbfs/fill/md5/ab/live"
    a = leases(store, folder, 30.0, "host-a:1:aaaa")
    b = leases(store, folder, 30.0, "host-b:1:bbbb")
    assert a.try_acquire() is True
    assert a.held and a.gen == 0 and not a.lost
    assert a.try_acquire() is True             # already ours
    for _ in range(3):
        assert b.try_acquire() is False
        assert not b.held and b.gen is None
    gen, rec = current_lease(store, folder)
    assert gen == 0 and rec is not None and rec.holder == "host-a:1:aaaa" and not rec.expired()
    assert lease_names(store, folder) == ["lease.0"]


@pytest.mark.timeout(60)
def test_racing_holders_one_wins(store: Any, leases: Callable[..., Lease]) -> None:
    """Eight hosts find the lease expired at once: exactly one takes the next generation."""
    folder = "wandbfs/fill/md5/ab/race"
    store.write(f"{folder}/lease.0", LeaseRecord(0, "dead:1:x", time.time() - 5, True).encode())
    racers = [leases(store, folder, 30.0, f"host-{i}:1:{i:04x}") for i in range(8)]
    barrier = threading.Barrier(len(racers))
    won: dict[int, bool] = {}
    errors: list[BaseException] = []

    def race(i: int) -> None:
        try:
            barrier.wait(10)
            won[i] = racers[i].try_acquire()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=race, args=(i,), daemon=True) for i in range(len(racers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    winners = [i for i, w in won.items() if w]
    assert len(winners) == 1, winners
    assert sum(r.held for r in racers) == 1
    gen, rec = current_lease(store, folder)
    assert gen == 1 and rec is not None and rec.holder == racers[winners[0]].holder


@pytest.mark.timeout(60)
def test_takeover_after_expiry(store: Any, leases: Callable[..., Lease]) -> None:
    """A holder cut off from the store stops renewing; once its lease expires another
    takes generation +1, and the first learns it lost the lease."""
    folder = "wandbfs/fill/md5/ab/expiry"
    cut_off = Stallable(store)
    a = leases(cut_off, folder, 0.5, "host-a:1:aaaa")
    b = leases(store, folder, 0.5, "host-b:1:bbbb")
    assert a.try_acquire() is True and a.gen == 0
    assert b.try_acquire() is False
    cut_off.stalled = True
    last_expires = 0.0

    def b_takes_over() -> bool:
        nonlocal last_expires
        cur = current_lease(store, folder)
        if cur is not None and cur[1] is not None and cur[1].holder == a.holder:
            last_expires = max(last_expires, cur[1].expires)
        if b.try_acquire():
            assert time.time() >= last_expires, "taken over before the holder's lease expired"
            return True
        return False

    wait_for(b_takes_over, 15.0, "the second holder to take over the expired lease")
    assert last_expires > 0
    assert b.gen == 1 and b.held
    gen, rec = current_lease(store, folder)
    assert gen == 1 and rec is not None and rec.holder == b.holder
    assert lease_names(store, folder) == ["lease.1"]     # the expired generation is gone
    cut_off.stalled = False
    assert a.renew() is False
    assert a.lost is True and not a.held
    # the first one's release must not remove the lease the second one holds now
    a.release()
    gen, rec = current_lease(store, folder)
    assert gen == 1 and rec is not None and rec.holder == b.holder
    assert b.renew() is True and not b.lost


@pytest.mark.timeout(60)
def test_renewal_thread_keeps_the_lease_alive(store: Any, leases: Callable[..., Lease]) -> None:
    ttl = 2.0    # renewed every ttl/3: room for a loaded machine
    folder = "wandbfs/fill/md5/ab/renew"
    a = leases(store, folder, ttl, "host-a:1:aaaa")
    b = leases(store, folder, ttl, "host-b:1:bbbb")
    assert a.try_acquire() is True
    first = current_lease(store, folder)[1]
    assert first is not None
    seen = [first.expires]
    deadline = time.monotonic() + 3.5 * ttl
    while time.monotonic() < deadline:
        assert b.try_acquire() is False, "the lease lapsed although its holder renews it"
        cur = current_lease(store, folder)
        assert cur is not None and cur[0] == 0
        rec = cur[1]
        if rec is not None:     # a DirStore/S3 replace is atomic, so always readable
            assert rec.holder == a.holder
            assert rec.expires >= seen[-1]
            seen.append(rec.expires)
        time.sleep(0.1)
    assert seen[-1] - seen[0] >= 2.0 * ttl, f"expiry advanced only {seen[-1] - seen[0]:.2f}s"
    assert len(set(seen)) >= 4     # renewed several times
    assert a.held and not a.lost
    a.release()
    assert b.try_acquire() is True


@pytest.mark.timeout(60)
def test_release_frees_the_lease_at_once(store: Any, leases: Callable[..., Lease]) -> None:
    ttl = 0.6
    folder = "wandbfs/fill/md5/ab/release"
    a = leases(store, folder, ttl, "host-a:1:aaaa")
    b = leases(store, folder, ttl, "host-b:1:bbbb")
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    thread = a._thread
    a.release()
    assert not a.held and a.gen is None
    assert lease_names(store, folder) == []
    assert current_lease(store, folder) is None
    assert thread is not None and not thread.is_alive(), "the renewal thread outlived release()"
    # and nothing brings the file back (no renewal after release)
    time.sleep(ttl)
    assert lease_names(store, folder) == []
    assert b.try_acquire() is True       # at once, no waiting for an expiry
    assert b.held


@pytest.mark.timeout(60)
def test_claims_show_in_the_record(store: Any, leases: Callable[..., Lease]) -> None:
    folder = "wandbfs/fill/md5/ab/claims"
    whole = [False]
    a = leases(store, folder, 30.0, "host-a:1:aaaa", lambda: whole[0])

    def other_sees() -> LeaseRecord:
        cur = current_lease(store, folder)    # what another host reads
        assert cur is not None and cur[1] is not None
        return cur[1]

    assert a.try_acquire(first_part=2) is True
    rec = other_sees()
    assert rec.parts == frozenset({2}) and not rec.whole
    assert rec.covers(2) and not rec.covers(5) and not rec.covers(1)
    a.claim(5)                              # published at once, not at the next renewal
    rec = other_sees()
    assert rec.parts == frozenset({2, 5})
    assert rec.covers(5) and not rec.covers(8)
    a.unclaim(2)                            # leaves at the next renewal
    assert a.renew() is True
    assert other_sees().parts == frozenset({5})
    whole[0] = True
    a.note_whole()                          # told at once
    rec = other_sees()
    assert rec.whole and rec.covers(0) and rec.covers(99)


@pytest.mark.timeout(60)
def test_failed_acquire_keeps_no_claims(store: Any, leases: Callable[..., Lease]) -> None:
    folder = "wandbfs/fill/md5/ab/noclaim"
    a = leases(store, folder, 30.0, "host-a:1:aaaa")
    b = leases(store, folder, 30.0, "host-b:1:bbbb")
    assert a.try_acquire(first_part=0) is True
    assert b.try_acquire(first_part=7) is False
    a.release()
    assert b.try_acquire() is True
    rec = current_lease(store, folder)[1]
    assert rec is not None and rec.holder == b.holder and rec.parts == frozenset()


# ---- SharedTier: complete objects -----------------------------------------------------------

@pytest.mark.timeout(120)
def test_publish_then_lookup_and_read_parts(store: Any, objects: dict) -> None:
    tier = SharedTier(store)
    for name in ("big", "small"):
        rel, path, data = objects[name]
        assert tier.lookup(rel, len(data)) is None
        assert tier.publish(rel, path, len(data), {}) is True
        sums = tier.lookup(rel, len(data))
        assert sums == Sums(len(data), part_sums(data))
        assert len(sums.parts) == part_count(len(data)) == (3 if name == "big" else 1)
        for idx in range(len(sums.parts)):
            a, b = part_bounds(idx, len(data))
            assert tier.object_part(rel, sums, idx) == data[a:b]
        assert store.size(rel) == len(data)
        assert Sums.decode(store.read(tier.sums_key(rel))) == sums
    big, small = len(objects["big"][2]), len(objects["small"][2])
    assert tier.stats.published == 2
    assert tier.stats.bytes_written == big + small
    assert tier.stats.bytes_read == big + small
    assert tier.stats.bad_objects == 0 and tier.stats.errors == 0
    assert tier.available()


@pytest.mark.timeout(120)
def test_publish_with_known_part_digests(store: Any, objects: dict) -> None:
    rel, path, data = objects["big"]
    tier = SharedTier(store)
    known = {1: part_sums(data)[1]}    # the rest are read from the file
    assert tier.publish(rel, path, len(data), known) is True
    assert tier.lookup(rel, len(data)) == Sums(len(data), part_sums(data))


@pytest.mark.timeout(120)
def test_publish_writes_the_sums_first(store: Any, objects: dict) -> None:
    rel, path, data = objects["small"]
    rec = Recording(store)
    tier = SharedTier(rec)
    assert tier.publish(rel, path, len(data), {}) is True
    keys = [k for op, k in rec.ops if op in ("write", "write_file", "compose")]
    assert keys.index(tier.sums_key(rel)) < keys.index(rel), rec.ops


@pytest.mark.timeout(120)
def test_flipped_byte_fails_its_checksum_and_is_removed(store: Any, objects: dict,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=TIER_LOG)
    rel, path, data = objects["big"]
    tier = SharedTier(store)
    assert tier.publish(rel, path, len(data), {}) is True
    sums = tier.lookup(rel, len(data))
    assert sums is not None
    stored = bytearray(store.read(rel))
    stored[PART + 4321] ^= 0x01            # one bit of part 1
    store.write(rel, bytes(stored))
    assert tier.object_part(rel, sums, 0) == data[:PART]    # part 0 is still good
    assert tier.stats.bad_objects == 0
    assert tier.object_part(rel, sums, 1) is None
    assert tier.stats.bad_objects == 1
    assert store.size(rel) is None and store.read(rel) is None
    assert store.read(tier.sums_key(rel)) is None
    assert any("fails its checksum" in r.getMessage() for r in tier_warnings(caplog))
    assert tier.lookup(rel, len(data)) is None
    assert tier.object_part(rel, sums, 2) is None   # gone: absent, not bad again
    assert tier.stats.bad_objects == 1
    assert tier.available()


@pytest.mark.timeout(120)
def test_truncated_object_is_not_found_and_removed(store: Any, objects: dict) -> None:
    rel, path, data = objects["big"]
    tier = SharedTier(store)
    assert tier.publish(rel, path, len(data), {}) is True
    store.write(rel, data[:-1])
    assert tier.lookup(rel, len(data)) is None
    assert tier.stats.bad_objects == 1
    assert store.size(rel) is None
    assert store.read(tier.sums_key(rel)) is None
    assert tier.available()


@pytest.mark.timeout(120)
def test_object_truncated_after_lookup_fails_its_part(store: Any, objects: dict) -> None:
    rel, path, data = objects["big"]
    tier = SharedTier(store)
    assert tier.publish(rel, path, len(data), {}) is True
    sums = tier.lookup(rel, len(data))
    assert sums is not None
    store.write(rel, data[:2 * PART - 10])   # the last part wholly gone, part 1 short
    assert tier.object_part(rel, sums, 2) is None
    assert tier.stats.bad_objects == 1
    assert store.size(rel) is None and store.read(tier.sums_key(rel)) is None


@pytest.mark.timeout(60)
def test_lookup_with_sums_but_no_object_yet(store: Any, objects: dict) -> None:
    """Sums go first: an object whose sums are there but not its bytes is being published,
    not bad."""
    rel, path, data = objects["small"]
    tier = SharedTier(store)
    store.write(tier.sums_key(rel), Sums(len(data), part_sums(data)).encode())
    assert tier.lookup(rel, len(data)) is None
    assert tier.stats.bad_objects == 0
    assert store.read(tier.sums_key(rel)) is not None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sums", [b"{not json", b'{"size": 1000, "part": 4194304, "xxh3_128": ["x"]}',
                                  b'{"size": 1000, "part": 8388608, "xxh3_128": []}'])
def test_unreadable_sums_remove_the_object(store: Any, objects: dict, sums: bytes) -> None:
    rel, path, data = objects["small"]
    tier = SharedTier(store)
    store.write(rel, data)
    store.write(tier.sums_key(rel), sums)
    assert tier.lookup(rel, len(data)) is None
    assert tier.stats.bad_objects == 1
    assert store.size(rel) is None and store.read(tier.sums_key(rel)) is None


@pytest.mark.timeout(60)
def test_drop_removes_object_and_sums(store: Any, objects: dict) -> None:
    rel, path, data = objects["small"]
    tier = SharedTier(store)
    assert tier.publish(rel, path, len(data), {}) is True
    tier.drop(rel)
    assert store.size(rel) is None and store.read(tier.sums_key(rel)) is None
    tier.drop(rel)    # again: nothing there, no error
    assert tier.available() and tier.stats.errors == 0


# ---- SharedTier: publishing from fill parts ---------------------------------------------------

def put_all_parts(tier: SharedTier, rel: str, data: bytes, skip: int | None = None) -> None:
    for idx in range(part_count(len(data))):
        if idx != skip:
            a, b = part_bounds(idx, len(data))
            tier.put_part(rel, idx, data[a:b])


@pytest.mark.timeout(120)
def test_publish_composes_from_parts_on_s3(store: Any, kind: str, objects: dict,
                                          caplog: pytest.LogCaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger=TIER_LOG)
    rel, path, data = objects["big"]
    tier = SharedTier(store)
    put_all_parts(tier, rel, data)
    assert tier.stats.bytes_written == len(data)
    uploads: list[str] = []
    real_write_file = store.write_file
    monkeypatch.setattr(store, "write_file", lambda key, f, n: (uploads.append(key), real_write_file(key, f, n)))
    known = {i: m for i, m in enumerate(part_sums(data))}
    assert tier.publish(rel, path, len(data), known) is True
    published = [r.getMessage() for r in caplog.records if r.name == TIER_LOG and "published" in r.getMessage()]
    assert len(published) == 1, published
    if kind == "s3":
        assert "composed" in published[0] and "uploaded" not in published[0]
        assert uploads == []
        assert tier.stats.bytes_written == len(data)      # the parts only: no byte sent again
    else:
        assert "uploaded" in published[0] and "composed" not in published[0]
        assert uploads == [rel]
        assert tier.stats.bytes_written == 2 * len(data)
    got = store.read(rel)
    assert got is not None and md5(got) == md5(data)
    sums = tier.lookup(rel, len(data))
    assert sums == Sums(len(data), part_sums(data))
    assert [n for n in store.names(tier.fill_folder(rel)) if n.startswith("part.")] == []


@pytest.mark.timeout(120)
def test_publish_with_a_part_missing_uploads(store: Any, objects: dict,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=TIER_LOG)
    rel, path, data = objects["big"]
    tier = SharedTier(store)
    put_all_parts(tier, rel, data, skip=1)
    assert tier.publish(rel, path, len(data), {}) is True
    msgs = [r.getMessage() for r in caplog.records if r.name == TIER_LOG and "published" in r.getMessage()]
    assert len(msgs) == 1 and "uploaded" in msgs[0] and "composed" not in msgs[0], msgs
    got = store.read(rel)
    assert got is not None and md5(got) == md5(data)
    assert [n for n in store.names(tier.fill_folder(rel)) if n.startswith("part.")] == []


@pytest.mark.timeout(120)
def test_a_bad_fill_part_composed_is_caught_on_read(bucket: str, objects: dict) -> None:
    """Compose checks only the size: a corrupted fill part (same length) makes a composed
    object whose part fails its checksum on the first read, and the object is removed."""
    store = S3Store(bucket, S3_PREFIX)
    rel, path, data = objects["big"]
    tier = SharedTier(store)
    put_all_parts(tier, rel, data)
    bad = bytearray(data[PART:2 * PART])
    bad[100] ^= 0xFF
    tier.drop_part(rel, 1)               # parts are created, never replaced: replace it by hand
    tier.put_part(rel, 1, bytes(bad))
    assert tier.publish(rel, path, len(data), {}) is True
    sums = tier.lookup(rel, len(data))
    assert sums == Sums(len(data), part_sums(data))   # from the verified local file
    assert tier.object_part(rel, sums, 0) == data[:PART]
    assert tier.object_part(rel, sums, 1) is None
    assert tier.stats.bad_objects == 1
    assert store.size(rel) is None


# ---- SharedTier: fill parts -----------------------------------------------------------------

@pytest.mark.timeout(60)
def test_put_and_fill_part(store: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=TIER_LOG)
    rel = "obj/md5/ab/" + "c" * 30
    tier = SharedTier(store)
    part = random.Random(5).randbytes(100_000)
    assert tier.fill_part(rel, 0, len(part)) is None
    tier.put_part(rel, 0, part)
    tier.put_part(rel, 0, b"other bytes")   # a part is created once: the first stays
    assert tier.stats.bytes_written == len(part)
    assert store.names(tier.fill_folder(rel)) == ["part.0"]
    assert tier.fill_part(rel, 0, len(part)) == part
    assert tier.stats.bytes_read == len(part)
    # a part of the wrong length is not used: the reader fetches it from W&B
    assert tier.fill_part(rel, 0, len(part) + 1) is SharedTier.BAD
    assert any("part.0" in r.getMessage() for r in tier_warnings(caplog))
    # nor is one damaged in the store (its md5 travels with it), and the store is not "down"
    key = f"{tier.fill_folder(rel)}/part.0"
    raw = bytearray(store.read(key))
    raw[500] ^= 1
    store.write(key, bytes(raw))
    assert tier.fill_part(rel, 0, len(part)) is SharedTier.BAD
    assert any("fails its checksum" in r.getMessage() for r in tier_warnings(caplog))
    assert tier.stats.bytes_read == len(part)
    assert tier.available()


@pytest.mark.timeout(60)
def test_clear_parts_removes_parts_only(store: Any, objects: dict, leases: Callable[..., Lease]) -> None:
    rel, path, data = objects["small"]
    tier = SharedTier(store)
    assert tier.publish(rel, path, len(data), {}) is True
    for idx in range(3):
        tier.put_part(rel, idx, b"x" * 10)
    lease = tier.lease(rel, lambda: True)
    assert lease.try_acquire() is True
    folder = tier.fill_folder(rel)
    assert sorted(store.names(folder)) == ["lease.0", "part.0", "part.1", "part.2"]
    tier.clear_parts(rel)
    assert store.names(folder) == ["lease.0"]
    assert store.read(rel) == data                    # the complete object is untouched
    assert tier.lookup(rel, len(data)) is not None
    cur = tier.current_lease(rel)
    assert cur and cur[0] == 0 and cur[1] is not None and cur[1].holder == tier.holder
    lease.release()
    assert tier.current_lease(rel) is None


def test_keys() -> None:
    tier = SharedTier(FakeStore(Path("/nonexistent")))
    rel = "obj/md5/ab/cdef0123"
    assert tier.sums_key(rel) == "wandbfs/sums/md5/ab/cdef0123.json"
    assert tier.fill_folder(rel) == "wandbfs/fill/md5/ab/cdef0123"
    assert tier.url == "fake://tier"
    assert part_count(0) == 1 and part_count(PART) == 1 and part_count(PART + 1) == 2
    assert part_bounds(2, 2 * PART + 5) == (2 * PART, 2 * PART + 5)
    assert tier_mod.PART == 8 * MiB


# ---- SharedTier: the breaker ----------------------------------------------------------------

@pytest.mark.timeout(60)
def test_failing_store_reads_as_absent_with_one_warning(tmp_path: Path, objects: dict,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=TIER_LOG)
    fake = FakeStore(tmp_path / "fake")
    tier = SharedTier(fake, retry_after=0.5)
    rel, path, data = objects["small"]
    sums = Sums(len(data), part_sums(data))
    assert tier.available()
    t0 = time.monotonic()
    assert tier.lookup(rel, len(data)) is None
    assert not tier.available()
    assert fake.calls == 1
    # while it is down nothing asks the store, everything answers its default
    assert tier.lookup(rel, len(data)) is None
    assert tier.object_part(rel, sums, 0) is None
    assert tier.publish(rel, path, len(data), {}) is False
    assert tier.fill_part(rel, 0, 10) is None
    tier.put_part(rel, 0, b"x")
    tier.clear_parts(rel)
    tier.drop(rel)
    assert tier.current_lease(rel) is False
    assert tier.call("default", fake.read, "k") == "default"
    assert fake.calls == 1
    assert tier.stats.errors == 1
    warnings = tier_warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "unreachable" in warnings[0].getMessage() and "connection refused" in warnings[0].getMessage()
    # after retry_after it is tried again; still down: the same outage, no second warning
    wait_for(tier.available, 10.0, "the tier to be tried again")
    assert time.monotonic() - t0 >= 0.45
    assert tier.lookup(rel, len(data)) is None
    assert fake.calls == 2 and tier.stats.errors == 2
    assert not tier.available()
    assert len(tier_warnings(caplog)) == 1
    # the store comes back: one line saying so, and calls go through
    fake.broken = False
    wait_for(tier.available, 10.0, "the tier to be tried again")
    assert tier.publish(rel, path, len(data), {}) is True
    assert tier.lookup(rel, len(data)) == sums
    msgs = [r.getMessage() for r in tier_warnings(caplog)]
    assert len(msgs) == 2 and "answers again" in msgs[1], msgs
    # a new outage is a new warning
    fake.broken = True
    assert tier.lookup(rel, len(data)) is None
    assert tier.lookup(rel, len(data)) is None
    msgs = [r.getMessage() for r in tier_warnings(caplog)]
    assert len(msgs) == 3 and "unreachable" in msgs[2], msgs


@pytest.mark.timeout(60)
def test_concurrent_failures_warn_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=TIER_LOG)
    fake = FakeStore(tmp_path / "fake")
    tier = SharedTier(fake, retry_after=30.0)
    barrier = threading.Barrier(8)
    out: list[Any] = []

    def hit() -> None:
        barrier.wait(10)
        out.append(tier.lookup("obj/md5/ab/cdef", 10))

    threads = [threading.Thread(target=hit, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == [None] * 8
    assert not tier.available()
    assert tier.stats.errors >= 1
    assert len(tier_warnings(caplog)) == 1


@pytest.mark.timeout(60)
def test_lease_store_failure_through_the_breaker(tmp_path: Path) -> None:
    fake = FakeStore(tmp_path / "fake")
    tier = SharedTier(fake, retry_after=30.0)
    lease = tier.lease("obj/md5/ab/cdef", lambda: False)
    assert tier.call(False, lease.try_acquire, 0) is False
    assert not lease.held and lease.gen is None
    assert not tier.available()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("digests_known", [False, True], ids=["digests-unknown", "digests-known"])
def test_publishing_a_file_evicted_locally_is_no_store_outage(store: Any, tmp_path: Path, objects: dict,
                                                              digests_known: bool) -> None:
    """The local copy vanished before publish (evicted meanwhile): that is this host's
    file, not the shared store failing, so the tier must stay available (the caller,
    fill/tiered.py's finish, expects an OSError for it)."""
    rel, path, data = objects["small"]
    gone = tmp_path / "evicted.bin"
    tier = SharedTier(store, retry_after=30.0)
    known = dict(enumerate(part_sums(data))) if digests_known else {}
    try:
        ok = tier.publish(rel, gone, len(data), known)
    except OSError:
        ok = False
    assert ok is False
    assert tier.available(), "a missing local file tripped the breaker: the tier counts as down"
    assert tier.stats.errors == 0
