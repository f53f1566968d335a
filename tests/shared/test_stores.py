"""Unit tests of the shared tier's stores (wandbfs/shared/stores.py), no mount needed.

Every store test runs against both kinds: a ``DirStore`` on a local directory and an
``S3Store`` against moto's real S3 API on loopback (``ThreadedMotoServer``), a fresh bucket
per test under the prefix ``some/prefix``.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from wandbfs.shared.stores import DirStore, S3Store, TierError, open_store

MiB = 1 << 20
from tests.shared.conftest import S3_PREFIX as PREFIX

# ---- fixtures (moto's server: conftest.py) ----------------------------------------------

def temp_files(store: Any) -> list[str]:
    """Every temp file a DirStore left anywhere under its root (none for S3)."""
    if not isinstance(store, DirStore) or not store.root.exists():
        return []
    return [str(p.relative_to(store.root)) for p in store.root.rglob("*") if ".tmp-" in p.name]


def rand(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


# ---- read / size --------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_absent_key_reads_as_none(store: Any) -> None:
    assert store.read("obj/md5/ab/absent") is None
    assert store.read("obj/md5/ab/absent", 0, 10) is None
    assert store.read("obj/md5/ab/absent", 3) is None
    assert store.size("obj/md5/ab/absent") is None
    assert store.names("obj/md5/nothing-here") == []


@pytest.mark.timeout(60)
def test_write_read_size(store: Any) -> None:
    data = rand(100_000, 1)
    store.write("obj/md5/ab/cdef", data)
    assert store.read("obj/md5/ab/cdef") == data
    assert store.size("obj/md5/ab/cdef") == len(data)
    store.write("empty", b"")
    assert store.read("empty") == b""
    assert store.size("empty") == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("start", "end"), [
    (0, 1), (0, 4096), (1, 2), (4095, 4097), (12345, 54321), (99_999, 100_000), (0, 100_000),
    (50_000, None), (0, None), (99_999, None),
])
def test_ranged_read_is_exactly_the_range(store: Any, start: int, end: int | None) -> None:
    data = rand(100_000, 2)
    store.write("r", data)
    got = store.read("r", start, end)
    assert got == data[start:end]
    assert len(got) == (len(data) if end is None else end) - start


@pytest.mark.timeout(60)
def test_ranged_read_past_the_end_is_short(store: Any) -> None:
    data = rand(1000, 3)
    store.write("r", data)
    assert store.read("r", 900, 2000) == data[900:]   # clipped at the end, never padded
    assert store.read("r", 5000, 6000) == b""          # wholly beyond: nothing
    assert store.read("r", 10, 10) == b""              # empty range


# ---- atomic writes ------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_write_replaces_and_leaves_no_temp_files(store: Any) -> None:
    store.write("f/key", b"first version")
    store.write("f/key", b"second")
    assert store.read("f/key") == b"second"
    assert store.size("f/key") == len(b"second")
    assert store.names("f") == ["key"]
    assert temp_files(store) == []
    if isinstance(store, DirStore):
        assert sorted(os.listdir(store.root / "f")) == ["key"]


@pytest.mark.timeout(60)
def test_readers_never_see_half_a_write(store: Any) -> None:
    """A reader racing a writer that keeps replacing the key sees one whole version or the
    other, never a mix, a short one or nothing."""
    versions = [rand(2 * MiB, 10), rand(2 * MiB, 11)]
    store.write("race/key", versions[0])
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            n = 0
            while not stop.is_set():
                n += 1
                store.write("race/key", versions[n % 2])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    seen = set()
    try:
        deadline = time.monotonic() + 3.0
        reads = 0
        while time.monotonic() < deadline or reads < 20:
            got = store.read("race/key")
            assert got is not None, "the key vanished while being replaced"
            assert got in versions, f"read {len(got)} bytes that are neither version"
            seen.add(versions.index(got))
            reads += 1
            if reads > 2000:
                break
    finally:
        stop.set()
        t.join(30)
    assert not errors, errors
    assert not t.is_alive()
    assert store.names("race") == ["key"]
    assert temp_files(store) == []


@pytest.mark.timeout(120)
def test_write_file_of_20_mib_round_trips(store: Any, tmp_path: Path, kind: str) -> None:
    data = rand(20 * MiB + 12345, 4)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    with open(src, "rb") as f:
        store.write_file("obj/md5/12/big", f, len(data))
    assert store.size("obj/md5/12/big") == len(data)
    got = store.read("obj/md5/12/big")
    assert got is not None and hashlib.md5(got).hexdigest() == hashlib.md5(data).hexdigest()
    assert store.read("obj/md5/12/big", 8 * MiB - 3, 8 * MiB + 3) == data[8 * MiB - 3:8 * MiB + 3]
    assert temp_files(store) == []
    if kind == "s3":   # it went up as a multipart upload (three 8 MiB chunks), not one PUT
        import boto3

        head = boto3.client("s3").head_object(Bucket=store.bucket, Key=f"{PREFIX}/obj/md5/12/big")
        assert head["ContentLength"] == len(data)
        assert head["ETag"].strip('"').endswith("-3"), head["ETag"]
    # and replacing it with a smaller file leaves exactly the new bytes
    src.write_bytes(b"small now")
    with open(src, "rb") as f:
        store.write_file("obj/md5/12/big", f, 9)
    assert store.read("obj/md5/12/big") == b"small now"


@pytest.mark.timeout(60)
def test_a_local_file_that_fails_half_way_leaves_nothing(store: Any, tmp_path: Path) -> None:
    """A local file that cannot be read to its end is a TierError for a directory store
    (S3's own upload fails the same way) and leaves nothing behind: no half object, no temp."""
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)

    class Shrinking:
        """Claims 1000 bytes, then has none: a file truncated under the copy."""

        def __init__(self) -> None:
            self.f = open(src, "rb")

        def fileno(self) -> int:
            os.truncate(src, 0)
            return self.f.fileno()

        def read(self, n: int = -1) -> bytes:
            raise OSError("the local file went away")

        def seek(self, *a: Any) -> int:
            return 0

        def tell(self) -> int:
            return 0
    with pytest.raises(Exception):
        store.write_file("gone/key", Shrinking(), 1000)
    assert store.read("gone/key") is None
    assert store.names("gone") == []
    assert temp_files(store) == []


