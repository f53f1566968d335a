"""Unit tests for wandbfs.cache.store (SDK-compatible content-addressed cache)."""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import os
import stat
import time
from pathlib import Path

import pytest
import xxhash

from wandbfs.cache.store import (
    TEMP_PREFIX,
    DigestMismatch,
    Hasher,
    ObjectCache,
    ObjectKey,
    default_cache_root,
    object_key,
)
from wandbfs.model.manifest import ManifestEntry, parse_manifest

# --- helpers -------------------------------------------------------------------


def md5_entry(data: bytes, path: str = "f.bin") -> ManifestEntry:
    digest = base64.b64encode(hashlib.md5(data).digest()).decode()
    return parse_manifest({"version": 1, "contents": {path: {"digest": digest, "size": len(data)}}}).entries[path]


def xxh_entry(data: bytes, path: str = "f.bin") -> ManifestEntry:
    digest = base64.b64encode(xxhash.xxh128(data).digest()).decode()
    raw = {"digest": digest, "size": len(data), "extra": {"alg": "XXH128"}}
    return parse_manifest({"version": 1, "contents": {path: raw}}).entries[path]


def ref_entry(ref: str, etag: str, size: int, path: str = "r.bin") -> ManifestEntry:
    raw = {"digest": etag, "size": size, "ref": ref}
    return parse_manifest({"version": 1, "contents": {path: raw}}).entries[path]


def write_temp(cache: ObjectCache, data: bytes) -> Path:
    fd, tmp = cache.new_temp()
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return tmp


def temps(cache: ObjectCache) -> list[str]:
    return sorted(os.listdir(cache.tmp_dir)) if cache.tmp_dir.exists() else []


def umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


DATA = b"the quick brown fox jumps over the lazy dog\n" * 100


# --- default_cache_root --------------------------------------------------------


def test_default_cache_root_env(tmp_path: Path) -> None:
    assert default_cache_root({"WANDB_CACHE_DIR": str(tmp_path / "c")}) == tmp_path / "c"


def test_default_cache_root_relative_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_cache_root({"WANDB_CACHE_DIR": "rel/dir"}) == tmp_path / "rel" / "dir"


def test_default_cache_root_does_not_expand_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_cache_root({"WANDB_CACHE_DIR": "~/x"}) == tmp_path / "~" / "x"


def test_default_cache_root_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root({}) == tmp_path / "xdg" / "wandb"


def test_default_cache_root_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_root({}) == tmp_path / ".cache" / "wandb"


def test_default_cache_root_empty_env_counts_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root({"WANDB_CACHE_DIR": ""}) == tmp_path / "xdg" / "wandb"


def test_default_cache_root_reads_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "from-env"))
    assert default_cache_root() == tmp_path / "from-env"
    assert ObjectCache.default().root == tmp_path / "from-env"


@pytest.mark.parametrize("case", ["explicit", "xdg", "home"])
def test_default_cache_root_agrees_with_sdk(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wandb import env as wandb_env
    from wandb.sdk.artifacts.artifact_file_cache import artifacts_cache_dir

    monkeypatch.delenv("WANDB_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    if case == "explicit":
        monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "explicit"))
    elif case == "xdg":
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    else:
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_root() == wandb_env.get_cache_dir()
    assert ObjectCache.default().artifacts_dir == artifacts_cache_dir()


# --- keys and paths ------------------------------------------------------------


