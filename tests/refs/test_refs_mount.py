"""Reference entries (file://, http://, s3://, gs://) read through a real mount.

Each version is published with the real SDK's ``add_reference`` into the emulator's
registry; the bytes live outside W&B (a local file, a local HTTP origin, moto's S3), and
must come back exactly, into the SDK's cache keys, or not at all.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import wandb

from tests.fs.conftest import blob_gets, run_cli
from tests.helpers import files_digest, tree_digest, wait_for
from tests.refs.conftest import cache_object, publish_refs, unique

pytestmark = pytest.mark.fuse


def coll_dir(m, name: str, version: str = "v0") -> Path:
    org, reg, coll = name.split("/")
    return m.path / org / reg.removeprefix("wandb-registry-") / coll / version


def read_errno(path: Path) -> int:
    with pytest.raises(OSError) as exc:
        path.read_bytes()
    return exc.value.errno


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- file:// ----------------------------------------------------------------------------

def test_file_references_read_back_into_the_md5_cache(emu, mount, fresh_cache, tmp_path):
    data = tmp_path / "data"
    files = {"weights.bin": os.urandom(300_000), "dir/a.txt": b"alpha\n", "dir/sub/b.bin": os.urandom(70_000)}
    for rel, blob in files.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(blob)
    coll = unique("file-refs")
    name = publish_refs(coll, [(f"file://{data}/weights.bin", {}), (f"file://{data}/dir", {"name": "dir"})],
                        aliases=["production"])
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage")
    v0 = coll_dir(m, name)
    assert tree_digest(v0) == files_digest(files)
    out = subprocess.run(["sha256sum", "weights.bin", "dir/sub/b.bin"], cwd=v0, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0::2] == [sha256(files["weights.bin"]), sha256(files["dir/sub/b.bin"])]
    assert subprocess.run(["cat", str(v0 / "dir/a.txt")], capture_output=True, check=True).stdout == b"alpha\n"
    assert blob_gets(emu) == []  # nothing came from W&B storage
    obj = cache_object(fresh_cache, f"{name}:v0", "weights.bin")
    assert obj.parent.parent.name == "md5" and obj.read_bytes() == files["weights.bin"]
    assert obj.name == hashlib.md5(files["weights.bin"]).hexdigest()[2:]


def test_file_reference_changed_since_logging_is_eio(emu, mount, fresh_cache, tmp_path):
    same, longer = tmp_path / "same.bin", tmp_path / "longer.bin"
    same.write_bytes(b"a" * 100_000)
    longer.write_bytes(b"b" * 1000)
    name = publish_refs(unique("file-changed"), [(f"file://{same}", {}), (f"file://{longer}", {})])
    same.write_bytes(b"c" * 100_000)       # same size, other bytes: only the md5 can tell
    longer.write_bytes(b"b" * 1001)
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage")
    v0 = coll_dir(m, name)
    assert os.stat(v0 / "same.bin").st_size == 100_000   # listing comes from the manifest
    assert read_errno(v0 / "same.bin") == errno.EIO
    assert read_errno(v0 / "longer.bin") == errno.EIO
    log = wait_for(lambda: m.log if "longer.bin" in m.log else None, what="the log line")
    assert f"{same} changed since it was logged" in log and f"{longer} changed since it was logged" in log
    assert not cache_object(fresh_cache, f"{name}:v0", "same.bin").exists()


def test_file_reference_logged_without_checksum_is_eopnotsupp(emu, mount, fresh_cache, tmp_path):
    p = tmp_path / "unchecked.bin"
    p.write_bytes(b"x" * 10)
    name = publish_refs(unique("file-nocheck"), [(f"file://{p}", {"checksum": False})])
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage")
    assert read_errno(coll_dir(m, name) / "unchecked.bin") == errno.EOPNOTSUPP
    assert "checksum=False" in m.log


# ---- http(s):// -------------------------------------------------------------------------

def test_http_references_stream_in_ranged_parts_and_share_the_sdk_cache(emu, mount, fresh_cache, origin,
                                                                        tmp_path):
    coll = unique("http-refs")
    small, big = os.urandom(50_000), os.urandom(3 * 2**20 + 123)
    u_small = origin.put(f"/{coll}/small.bin", small)
    u_big = origin.put(f"/{coll}/big.bin", big)
    name = publish_refs(coll, [(u_small, {}), (u_big, {})], stored={"stored.txt": b"kept by W&B\n"}, tmp=tmp_path)
    origin.requests.clear()
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage", "--part-size", "1")
    v0 = coll_dir(m, name)
    assert (v0 / "small.bin").read_bytes() == small
    assert sha256((v0 / "big.bin").read_bytes()) == sha256(big)
    assert (v0 / "stored.txt").read_bytes() == b"kept by W&B\n"   # a mixed version: stored files still work
    parts = origin.gets(f"/{coll}/big.bin")
    assert len(parts) == 4 and all(h.get("Range", "").startswith("bytes=") for h in parts)
    etag = f'"{hashlib.md5(big).hexdigest()}"'
    assert all(h.get("If-Match") == etag for h in parts)   # the origin refuses parts of another version
    obj = cache_object(fresh_cache, f"{name}:v0", "big.bin")
    assert obj.parent.parent.name == "etag" and sha256(obj.read_bytes()) == sha256(big)
    # artifact.download() finds both in the cache: it asks the origin for nothing.
    before = len(origin.gets())
    root = Path(wandb.Api().artifact(f"{name}:v0").download(str(tmp_path / "dl")))
    assert (root / "small.bin").read_bytes() == small and sha256((root / "big.bin").read_bytes()) == sha256(big)
    assert len(origin.gets()) == before


def test_mount_reads_what_artifact_download_fetched(emu, mount, fresh_cache, origin, tmp_path):
    coll = unique("http-sdk-first")
    blob = os.urandom(200_000)
    name = publish_refs(coll, [(origin.put(f"/{coll}/w.bin", blob), {})])
    origin.requests.clear()
    wandb.Api().artifact(f"{name}:v0").download(str(tmp_path / "dl"))
    assert len(origin.gets()) == 1
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage")
    assert (coll_dir(m, name) / "w.bin").read_bytes() == blob
    assert len(origin.gets()) == 1 and [r for r in origin.requests if r[0] == "HEAD"] == []


def test_http_reference_changed_since_logging_is_eio(emu, mount, fresh_cache, origin):
    coll = unique("http-changed")
    url = origin.put(f"/{coll}/w.bin", b"logged bytes\n")
    name = publish_refs(coll, [(url, {})])
    origin.put(f"/{coll}/w.bin", b"other bytes!\n")   # same size, new ETag
    origin.requests.clear()
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage")
    v0 = coll_dir(m, name)
    assert read_errno(v0 / "w.bin") == errno.EIO
    assert origin.gets() == []   # refused on its HEAD: not one byte of the new object was read
    log = wait_for(lambda: m.log if "changed since it was logged" in m.log else None, what="the log line")
    assert url in log and "ETag now" in log
    assert not cache_object(fresh_cache, f"{name}:v0", "w.bin").exists()
    origin.files.pop(f"/{coll}/w.bin")   # and once it is gone altogether
    assert read_errno(v0 / "w.bin") == errno.EIO
    assert "no longer exists" in m.log


def test_http_reference_changing_during_the_download_is_eio(emu, mount, fresh_cache, origin):
    coll = unique("http-swap")
    big = os.urandom(4 * 2**20)
    name = publish_refs(coll, [(origin.put(f"/{coll}/big.bin", big), {})])
    origin.swap = (f"/{coll}/big.bin", os.urandom(4 * 2**20))   # a new upload lands after the first part
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage", "--part-size", "1", "--concurrency", "1",
              "--verify", "strict")
    assert read_errno(coll_dir(m, name) / "big.bin") == errno.EIO
    assert not cache_object(fresh_cache, f"{name}:v0", "big.bin").exists()


def test_http_origin_without_range_support_gets_one_whole_get(emu, mount, fresh_cache, origin):
    coll = unique("http-norange")
    big = os.urandom(3 * 2**20)
    name = publish_refs(coll, [(origin.put(f"/{coll}/big.bin", big), {})])
    origin.ranges = False
    origin.requests.clear()
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage", "--part-size", "1")
    assert sha256((coll_dir(m, name) / "big.bin").read_bytes()) == sha256(big)
    gets = origin.gets(f"/{coll}/big.bin")
    assert len(gets) == 1 and "Range" not in gets[0]


def test_http_reference_moved_behind_a_redirect_is_followed(emu, mount, fresh_cache, origin):
    coll = unique("http-moved")
    blob = os.urandom(3 * 2**20)
    etag = hashlib.md5(blob).hexdigest()
    name = publish_refs(coll, [(origin.put(f"/{coll}/w.bin", blob), {})])
    origin.put(f"/cdn/{coll}/w.bin", blob, etag=etag)   # the same object, now served from elsewhere
    origin.redirects[f"/{coll}/w.bin"] = f"/cdn/{coll}/w.bin"
    origin.requests.clear()
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage", "--part-size", "1")
    assert sha256((coll_dir(m, name) / "w.bin").read_bytes()) == sha256(blob)
    assert len(origin.gets(f"/cdn/{coll}/w.bin")) == 3


# ---- s3:// ------------------------------------------------------------------------------

def test_s3_references_with_the_users_credentials(emu, mount, fresh_cache, s3, refs_env, tmp_path):
    bucket = unique("refs").lower()
    s3.create_bucket(Bucket=bucket)
    files = {"models/w.bin": os.urandom(2 * 2**20 + 77), "models/config with space.json": b'{"a": 1}\n'}
    for key, blob in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=blob)
    name = publish_refs(bucket, [(f"s3://{bucket}/models", {})])
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage", "--part-size", "1", env=refs_env)
    v0 = coll_dir(m, name)
    assert tree_digest(v0) == files_digest({k.removeprefix("models/"): v for k, v in files.items()})
    obj = cache_object(fresh_cache, f"{name}:v0", "w.bin")
    assert obj.parent.parent.name == "etag" and obj.read_bytes() == files["models/w.bin"]
    # artifact.download() (boto3 in this process, same endpoint variables) shares the objects.
    root = Path(wandb.Api().artifact(f"{name}:v0").download(str(tmp_path / "dl")))
    assert (root / "w.bin").read_bytes() == files["models/w.bin"]


def test_s3_object_overwritten_since_logging_is_eio(emu, mount, fresh_cache, s3, refs_env):
    bucket = unique("over").lower()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="w.bin", Body=b"logged" * 1000)
    s3.put_object(Bucket=bucket, Key="gone.bin", Body=b"soon deleted")
    name = publish_refs(bucket, [(f"s3://{bucket}/w.bin", {}), (f"s3://{bucket}/gone.bin", {})])
    s3.put_object(Bucket=bucket, Key="w.bin", Body=b"LOGGED" * 1000)
    s3.delete_object(Bucket=bucket, Key="gone.bin")
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage", env=refs_env)
    v0 = coll_dir(m, name)
    assert read_errno(v0 / "w.bin") == errno.EIO
    assert read_errno(v0 / "gone.bin") == errno.EIO
    log = wait_for(lambda: m.log if "gone.bin" in m.log else None, what="the log lines")
    assert f"s3://{bucket}/w.bin changed since it was logged" in log
    assert f"s3://{bucket}/gone.bin no longer exists" in log
    assert not cache_object(fresh_cache, f"{name}:v0", "w.bin").exists()


def test_s3_version_id_is_honoured(emu, mount, fresh_cache, s3, refs_env):
    bucket = unique("vers").lower()
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = os.urandom(1_500_000)
    s3.put_object(Bucket=bucket, Key="w.bin", Body=first)
    name = publish_refs(bucket, [(f"s3://{bucket}/w.bin", {})])
    entry = wandb.Api().artifact(f"{name}:v0").manifest.entries["w.bin"]
    assert entry.extra.get("versionID")
    s3.put_object(Bucket=bucket, Key="w.bin", Body=os.urandom(1_500_000))   # the latest is another object now
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage", "--part-size", "1", env=refs_env)
    assert sha256((coll_dir(m, name) / "w.bin").read_bytes()) == sha256(first)


def test_s3_reference_without_credentials_is_eacces(emu, mount, fresh_cache, s3, refs_env, mount_env):
    bucket = unique("nocreds").lower()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="w.bin", Body=b"secret")
    name = publish_refs(bucket, [(f"s3://{bucket}/w.bin", {})])
    env = {k: v for k, v in refs_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage", env=env)
    assert read_errno(coll_dir(m, name) / "w.bin") == errno.EACCES
    assert "no AWS credentials" in m.log


# ---- gs:// ------------------------------------------------------------------------------

def gs_entry(path: str, ref: str, data: bytes):
    """The entry the SDK's GCS handler writes (digest = the object's ETag, versionID = its
    generation). Its add_reference needs google-cloud-storage, which is not installed."""
    from wandb.sdk.artifacts.artifact_manifest_entry import ArtifactManifestEntry

    return ArtifactManifestEntry(path=path, ref=ref, digest="CKih16GjhfMCEAE=", size=len(data),
                                 extra={"versionID": 1712345678901234})


def test_gs_reference_is_eopnotsupp_until_something_caches_it(emu, mount, fresh_cache, origin):
    coll = unique("gs-refs")
    data = b"bytes in google cloud storage\n"
    name = publish_refs(coll, [(origin.put(f"/{coll}/h.txt", b"http\n"), {})],
                        extra_entries=[gs_entry("g.txt", f"gs://{coll}/g.txt", data)])
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage")
    v0 = coll_dir(m, name)
    assert sorted(os.listdir(v0)) == ["g.txt", "h.txt"] and os.stat(v0 / "g.txt").st_size == len(data)
    assert read_errno(v0 / "g.txt") == errno.EOPNOTSUPP
    assert (v0 / "h.txt").read_bytes() == b"http\n"   # the rest of the version is unaffected
    assert f"g.txt (gs://{coll}/g.txt)" in m.log and "google-cloud-storage" in m.log
    # What artifact.download() fetched with google-cloud-storage lands at the SDK's key:
    obj = cache_object(fresh_cache, f"{name}:v0", "g.txt")
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(data)
    assert (v0 / "g.txt").read_bytes() == data


# ---- prefetch ---------------------------------------------------------------------------

def test_prefetch_fetches_references_and_skips_what_it_cannot_read(emu, mount, fresh_cache, origin, refs_env,
                                                                   tmp_path):
    coll = unique("prefetch-refs")
    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(123_456))
    blob = os.urandom(2 * 2**20)
    name = publish_refs(coll, [(origin.put(f"/{coll}/remote.bin", blob), {}), (f"file://{local}", {})],
                        extra_entries=[gs_entry("g.txt", f"gs://{coll}/g.txt", b"12345")])
    origin.requests.clear()
    r = run_cli(["prefetch", "-q", "--cache-dir", str(fresh_cache), f"{name}:v0"], refs_env)
    assert r.returncode == 0, r.stderr
    assert "2 files" in r.stdout and f"{2 * 2**20 + 123_456} bytes" in r.stdout
    assert "skipping g.txt" in r.stderr and "google-cloud-storage" in r.stderr
    fetched = len(origin.gets())
    assert fetched >= 1
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage")
    v0 = coll_dir(m, name)
    assert (v0 / "remote.bin").read_bytes() == blob and (v0 / "local.bin").read_bytes() == local.read_bytes()
    assert len(origin.gets()) == fetched   # the mount found both in the cache
