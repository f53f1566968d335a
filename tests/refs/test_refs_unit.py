"""refs.py's pure parts, and the fill engine reading references without a mount."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
import trio
import urllib3

from tests.refs.conftest import Origin
from wandbfs.cache.store import ObjectCache, object_key
from wandbfs.fill.fetcher import Fetcher
from wandbfs.model.manifest import parse_manifest
from wandbfs.fill.getter import FetchPolicy, FetchStats
from wandbfs.fill.errors import RefChanged, RefDenied, Unsupported
from wandbfs.fill.refs import (HttpSource, RefResolver, etag_matches, expected_etag, is_unchecksummed_file_ref, local_path,
                          parse_s3, total_size, unsupported_reason)


def entry(path: str, **raw):
    return parse_manifest({"version": 1, "contents": {path: raw}}).entries[path]


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


# ---- pure -------------------------------------------------------------------------------

def test_etags_compare_as_the_sdk_records_them():
    assert etag_matches("abc", '"abc"') and etag_matches("abc", "abc") and etag_matches("abc", 'W/"abc"')
    assert etag_matches("9b2cf535f27731c974343645a3985328-2", '"9b2cf535f27731c974343645a3985328-2"')
    assert not etag_matches("abc", '"abd"') and not etag_matches("abc", None)


def test_expected_etag_is_none_when_logged_without_one():
    url = "http://h/x.bin"
    assert expected_etag(entry("x", ref=url, digest="abc", size=1, extra={"etag": '"abc"'})) == "abc"
    assert expected_etag(entry("x", ref=url, digest=url, size=1)) is None   # the SDK's no-ETag fallback


def test_s3_keys_keep_every_character_after_the_bucket():
    assert parse_s3("s3://bkt/a/b c?.bin#1") == ("bkt", "a/b c?.bin#1")
    assert parse_s3("s3://bkt/") == ("bkt", "")


def test_local_paths_are_decoded_like_the_sdk():
    assert local_path("file:///data/a%20b.bin") == "/data/a b.bin"
    assert local_path("file:///data/x.bin") == "/data/x.bin"


def test_total_size_from_200_and_206():
    assert total_size(200, {"Content-Length": "10"}) == 10
    assert total_size(206, {"Content-Range": "bytes 0-3/10"}) == 10
    assert total_size(206, {"Content-Range": "bytes 0-3/*"}) is None
    assert total_size(304, {"Content-Length": "10"}) is None


def test_unsupported_reasons_name_the_file_and_the_fix(tmp_path):
    http = entry("h", ref="https://h/x", digest="e", size=1)
    s3 = entry("weights/s.bin", ref="s3://b/k", digest="e", size=1)
    gs = entry("g.bin", ref="gs://b/g.bin", digest="CKih16GjhfMCEAE=", size=1)
    art = entry("a", ref="wandb-artifact://QXJ0aWZhY3Q6MQ==/x", digest="e", size=1)
    az = entry("z", ref="ftp://host/x", digest="e", size=1)
    assert unsupported_reason(http) is None
    assert unsupported_reason(s3, have_boto3=True) is None
    no_boto = unsupported_reason(s3, have_boto3=False)
    assert no_boto and "weights/s.bin (s3://b/k)" in no_boto and "pip install 'wandbfs[s3]'" in no_boto
    gs_reason = unsupported_reason(gs)
    assert gs_reason and "g.bin (gs://b/g.bin)" in gs_reason and "google-cloud-storage" in gs_reason
    assert "other W&B artifacts" in (unsupported_reason(art) or "")
    assert "ftp://" in (unsupported_reason(az) or "")


def test_file_refs_logged_with_checksum_false_are_recognised(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"content")
    checked = entry("f.bin", ref=p.as_uri(), digest=md5_b64(b"content"), size=7)
    unchecked = entry("f.bin", ref=p.as_uri(), digest=md5_b64(p.resolve().as_uri().encode()), size=7)
    assert not is_unchecksummed_file_ref(checked) and unsupported_reason(checked) is None
    assert is_unchecksummed_file_ref(unchecked) and "checksum=False" in (unsupported_reason(unchecked) or "")


def test_http_response_checks():
    e = entry("x", ref="http://h/x", digest="abc", size=10, extra={"etag": '"abc"'})
    src = HttpSource(e, urllib3.PoolManager(), FetchPolicy(), FetchStats())
    assert src.headers["If-Match"] == '"abc"'
    src.check(206, {"ETag": '"abc"', "Content-Range": "bytes 0-4/10"}, 0, 5)
    src.check(200, {"ETag": '"abc"', "Content-Length": "10"}, 0, 10)
    src.check(503, {}, 0, 10)  # transient: left to the getter's retries
    for status, headers, what in [(200, {"ETag": '"abd"'}, "ETag now"), (200, {}, "ETag now None"),
                                  (206, {"ETag": '"abc"', "Content-Range": "bytes 0-4/11"}, "size is now 11"),
                                  (404, {}, "no longer exists"), (412, {}, "HTTP 412"), (416, {}, "HTTP 416")]:
        with pytest.raises(RefChanged, match=what):
            src.check(status, headers, 0, 5)
    with pytest.raises(RefDenied):
        src.check(403, {}, 0, 5)
    azure = entry("z", ref="https://acct.blob.core.windows.net/c/z", digest="0x8D", size=1)
    with pytest.raises(Unsupported, match="Azure"):
        HttpSource(azure, urllib3.PoolManager(), FetchPolicy(), FetchStats()).check(403, {}, 0, 1)


def test_the_sdk_cache_key_of_each_scheme(tmp_path):
    data = b"abc"
    f = entry("f", ref="file:///x", digest=md5_b64(data), size=3)
    assert object_key(f).kind == "md5" and object_key(f).hex == hashlib.md5(data).hexdigest()
    h = entry("h", ref="http://h/x", digest="etag1", size=3)
    want = hashlib.sha256(hashlib.sha256(b"http://h/x").digest() + hashlib.sha256(b"etag1").digest()).hexdigest()
    assert object_key(h).kind == "etag" and object_key(h).hex == want


# ---- the fill engine, without a mount ---------------------------------------------------

def fetch_all(cache: ObjectCache, *entries, policy: FetchPolicy | None = None) -> list[bytes | BaseException]:
    async def main() -> list[bytes | BaseException]:
        out: list[bytes | BaseException] = []
        async with trio.open_nursery() as n:
            async def no_urls(*a):
                raise AssertionError("references never ask W&B for a URL")
            fetcher = Fetcher(cache, no_urls, policy=policy or FetchPolicy(part_size=1 << 20), nursery=n)
            for e in entries:
                try:
                    out.append(Path(await fetcher.ensure(None, e)).read_bytes())  # type: ignore[arg-type]
                except Exception as err:  # noqa: BLE001
                    out.append(err)
            fetcher.close()
        return out
    return trio.run(main)


def test_fetcher_fills_file_and_http_references(tmp_path, origin: Origin):
    local = tmp_path / "local.bin"
    data = os.urandom(3 << 20)
    local.write_bytes(data)
    remote = os.urandom((2 << 20) + 5)
    url = origin.put("/unit/remote.bin", remote)
    etag = hashlib.md5(remote).hexdigest()
    cache = ObjectCache(tmp_path / "cache", fsync=False)
    f = entry("local.bin", ref=local.as_uri(), digest=md5_b64(data), size=len(data))
    h = entry("remote.bin", ref=url, digest=etag, size=len(remote), extra={"etag": f'"{etag}"'})
    assert fetch_all(cache, f, h) == [data, remote]
    assert cache.lookup(f) and cache.lookup(h) and cache.path_for(h).parent.parent.name == "etag"
    assert len(origin.gets("/unit/remote.bin")) == 3   # three 1 MiB parts


def test_fetcher_refuses_changed_references_and_unsupported_schemes(tmp_path, origin: Origin):
    local = tmp_path / "local.bin"
    local.write_bytes(b"now different")
    url = origin.put("/unit/changed.bin", b"served now")
    cache = ObjectCache(tmp_path / "cache", fsync=False)
    f = entry("local.bin", ref=local.as_uri(), digest=md5_b64(b"was the same!"), size=13)
    h = entry("changed.bin", ref=url, digest="logged-etag", size=10, extra={"etag": '"logged-etag"'})
    g = entry("g.bin", ref="gs://b/g.bin", digest="CKih16GjhfMCEAE=", size=3)
    got = fetch_all(cache, f, h, g)
    assert isinstance(got[0], Exception) and "changed since it was logged" in str(got[0])
    assert isinstance(got[1], RefChanged) and "ETag now" in str(got[1])
    assert isinstance(got[2], Unsupported)
    assert not cache.lookup(f) and not cache.lookup(h)
    assert list(cache.iter_temps()) == []   # nothing left behind


def test_an_origin_without_range_or_head_is_read_whole(tmp_path, origin: Origin):
    data = os.urandom(3 << 20)
    url = origin.put("/unit/norange.bin", data)
    origin.ranges = origin.head = False
    etag = hashlib.md5(data).hexdigest()
    h = entry("n.bin", ref=url, digest=etag, size=len(data), extra={"etag": f'"{etag}"'})
    assert fetch_all(ObjectCache(tmp_path / "c", fsync=False), h) == [data]
    gets = origin.gets("/unit/norange.bin")
    assert len(gets) == 1 and "Range" not in gets[0]


def test_resolver_reports_missing_boto3():
    r = RefResolver(urllib3.PoolManager(), FetchPolicy(), FetchStats())
    r._have_boto3 = False
    with pytest.raises(Unsupported, match="boto3"):
        r.check(entry("s.bin", ref="s3://b/s.bin", digest="e", size=1))


def test_s3_urls_are_presigned_for_the_buckets_region(s3):
    import boto3

    eu = boto3.client("s3", region_name="eu-west-1")
    eu.create_bucket(Bucket="refs-eu-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    put = eu.put_object(Bucket="refs-eu-bucket", Key="k/w.bin", Body=b"12345")
    etag = put["ETag"].strip('"')
    e = entry("w.bin", ref="s3://refs-eu-bucket/k/w.bin", digest=etag, size=5, extra={"etag": etag})
    r = RefResolver(urllib3.PoolManager(), FetchPolicy(), FetchStats())
    src = r.source(e)
    src.prepare()
    url = src.url(False)
    assert "eu-west-1" in url and "X-Amz-Signature=" in url
    assert urllib3.PoolManager().request("GET", url).data == b"12345"