def test_path_for_md5(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    e = md5_entry(DATA)
    h = hashlib.md5(DATA).hexdigest()
    assert object_key(e) == ObjectKey("md5", h)
    assert cache.path_for(e) == tmp_path / "artifacts" / "obj" / "md5" / h[:2] / h[2:]


def test_path_for_xxh128_uses_decoded_base64(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    e = xxh_entry(DATA)
    h = xxhash.xxh128(DATA).hexdigest()
    assert object_key(e) == ObjectKey("xxh128", h)
    assert cache.path_for(e) == tmp_path / "artifacts" / "obj" / "xxh128" / h[:2] / h[2:]


def test_path_for_etag_reference(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    e = ref_entry("s3://bkt/key.bin", '"abc123"', 5)
    h = hashlib.sha256(
        hashlib.sha256(b"s3://bkt/key.bin").digest() + hashlib.sha256(b'"abc123"').digest()
    ).hexdigest()
    assert object_key(e) == ObjectKey("etag", h)
    assert cache.path_for(e) == tmp_path / "artifacts" / "obj" / "etag" / h[:2] / h[2:]


def test_file_reference_keyed_by_md5(tmp_path: Path) -> None:
    digest = base64.b64encode(hashlib.md5(b"hi").digest()).decode()
    e = ref_entry("file:///data/hi.txt", digest, 2)
    assert object_key(e) == ObjectKey("md5", hashlib.md5(b"hi").hexdigest())


def test_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert ObjectCache("c").root == tmp_path / "c"


# --- lookup --------------------------------------------------------------------


def test_lookup_miss_on_empty_cache(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    assert cache.lookup(md5_entry(DATA)) is None
    assert not (tmp_path / "artifacts").exists()  # lookups create nothing


def test_lookup_hit_requires_matching_size(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    e = md5_entry(DATA)
    p = cache.path_for(e)
    p.parent.mkdir(parents=True)
    p.write_bytes(DATA[:-1])
    assert cache.lookup(e) is None
    p.write_bytes(DATA)
    assert cache.lookup(e) == p


def test_lookup_ignores_directory_at_object_path(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    e = md5_entry(b"")
    cache.path_for(e).mkdir(parents=True)
    assert cache.lookup(e) is None


def test_lookup_does_not_rehash(tmp_path: Path) -> None:
    # Same rule as the SDK: right size == hit.  verify_file is the deep check.
    cache = ObjectCache(tmp_path)
    e = md5_entry(DATA)
    p = cache.path_for(e)
    p.parent.mkdir(parents=True)
    p.write_bytes(b"x" * len(DATA))
    assert cache.lookup(e) == p
    assert not cache.verify_file(p, e)


# --- temp files, commit, discard -----------------------------------------------


def test_new_temp_mode_and_location(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    fd, tmp = cache.new_temp()
    os.close(fd)
    assert tmp.parent == tmp_path / "artifacts" / "tmp"
    assert tmp.name.startswith(TEMP_PREFIX)
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o600
    fd2, tmp2 = cache.new_temp()
    os.close(fd2)
    assert tmp2 != tmp


def test_created_dirs_are_0700(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path / "fresh" / "root")
    e = md5_entry(DATA)
    cache.commit(write_temp(cache, DATA), e)
    with cache.object_lock(e):
        pass
    for d in [
        tmp_path / "fresh",
        tmp_path / "fresh" / "root",
        cache.artifacts_dir,
        cache.tmp_dir,
        cache.obj_dir,
        cache.obj_dir / "md5",
        cache.path_for(e).parent,
        cache.locks_dir,
        cache.lock_path(e).parent,
    ]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700 & ~umask(), d


def test_existing_dirs_keep_their_mode(tmp_path: Path) -> None:
    (tmp_path / "artifacts").mkdir(mode=0o755)
    os.chmod(tmp_path / "artifacts", 0o755)
    cache = ObjectCache(tmp_path)
    os.close(cache.new_temp()[0])
    assert stat.S_IMODE((tmp_path / "artifacts").stat().st_mode) == 0o755


@pytest.mark.parametrize("make", [md5_entry, xxh_entry])
def test_commit_success(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    cache = ObjectCache(tmp_path)
    e = make(DATA)
    tmp = write_temp(cache, DATA)
    dest = cache.commit(tmp, e)
    assert dest == cache.path_for(e)
    assert dest.read_bytes() == DATA
    assert cache.lookup(e) == dest
    assert not tmp.exists()
    assert temps(cache) == []
    assert cache.verify_file(dest, e)


def test_commit_object_mode_matches_sdk_default(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    e = md5_entry(DATA)
    dest = cache.commit(write_temp(cache, DATA), e)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask()


def test_commit_custom_object_mode(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path, object_mode=0o600, fsync=False)
    e = md5_entry(DATA)
    dest = cache.commit(write_temp(cache, DATA), e)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


@pytest.mark.parametrize("make", [md5_entry, xxh_entry])
def test_commit_digest_mismatch(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    cache = ObjectCache(tmp_path)
    e = make(DATA)
    corrupt = bytearray(DATA)
    corrupt[10] ^= 0xFF  # same size, different bytes
    tmp = write_temp(cache, bytes(corrupt))
    with pytest.raises(DigestMismatch) as exc:
        cache.commit(tmp, e)
    err = exc.value
    assert err.expected == e.hex_digest
    if e.alg == "md5":
        assert err.actual == hashlib.md5(bytes(corrupt)).hexdigest()
    else:
        assert err.actual == xxhash.xxh128(bytes(corrupt)).hexdigest()
    assert err.expected_size == err.actual_size == len(DATA)
    assert err.path == e.path
    assert e.path in str(err)
    assert not tmp.exists()
    assert temps(cache) == []
    assert not cache.path_for(e).exists()
    assert cache.lookup(e) is None


def test_commit_truncated_file(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    e = md5_entry(DATA)
    tmp = write_temp(cache, DATA[:-5])
    with pytest.raises(DigestMismatch) as exc:
        cache.commit(tmp, e)
    assert (exc.value.expected_size, exc.value.actual_size) == (len(DATA), len(DATA) - 5)
    assert "size expected" in str(exc.value)
    assert temps(cache) == []
    assert not cache.path_for(e).exists()


def test_commit_without_verify_still_checks_size(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    e = md5_entry(DATA)
    wrong_bytes = b"y" * len(DATA)
    dest = cache.commit(write_temp(cache, wrong_bytes), e, verify=False)
    assert dest.read_bytes() == wrong_bytes  # trusted caller: not hashed
    e2 = md5_entry(b"other data")
    with pytest.raises(DigestMismatch):
        cache.commit(write_temp(cache, b"short"), e2, verify=False)
    assert temps(cache) == []


def test_commit_with_streaming_hasher(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    e = xxh_entry(DATA)
    fd, tmp = cache.new_temp()
    h = Hasher.for_entry(e)
    with os.fdopen(fd, "wb") as f:
        for i in range(0, len(DATA), 333):
            chunk = DATA[i : i + 333]
            h.update(chunk)
            f.write(chunk)
    assert h.matches(e)
    assert cache.commit(tmp, e, hasher=h).read_bytes() == DATA


def test_commit_trusts_given_hasher_result(tmp_path: Path) -> None:
    # A hasher that saw different bytes is reported as a mismatch, proving
    # the passed hasher (not a re-read of the file) decides.
    cache = ObjectCache(tmp_path)
    e = md5_entry(DATA)
    h = Hasher("md5")
    h.update(b"z" * len(DATA))
    with pytest.raises(DigestMismatch):
        cache.commit(write_temp(cache, DATA), e, hasher=h)
    assert temps(cache) == []


def test_commit_missing_temp_raises(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    tmp = write_temp(cache, DATA)
    os.unlink(tmp)  # e.g. the SDK's cleanup(remove_temp=True) ran
    with pytest.raises(FileNotFoundError):
        cache.commit(tmp, md5_entry(DATA))


def test_commit_replaces_existing_object(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    e = md5_entry(DATA)
    first = cache.commit(write_temp(cache, DATA), e)
    ino = first.stat().st_ino
    second = cache.commit(write_temp(cache, DATA), e)
    assert first == second
    assert second.stat().st_ino != ino  # atomically replaced, not appended/rewritten
    assert second.read_bytes() == DATA
    assert temps(cache) == []


def test_object_invisible_until_commit(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    e = md5_entry(DATA)
    fd, tmp = cache.new_temp()
    with os.fdopen(fd, "wb") as f:
        f.write(DATA[:100])
        f.flush()
        assert cache.lookup(e) is None
        assert not cache.path_for(e).exists()
        f.write(DATA[100:])
    assert cache.lookup(e) is None
    cache.commit(tmp, e)
    assert cache.lookup(e) is not None


def test_commit_etag_reference_checks_size_only(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    e = ref_entry("https://example.com/data.bin", "W/\"etag\"", len(DATA))
    dest = cache.commit(write_temp(cache, DATA), e)
    assert dest == cache.path_for(e)
    assert cache.lookup(e) == dest
    with pytest.raises(DigestMismatch):
        cache.commit(write_temp(cache, DATA + b"!"), e)
    assert temps(cache) == []


def test_discard(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    tmp = write_temp(cache, DATA)
    cache.discard(tmp)
    assert not tmp.exists()
    cache.discard(tmp)  # already gone: fine


# --- Hasher and verify_file ----------------------------------------------------


def test_hasher_digests() -> None:
    h = Hasher("md5")
    h.update(b"hello ")
    h.update(memoryview(b"world"))
    assert h.hexdigest() == hashlib.md5(b"hello world").hexdigest()
    assert h.b64digest() == base64.b64encode(hashlib.md5(b"hello world").digest()).decode()
    assert h.size == 11
    x = Hasher("xxh128")
    x.update(bytearray(b"hello world"))
    assert x.hexdigest() == xxhash.xxh128(b"hello world").hexdigest()
    assert x.b64digest() == base64.b64encode(xxhash.xxh128(b"hello world").digest()).decode()


def test_hasher_b64_matches_sdk_helpers(tmp_path: Path) -> None:
    from wandb.sdk.lib.hashutil import md5_file_b64, xxh128_file_b64

    f = tmp_path / "f"
    f.write_bytes(DATA)
    for alg, sdk_fn in (("md5", md5_file_b64), ("xxh128", xxh128_file_b64)):
        h = Hasher(alg)  # type: ignore[arg-type]
        h.update(DATA)
        assert h.b64digest() == sdk_fn(f)


def test_hasher_matches() -> None:
    e = md5_entry(DATA)
    h = Hasher.for_entry(e)
    h.update(DATA[:-1])
    assert not h.matches(e)  # size and digest differ
    h.update(DATA[-1:])
    assert h.matches(e)
    assert not Hasher("xxh128").matches(md5_entry(b""))  # wrong algorithm
    assert Hasher("md5").matches(md5_entry(b""))
    assert Hasher.for_entry(xxh_entry(b"")).matches(xxh_entry(b""))


def test_hasher_unknown_alg() -> None:
    with pytest.raises(ValueError):
        Hasher("sha1")  # type: ignore[arg-type]


def test_verify_file(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    f = tmp_path / "f"
    f.write_bytes(DATA)
    assert cache.verify_file(f, md5_entry(DATA))
    assert cache.verify_file(f, xxh_entry(DATA))
    assert not cache.verify_file(f, md5_entry(DATA[:-1] + b"?"))
    assert not cache.verify_file(f, xxh_entry(DATA + b"?"))
    assert not cache.verify_file(tmp_path / "missing", md5_entry(DATA))
    assert not cache.verify_file(tmp_path, md5_entry(DATA))


# --- cleanup_temps -------------------------------------------------------------


def test_cleanup_temps(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    now = time.time()
    old_ours = write_temp(cache, b"old")
    new_ours = write_temp(cache, b"new")
    old_sdk = cache.tmp_dir / "tmpabcd1234"
    old_sdk.write_bytes(b"sdk")
    subdir = cache.tmp_dir / (TEMP_PREFIX + "dir")
    subdir.mkdir()
    for p in (old_ours, old_sdk, subdir):
        os.utime(p, (now - 7200, now - 7200))
    os.utime(new_ours, (now - 10, now - 10))

    assert cache.cleanup_temps(3600, now=now) == 1
    assert not old_ours.exists()
    assert new_ours.exists() and old_sdk.exists() and subdir.exists()

    assert cache.cleanup_temps(3600, include_foreign=True, now=now) == 1
    assert not old_sdk.exists()
    assert new_ours.exists() and subdir.exists()

    assert cache.cleanup_temps(0) == 1
    assert not new_ours.exists()


def test_cleanup_temps_without_tmp_dir(tmp_path: Path) -> None:
    assert ObjectCache(tmp_path / "nothing").cleanup_temps(0) == 0


# --- compatibility with the SDK's ArtifactFileCache ----------------------------


def sdk_cache(root: Path):  # type: ignore[no-untyped-def]
    from wandb.sdk.artifacts.artifact_file_cache import ArtifactFileCache

    return ArtifactFileCache(root / "artifacts")


def sdk_alg(entry: ManifestEntry):  # type: ignore[no-untyped-def]
    from wandb.sdk.artifacts._generated import ArtifactDigestAlgorithm

    return ArtifactDigestAlgorithm.MANIFEST_XXH128 if entry.alg == "xxh128" else ArtifactDigestAlgorithm.MANIFEST_MD5


@pytest.mark.parametrize("make", [md5_entry, xxh_entry])
def test_sdk_written_object_is_our_hit(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    e = make(DATA)
    sdk = sdk_cache(tmp_path)
    path, hit, opener = sdk.check_digest_obj_path(e.digest, e.size, sdk_alg(e))
    assert not hit
    with opener("wb") as f:
        f.write(DATA)

    ours = ObjectCache(tmp_path)
    assert Path(path) == ours.path_for(e)
    assert ours.lookup(e) == Path(path)
    assert ours.verify_file(Path(path), e)


@pytest.mark.parametrize("make", [md5_entry, xxh_entry])
def test_our_object_is_sdk_hit(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    e = make(DATA)
    ours = ObjectCache(tmp_path)
    dest = ours.commit(write_temp(ours, DATA), e)

    sdk = sdk_cache(tmp_path)
    path, hit, _ = sdk.check_digest_obj_path(e.digest, e.size, sdk_alg(e))
    assert hit
    assert Path(path) == dest


def test_etag_objects_shared_with_sdk(tmp_path: Path) -> None:
    e = ref_entry("s3://bucket/path/model.bin", '"d41d8cd98f00b204e9800998ecf8427e-2"', len(DATA))
    sdk = sdk_cache(tmp_path)
    path, hit, opener = sdk.check_etag_obj_path(e.ref, e.digest, e.size)
    assert not hit
    with opener("wb") as f:
        f.write(DATA)
    ours = ObjectCache(tmp_path)
    assert ours.lookup(e) == Path(path)

    e2 = ref_entry("gs://bucket/other.bin", "CJ2r7eHn8fACEAE=", 3)
    dest = ours.commit(write_temp(ours, b"abc"), e2)
    path2, hit2, _ = sdk.check_etag_obj_path(e2.ref, e2.digest, e2.size)
    assert hit2 and Path(path2) == dest


def test_sdk_cleanup_sees_our_objects(tmp_path: Path) -> None:
    # `wandb artifact cache cleanup` manages our objects too.
    ours = ObjectCache(tmp_path)
    e = md5_entry(DATA)
    ours.commit(write_temp(ours, DATA), e)
    reclaimed = sdk_cache(tmp_path).cleanup(target_size=0)
    assert reclaimed == len(DATA)
    assert ours.lookup(e) is None


def test_size_mismatch_is_a_miss_for_both(tmp_path: Path) -> None:
    e = md5_entry(DATA)
    ours = ObjectCache(tmp_path)
    p = ours.path_for(e)
    p.parent.mkdir(parents=True)
    p.write_bytes(DATA[:3])
    _, hit, _ = sdk_cache(tmp_path).check_digest_obj_path(e.digest, e.size, sdk_alg(e))
    assert not hit
    assert ours.lookup(e) is None


# --- cross-process lock --------------------------------------------------------


def _lock_and_report(root: str, data: bytes, ready, acquired) -> None:  # type: ignore[no-untyped-def]
    cache = ObjectCache(root)
    ready.set()
    with cache.object_lock(md5_entry(data)):
        acquired.set()


def _try_nonblocking(root: str, data: bytes, out) -> None:  # type: ignore[no-untyped-def]
    cache = ObjectCache(root)
    try:
        with cache.object_lock(md5_entry(data), blocking=False):
            out.put("acquired")
    except BlockingIOError:
        out.put("busy")


def _download_once(root: str, data: bytes, counter_path: str) -> None:
    cache = ObjectCache(root)
    e = md5_entry(data)
    with cache.object_lock(e):
        if cache.lookup(e) is not None:
            return
        with open(counter_path, "a") as f:
            f.write(f"{os.getpid()}\n")
        fd, tmp = cache.new_temp()
        with os.fdopen(fd, "wb") as f:
            for i in range(0, len(data), 4096):
                f.write(data[i : i + 4096])
                time.sleep(0.001)  # a slow "download" widens the race window
        cache.commit(tmp, e)


def test_second_locker_waits(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    cache = ObjectCache(tmp_path)
    e = md5_entry(DATA)
    ready, acquired = ctx.Event(), ctx.Event()
    with cache.object_lock(e) as lock_path:
        assert lock_path == cache.lock_path(e)
        assert lock_path == tmp_path / "artifacts" / "locks" / "md5" / f"{e.hex_digest}.lock"
        proc = ctx.Process(target=_lock_and_report, args=(str(tmp_path), DATA, ready, acquired))
        proc.start()
        assert ready.wait(10)
        # The child is blocked while we hold the lock.
        assert not acquired.wait(0.5)
    # Released: the child gets it promptly.
    assert acquired.wait(10)
    proc.join(10)
    assert proc.exitcode == 0
    assert lock_path.exists()  # lock files are never deleted


def test_nonblocking_lock_reports_busy(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    cache = ObjectCache(tmp_path)
    e = md5_entry(DATA)
    out = ctx.Queue()
    with cache.object_lock(e):
        p = ctx.Process(target=_try_nonblocking, args=(str(tmp_path), DATA, out))
        p.start()
        assert out.get(timeout=10) == "busy"
        p.join(10)
    p = ctx.Process(target=_try_nonblocking, args=(str(tmp_path), DATA, out))
    p.start()
    assert out.get(timeout=10) == "acquired"
    p.join(10)


def test_lock_excludes_within_one_process(tmp_path: Path) -> None:
    # flock belongs to the open file description: a second open in the same
    # process (e.g. another worker thread) is excluded too.
    cache = ObjectCache(tmp_path)
    e = md5_entry(DATA)
    with cache.object_lock(e):
        with pytest.raises(BlockingIOError):
            with cache.object_lock(e, blocking=False):
                pass
    with cache.object_lock(e, blocking=False):
        pass


def test_locks_are_per_object(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path)
    with cache.object_lock(md5_entry(b"a")):
        with cache.object_lock(md5_entry(b"b"), blocking=False):
            pass
        # same bytes under another algorithm is a different object
        with cache.object_lock(xxh_entry(b"a"), blocking=False):
            pass


def test_concurrent_processes_download_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    counter = tmp_path / "downloads.log"
    data = os.urandom(64 * 1024)
    procs = [ctx.Process(target=_download_once, args=(str(tmp_path), data, str(counter))) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(counter.read_text().splitlines()) == 1
    cache = ObjectCache(tmp_path)
    hit = cache.lookup(md5_entry(data))
    assert hit is not None and hit.read_bytes() == data
    assert temps(cache) == []


def test_lock_released_when_holder_dies(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    e = md5_entry(DATA)

    p = ctx.Process(target=_hold_and_die, args=(str(tmp_path), DATA))
    p.start()
    p.join(10)
    assert p.exitcode == 17
    with ObjectCache(tmp_path).object_lock(e, blocking=False):
        pass


def _hold_and_die(root: str, data: bytes) -> None:
    cache = ObjectCache(root)
    lock = cache.object_lock(md5_entry(data))
    lock.__enter__()
    os._exit(17)


# --- a read-only cache directory --------------------------------------------------


def _dead_pid() -> int:
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid += 1
    return pid


def test_read_only_cache_is_read_and_said_once(  # type: ignore[no-untyped-def]
        tmp_path: Path, read_only_view, caplog) -> None:
    import fcntl
    import logging

    filled = ObjectCache(tmp_path / "c")
    e = md5_entry(DATA)
    filled.commit(write_temp(filled, DATA), e)
    orphan = filled.tmp_dir / f"{TEMP_PREFIX}{_dead_pid()}-left"
    orphan.write_bytes(b"x")
    ro = ObjectCache(read_only_view(filled.root))
    caplog.set_level(logging.WARNING, logger="wandbfs.cache.store")

    assert ro.cleanup_orphan_temps() == 0 and ro.read_only      # kept, not an error
    assert (ro.tmp_dir / orphan.name).exists()
    hit = ro.lookup(e)
    assert hit is not None
    fd = ro.open_shared(hit)                                    # O_RDONLY + LOCK_SH: fine
    assert fd is not None
    try:
        assert os.pread(fd, 10, 0) == DATA[:10]
        other = os.open(hit, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):                # still held against eviction
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    finally:
        os.close(fd)
    ro.mark_verified(hit, e)                                    # quietly not marked
    assert not ro.is_marked_verified(hit, e)
    with pytest.raises(OSError) as ei:
        with ro.object_lock(md5_entry(b"other")):
            pass
    assert ro.note_unwritable(ei.value)
    assert ro.cleanup_orphan_temps() == 0
    said = [r.getMessage() for r in caplog.records if "read-only" in r.getMessage()]
    assert len(said) == 1 and str(ro.root) in said[0], said


def test_only_refused_writes_make_a_cache_read_only(tmp_path: Path) -> None:
    import errno

    cache = ObjectCache(tmp_path)
    assert not cache.note_unwritable(OSError(errno.ENOSPC, "No space left on device"))
    assert not cache.read_only
    # One unwritable file (another user's lock file on a shared cache): that object streams,
    # the cache stays writable for the rest.
    assert cache.note_unwritable(OSError(errno.EACCES, "Permission denied")) and not cache.read_only
    assert cache.note_unwritable(OSError(errno.EROFS, "Read-only file system")) and cache.read_only


def test_a_held_object_lock_is_waited_for_a_bounded_time(tmp_path: Path) -> None:
    """A holder that is stopped or hung (another mount, SIGSTOPped) must not hang a reader."""
    import time

    cache = ObjectCache(tmp_path)
    entry = ManifestEntry("a.bin", base64.b64encode(hashlib.md5(b"x").digest()).decode(), 1)
    with cache.object_lock(entry):
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            with cache.object_lock(entry, timeout=0.3):
                pass
        assert 0.25 <= time.monotonic() - t0 < 2
    with cache.object_lock(entry, timeout=0.3):   # free again: taken at once
        pass


def test_metastore_on_a_read_only_dir_reads_and_says_once(  # type: ignore[no-untyped-def]
        tmp_path: Path, read_only_view, caplog) -> None:
    import logging

    from wandbfs.catalog.metastore import MetaStore

    (tmp_path / "m").mkdir()
    MetaStore(tmp_path / "m" / "wandbfs-meta").save_listing(("orgs",), ["acme"])
    ro = MetaStore(read_only_view(tmp_path / "m") / "wandbfs-meta")
    caplog.set_level(logging.WARNING, logger="wandbfs.catalog.metastore")
    assert ro.load_listing(("orgs",)) == ["acme"]
    for i in range(5):
        ro.save_listing(("regs", f"org{i}"), [])                # skipped, not an error
    assert ro.read_only and ro.load_listing(("regs", "org0")) is None
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "not writable" in said[0], said