# ---- create-if-absent ---------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_create_only_once(store: Any) -> None:
    assert store.create("fill/lease.0", b"mine") is True
    assert store.create("fill/lease.0", b"yours") is False
    assert store.read("fill/lease.0") == b"mine"
    assert store.names("fill") == ["lease.0"]
    assert temp_files(store) == []
    store.delete("fill/lease.0")
    assert store.create("fill/lease.0", b"again") is True
    assert store.read("fill/lease.0") == b"again"


@pytest.mark.timeout(60)
def test_create_under_contention_has_one_winner(store: Any) -> None:
    for round_ in range(5):
        key = f"fill/contended/lease.{round_}"
        barrier = threading.Barrier(8)
        results: dict[int, bool] = {}
        errors: list[BaseException] = []

        def racer(i: int) -> None:
            try:
                barrier.wait(10)
                results[i] = store.create(key, f"holder-{i}".encode())
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=racer, args=(i,), daemon=True) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert len(results) == 8
        winners = [i for i, won in results.items() if won]
        assert len(winners) == 1, f"round {round_}: {len(winners)} callers won create: {winners}"
        assert store.read(key) == f"holder-{winners[0]}".encode()
    assert temp_files(store) == []


# ---- delete / names -----------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_delete(store: Any) -> None:
    store.delete("never/there")        # absent: fine, no error
    store.write("d/key", b"x")
    store.delete("d/key")
    assert store.read("d/key") is None
    assert store.size("d/key") is None
    store.delete("d/key")              # twice: fine


@pytest.mark.timeout(60)
def test_names_lists_direct_children_only(store: Any) -> None:
    store.write("f/a", b"1")
    store.write("f/part.0", b"2")
    store.write("f/sub/deeper", b"3")
    store.write("fx/not-mine", b"4")   # a sibling sharing the folder's name as a prefix
    store.write("g/other", b"5")
    names = store.names("f")
    assert {"a", "part.0"} <= set(names)
    assert not any("/" in n for n in names), names
    assert "deeper" not in names and "not-mine" not in names and "other" not in names
    assert set(names) - {"a", "part.0"} <= {"sub"}   # a sub-folder may show as itself, no deeper
    assert store.names("f/") == names                # a trailing slash is the same folder
    assert store.names("f/sub") == ["deeper"]
    assert store.names("fx") == ["not-mine"]


# ---- compose --------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_s3_compose_concatenates_parts(bucket: str) -> None:
    store = S3Store(bucket, PREFIX)
    parts = [rand(8 * MiB, 20), rand(8 * MiB, 21), rand(1024, 22)]
    names = [f"fill/md5/ab/cd/part.{i}" for i in range(3)]
    for name, data in zip(names, parts):   # each part with 16 bytes after it the compose leaves out
        store.write(name, data + b"T" * 16)
    assert store.compose("obj/md5/ab/cd", [(n, len(d)) for n, d in zip(names, parts)]) is True
    whole = b"".join(parts)
    assert store.size("obj/md5/ab/cd") == len(whole)
    got = store.read("obj/md5/ab/cd")
    assert got is not None and hashlib.md5(got).digest() == hashlib.md5(whole).digest()
    assert store.read("obj/md5/ab/cd", 8 * MiB - 1, 8 * MiB + 1) == whole[8 * MiB - 1:8 * MiB + 1]
    for name, data in zip(names, parts):   # the parts are untouched
        assert store.size(name) == len(data) + 16


@pytest.mark.timeout(60)
def test_s3_compose_with_a_missing_part_is_false(bucket: str, s3_client: Any) -> None:
    store = S3Store(bucket, PREFIX)
    store.write("fill/x/part.0", rand(8 * MiB, 30))
    assert store.compose("obj/x", [("fill/x/part.0", 8 * MiB), ("fill/x/part.1", 10)]) is False
    assert store.size("obj/x") is None
    uploads = s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == [], "the failed compose left a multipart upload behind"


@pytest.mark.timeout(60)
def test_dir_compose_is_false(tmp_path: Path) -> None:
    store = DirStore(tmp_path / "tier")
    store.write("fill/x/part.0", b"a" * 10)
    store.write("fill/x/part.1", b"b" * 10)
    assert store.compose("obj/x", [("fill/x/part.0", 8 * MiB), ("fill/x/part.1", 10)]) is False
    assert store.read("obj/x") is None


# ---- keys and URLs ----------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_s3_keys_live_under_the_prefix(bucket: str, s3_client: Any) -> None:
    store = S3Store(bucket, PREFIX)
    assert store.url == f"s3://{bucket}/{PREFIX}"
    store.write("obj/md5/ab/cdef", b"data")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [f"{PREFIX}/obj/md5/ab/cdef"]
    # a store on the bucket's root sees the same object under its full key
    root = S3Store(bucket, "")
    assert root.url == f"s3://{bucket}"
    assert root.read(f"{PREFIX}/obj/md5/ab/cdef") == b"data"


@pytest.mark.timeout(60)
def test_s3_store_on_a_missing_bucket_raises_tier_error(s3_endpoint: str) -> None:
    store = S3Store(f"no-such-bucket-{uuid.uuid4().hex[:8]}", PREFIX, timeout=5.0)
    with pytest.raises(TierError):
        store.write("k", b"x")
    with pytest.raises(TierError):
        store.names("f")
    with pytest.raises(TierError):
        store.create("k", b"x")


@pytest.mark.timeout(60)
def test_dir_store_errors_are_tier_errors(tmp_path: Path) -> None:
    (tmp_path / "tier").write_bytes(b"a file where the root folder should be")
    store = DirStore(tmp_path / "tier")
    with pytest.raises(TierError):
        store.write("a/b", b"x")
    with pytest.raises(TierError):
        store.create("a/b", b"x")
    assert store.read("a/b") is None        # NotADirectory reads as absent
    assert store.names("a") == []


@pytest.mark.timeout(60)
def test_open_store(tmp_path: Path, s3_endpoint: str) -> None:
    s = open_store("s3://my-bucket/deep/prefix/")
    assert isinstance(s, S3Store) and s.bucket == "my-bucket" and s.prefix == "deep/prefix/"
    s = open_store("s3://my-bucket")
    assert isinstance(s, S3Store) and s.prefix == ""
    d = open_store(str(tmp_path))
    from wandbfs.shared.stores import Bounded

    # a directory's calls each get a deadline (a hung NFS server must not wedge a fill)
    assert isinstance(d, Bounded) and isinstance(d.inner, DirStore) and d.inner.root == tmp_path
    assert d.url == str(tmp_path)
    for bad in ("s3://", "s3:///prefix", "gs://bucket/x", "https://host/x", "relative/dir"):
        with pytest.raises(ValueError):
            open_store(bad)


# ---- a directory that stops answering -------------------------------------------------------

@pytest.mark.timeout(60)
def test_a_hung_directory_is_a_tier_error_within_its_timeout(tmp_path: Path) -> None:
    """A hard-mounted NFS whose server went away blocks in the kernel; the store's caller
    gets a TierError in time, whatever the call. Simulated with a FIFO: opening it for
    reading blocks until a writer comes, as a read on a dead server does."""
    from wandbfs.shared.stores import Bounded

    root = tmp_path / "tier"
    (root / "obj").mkdir(parents=True)
    os.mkfifo(root / "obj" / "hung")
    store = open_store(str(root), timeout=0.5)
    assert isinstance(store, Bounded)
    import time

    t0 = time.monotonic()
    with pytest.raises(TierError, match="did not answer within 0.5s"):
        store.read("obj/hung")
    assert time.monotonic() - t0 < 3
    store.write("obj/fine", b"ok")          # the other calls are unaffected
    assert store.read("obj/fine") == b"ok"
    with open(root / "obj" / "hung", "wb"):   # let the blocked thread go
        pass
