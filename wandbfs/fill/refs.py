"""Reference entries: bytes that live outside W&B storage (``artifact.add_reference``).

A reference entry names its bytes by URI (``ref``) and records what the SDK's storage
handler saw when it was logged (wandb 0.31, ``sdk/artifacts/storage_handlers/``):

* ``file://``: ``digest`` is the md5 (base64) of the content, ``size`` its length. The
  cache key is that md5, as for stored files. Logged with ``checksum=False``, the digest
  is the md5 of the path's URI instead, and the bytes cannot be verified.
* ``http(s)://``: ``digest`` is the response's ETag without its quotes (``extra.etag``
  keeps them), or the URL itself when the server sent none; ``size`` its Content-Length.
* ``s3://bucket/key``: ``digest`` is the object's ETag, ``extra.versionID`` its version
  when the bucket is versioned.
* ``gs://``: ETag and generation (``extra.versionID``); not read by wandbfs.

Every remote reference is cached under ``etag/<sha256(sha256(url) + sha256(etag))>``
(``cache.object_key``), exactly where ``artifact.download()`` puts it, so either side
reuses the other's download.

This module turns an entry into a *source* the fill engine reads parts from (a getter
with ``fetch(start, end, sink)``), and checks the remote object against the manifest
first: its size, and its ETag (http, s3) or, at the end of the fill, the md5 (file). An
object that changed since it was logged is refused (``RefChanged``: EIO), never served.
A scheme wandbfs cannot read raises ``Unsupported`` (EOPNOTSUPP) naming the file and
what would read it. The fetcher stays the one place that decides how bytes reach a
reader; this module only knows the schemes.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import logging
import os
import random
import stat
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping

import urllib3

from wandbfs.model.manifest import ManifestEntry
from wandbfs.fill.errors import FetchError, RefChanged, RefDenied, Unsupported
from wandbfs.model.retry_after import next_wait, retry_after_s
from wandbfs.fill.getter import CHUNK, FOLLOW_REDIRECTS, FetchPolicy, FetchStats, Getter, RangeGetter, Sink, deliver

log = logging.getLogger(__name__)

__all__ = ["RefResolver", "etag_matches", "expected_etag", "local_path", "parse_s3", "unsupported_reason"]

S3_URL_LIFETIME = 3600
"""Seconds a presigned S3 GET stays valid; a refused one is presigned again."""

AZURE_SUFFIX = ".blob.core.windows.net"


# ---- pure parts -----------------------------------------------------------------------

def _scheme(ref: str) -> str:
    return urllib.parse.urlsplit(ref).scheme.lower()


def local_path(ref: str) -> str:
    """The local path of a ``file://`` reference, as the SDK computes it
    (``wandb.util.local_file_uri_to_path``: the URI's path, percent-decoded)."""
    return urllib.request.url2pathname(urllib.parse.urlparse(ref).path)


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def is_unchecksummed_file_ref(entry: ManifestEntry) -> bool:
    """Was this ``file://`` entry logged with ``checksum=False``?

    Then the SDK recorded ``md5(Path(path).resolve().as_uri())`` instead of the content's
    md5 (``local_file_handler._md5_path``), so the bytes can never be verified.
    """
    if entry.ref is None or _scheme(entry.ref) != "file":
        return False
    p = local_path(entry.ref)
    candidates = {Path(p).absolute().as_uri()}
    try:
        candidates.add(Path(p).resolve().as_uri())
    except (OSError, RuntimeError):
        pass
    return any(_md5_b64(uri.encode("utf-8")) == entry.digest for uri in candidates)


def expected_etag(entry: ManifestEntry) -> str | None:
    """The ETag a remote reference must still have, or ``None`` when it was logged without
    one (the SDK then records the URL itself as the digest)."""
    if entry.ref is None or entry.digest == entry.ref:
        return None
    return entry.digest


def _bare_etag(value: str) -> str:
    v = value.strip()
    if v[:2] in ("W/", "w/"):
        v = v[2:]
    return v.strip('"')


def etag_matches(expected: str, header: str | None) -> bool:
    """Does an ETag header name the logged version? Compared as the SDK records it (quotes
    stripped); a weak ``W/`` marker is ignored on both sides."""
    return header is not None and _bare_etag(header) == _bare_etag(expected)


def parse_s3(ref: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> (bucket, key). Everything after the bucket is the key,
    ``?`` and ``#`` included: the SDK writes object keys into the ref unescaped."""
    rest = ref.split("://", 1)[1] if "://" in ref else ref
    bucket, _, key = rest.partition("/")
    return bucket, key


def total_size(status: int, headers: Mapping[str, str]) -> int | None:
    """The object's full size from a 200 (Content-Length) or 206 (Content-Range) response."""
    if status == 206:
        cr = headers.get("Content-Range") or ""
        total = cr.rpartition("/")[2].strip()
        return int(total) if total.isdigit() else None
    if status == 200:
        cl = (headers.get("Content-Length") or "").strip()
        return int(cl) if cl.isdigit() else None
    return None


def unsupported_reason(entry: ManifestEntry, *, have_boto3: bool | None = None) -> str | None:
    """Why wandbfs cannot read this entry's bytes (naming what would), or ``None``."""
    if entry.ref is None:
        return None
    scheme = _scheme(entry.ref)
    what = f"{entry.path} ({entry.ref})"
    if scheme == "file":
        if is_unchecksummed_file_ref(entry):
            return (f"{what} was logged with checksum=False, so its bytes cannot be verified; "
                    "wandbfs (like artifact.download()) does not serve it: read the file at its own path")
        return None
    if scheme in ("http", "https"):
        return None
    if scheme == "s3":
        if have_boto3 is None:
            have_boto3 = importlib.util.find_spec("boto3") is not None
        if not have_boto3:
            return f"{what}: s3:// references need boto3 in wandbfs's environment: pip install 'wandbfs[s3]'"
        return None
    if scheme == "gs":
        return (f"{what}: gs:// references are not supported by wandbfs; artifact.download() reads them "
                "with google-cloud-storage installed (pip install 'wandb[gcp]')")
    if scheme in ("wandb-artifact", "wandb-client-artifact"):
        return f"{what}: references to other W&B artifacts are not supported; read that artifact's own path"
    return f"{what}: {scheme}:// references are not supported by wandbfs"


# ---- sources --------------------------------------------------------------------------

class _Source:
    """One reference's bytes. ``prepare`` (blocking, idempotent) checks the remote object
    against the manifest; ``getter`` gives the fill engine something to read parts from."""

    ranges = True   # parts can be fetched independently (else: one whole-object GET)

    def __init__(self, entry: ManifestEntry) -> None:
        assert entry.ref is not None
        self.entry = entry
        self.ref: str = entry.ref
        self._prepared = False
        self._lock = threading.Lock()

    def prepare(self) -> None:
        with self._lock:
            if not self._prepared:
                self._prepare()
                self._prepared = True

    def _prepare(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def getter(self, workers: int, cancelled: Callable[[], bool]) -> Getter:  # pragma: no cover
        raise NotImplementedError

    def _what(self) -> str:
        return f"{self.entry.path}: {self.ref}"


class _Prepared:
    """A getter that checks the source once before its first part (the uncached stream
    builds its getter synchronously, so the check runs in its first worker thread)."""

    def __init__(self, source: _Source, inner: Getter) -> None:
        self.source = source
        self.inner = inner

    def fetch(self, start: int, end: int, sink: Sink) -> None:
        self.source.prepare()
        self.inner.fetch(start, end, sink)


class LocalFileSource(_Source):
    """``file://``: read with ``pread``; the fill's hasher checks the md5 at the end."""

    def __init__(self, entry: ManifestEntry) -> None:
        super().__init__(entry)
        self.path = local_path(self.ref)

    def _stat(self) -> os.stat_result:
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            raise RefChanged(f"{self._what()} no longer exists (removed since it was logged)") from None
        except PermissionError as e:
            raise RefDenied(f"{self._what()}: permission denied: {e}") from None
        except OSError as e:
            raise FetchError(f"{self._what()}: {e}") from None
        if not stat.S_ISREG(st.st_mode):
            raise RefChanged(f"{self._what()} is no longer a regular file")
        if st.st_size != self.entry.size:
            raise RefChanged(f"{self._what()} changed since it was logged: its size is now {st.st_size}, "
                             f"the manifest says {self.entry.size}")
        return st

    def _prepare(self) -> None:
        self._stat()

    def getter(self, workers: int, cancelled: Callable[[], bool]) -> Getter:
        return _Prepared(self, self)

    def fetch(self, start: int, end: int, sink: Sink) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise RefChanged(f"{self._what()} no longer exists (removed since it was logged)") from None
        except PermissionError as e:
            raise RefDenied(f"{self._what()}: permission denied: {e}") from None
        except OSError as e:
            raise FetchError(f"{self._what()}: {e}") from None
        try:
            pos = start
            while pos < end:
                try:
                    data = os.pread(fd, min(CHUNK, end - pos), pos)
                except OSError as e:
                    raise FetchError(f"{self._what()}: reading failed: {e}") from None
                if not data:
                    raise RefChanged(f"{self._what()} changed since it was logged: it ends at byte {pos}, "
                                     f"the manifest says {self.entry.size}")
                deliver(self.entry, sink, pos, data)
                pos += len(data)
        finally:
            os.close(fd)


class _RemoteSource(_Source):
    """A reference read with ranged GETs (the fill engine's ``RangeGetter``), every response
    checked against the logged ETag and size."""

    def __init__(self, entry: ManifestEntry, http: urllib3.PoolManager, policy: FetchPolicy,
                 stats: FetchStats) -> None:
        super().__init__(entry)
        self.http = http
        self.policy = policy
        self.stats = stats
        self.etag = expected_etag(entry)
        self.headers: dict[str, str] = {"Accept-Encoding": "identity"}
        if self.etag is not None:
            # The server itself refuses (412) a part of another version, where it supports it.
            quoted = entry.extra.get("etag")
            self.headers["If-Match"] = quoted if isinstance(quoted, str) and quoted.startswith(('"', "W/")) \
                else f'"{self.etag}"'

    def url(self, refresh: bool) -> str:  # pragma: no cover - per scheme
        raise NotImplementedError

    def getter(self, workers: int, cancelled: Callable[[], bool]) -> Getter:
        return _Prepared(self, RangeGetter(self.entry, self.policy, self.url, self.http, self.stats, workers,
                                           cancelled, headers=self.headers, check=self.check,
                                           skip_unranged=True, follow_redirects=True))

    def refused(self, status: int) -> None:
        """Storage said 401/403: by default, refuse for good (a plain URL cannot be refreshed)."""
        raise RefDenied(f"{self._what()}: the server refused access (HTTP {status})")

    def check(self, status: int, headers: Mapping[str, str], start: int, end: int) -> None:
        if status in (401, 403):
            self.refused(status)
            return
        if status in (404, 410):
            raise RefChanged(f"{self._what()} no longer exists (HTTP {status}): removed since it was logged")
        if status == 412:
            raise RefChanged(f"{self._what()} changed since it was logged: the server no longer has "
                             f"ETag {self.etag!r} (HTTP 412)")
        if status == 416:
            raise RefChanged(f"{self._what()} changed since it was logged: bytes {start}-{end - 1} are past "
                             "its end (HTTP 416)")
        if status not in (200, 206):
            return  # transient or unexpected: the getter's own rules
        got = headers.get("ETag")
        if self.etag is not None and not etag_matches(self.etag, got):
            raise RefChanged(f"{self._what()} changed since it was logged: ETag now {got!r}, "
                             f"the manifest has {self.etag!r}")
        size = total_size(status, headers)
        if size is not None and size != self.entry.size:
            raise RefChanged(f"{self._what()} changed since it was logged: its size is now {size}, "
                             f"the manifest says {self.entry.size}")


class HttpSource(_RemoteSource):
    """``http(s)://``: the reference URL itself, probed once with HEAD."""

    def url(self, refresh: bool) -> str:
        if refresh:
            self.refused(403)
        return self.ref

    def refused(self, status: int) -> None:
        host = urllib.parse.urlsplit(self.ref).hostname or ""
        if host.endswith(AZURE_SUFFIX):
            raise Unsupported(f"{self._what()}: Azure Blob Storage refused an anonymous read (HTTP {status}); "
                              "private Azure references are not supported by wandbfs, artifact.download() "
                              "reads them with azure-storage-blob and azure-identity installed")
        super().refused(status)

    def _prepare(self) -> None:
        p = self.policy
        headers = {k: v for k, v in self.headers.items() if k != "If-Match"}  # to see what it has now
        asked_total = 0.0   # what the store asked us to wait so far: within the read timeout
        for attempt in range(1, p.attempts + 1):
            asked: float | None = None
            try:
                r = self.http.request("HEAD", self.ref, headers=headers, redirect=True, retries=FOLLOW_REDIRECTS,
                                      timeout=urllib3.Timeout(connect=p.connect_timeout, read=p.read_timeout))
            except urllib3.exceptions.HTTPError as e:
                err = f"{type(e).__name__}: {e}"
            else:
                if r.status in (405, 501):
                    self.ranges = False   # no HEAD: one plain GET, checked as it arrives
                    return
                if r.status in (408, 429) or r.status >= 500:
                    err = f"HTTP {r.status}"
                    asked = retry_after_s(r.headers.get("Retry-After"))
                else:
                    self.check(r.status, r.headers, 0, self.entry.size)
                    if r.status != 200:
                        raise FetchError(f"{self._what()}: unexpected HTTP {r.status} to HEAD")
                    self.ranges = (r.headers.get("Accept-Ranges") or "").strip().lower() == "bytes"
                    if self.etag is None:
                        _warn_once(self.ref, "%s was logged without an ETag: only its size can be checked",
                                   self._what())
                    return
            if attempt == p.attempts:
                raise FetchError(f"{self._what()}: unreachable after {attempt} attempts: {err}")
            backoff = min(p.backoff_max, p.backoff_base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            delay = next_wait(asked, backoff, asked_total, p.read_timeout)   # the store said when: that
            if delay is None:
                raise FetchError(f"{self._what()}: asks to retry after {asked:g}s, {asked_total:g}s already "
                                 f"waited, past the read timeout ({p.read_timeout:g}s): {err}")
            if asked is not None:
                asked_total += delay
            log.warning("HEAD %s failed (%s); retry %d in %.2fs", self.ref, err, attempt, delay)
            time.sleep(delay)


class S3Source(_RemoteSource):
    """``s3://``: checked with HeadObject under the user's AWS credentials (boto3's usual
    chain), then read through presigned GET URLs by the same ranged-GET engine."""

    def __init__(self, entry: ManifestEntry, http: urllib3.PoolManager, policy: FetchPolicy,
                 stats: FetchStats, client: Callable[[str | None], Any],
                 bucket_region: Callable[[str], str | None]) -> None:
        super().__init__(entry, http, policy, stats)
        self.client = client
        self.bucket_region = bucket_region
        self.region: str | None = None   # the bucket's, when it differs from the client's (presigning)
        self.bucket, self.key = parse_s3(self.ref)
        version = entry.extra.get("versionID")
        self.version: str | None = str(version) if version not in (None, "", "null") else None

    def _params(self) -> dict[str, str]:
        params = {"Bucket": self.bucket, "Key": self.key}
        if self.version:
            params["VersionId"] = self.version
        return params

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        import botocore.exceptions as bx  # boto3's own dependency

        try:
            return fn(**kwargs)
        except (bx.NoCredentialsError, bx.PartialCredentialsError) as e:
            raise RefDenied(f"{self._what()}: no AWS credentials ({e}); wandbfs uses boto3's usual chain: "
                            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws, an instance role")
        except bx.ClientError as e:
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("404", "NoSuchKey", "NoSuchVersion", "NotFound") or status == 404:
                raise RefChanged(f"{self._what()}"
                                 f"{' version ' + self.version if self.version else ''} no longer exists "
                                 "(removed since it was logged)") from None
            if code in ("403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch") \
                    or status in (401, 403):
                raise RefDenied(f"{self._what()}: S3 refused access ({code or status}); check the AWS "
                                "credentials wandbfs runs with") from None
            raise FetchError(f"{self._what()}: S3 error {code or status}: {err.get('Message', e)}") from None
        except bx.BotoCoreError as e:
            raise FetchError(f"{self._what()}: {type(e).__name__}: {e}") from None

    def _prepare(self) -> None:
        s3 = self.client(None)
        head = self._call(s3.head_object, **self._params())
        # boto3's calls follow a bucket's region by themselves; a presigned URL must be signed for it.
        region = self.bucket_region(self.bucket)
        if region and region != s3.meta.region_name:
            self.region = region
        etag = str(head.get("ETag", ""))
        if self.etag is not None and not etag_matches(self.etag, etag):
            if self.version:
                raise RefChanged(f"{self._what()} version {self.version} has ETag {etag!r}, "
                                 f"the manifest has {self.etag!r}")
            found = self._find_version(s3)
            if found is None:
                raise RefChanged(f"{self._what()} changed since it was logged: ETag now {etag!r}, the manifest "
                                 f"has {self.etag!r}, and no older version of it matches")
            log.info("%s changed since it was logged; reading its version %s, which matches", self._what(), found)
            self.version = found
            head = self._call(s3.head_object, **self._params())
        size = head.get("ContentLength")
        if isinstance(size, int) and size != self.entry.size:
            raise RefChanged(f"{self._what()} changed since it was logged: its size is now {size}, "
                             f"the manifest says {self.entry.size}")

    def _find_version(self, s3: Any) -> str | None:
        """Like the SDK: an unversioned entry whose object was overwritten in a versioned
        bucket is read from the older version that still has the logged ETag."""
        import botocore.exceptions as bx

        try:
            pages = s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=self.key)
            for page in pages:
                for v in page.get("Versions", []):
                    if v.get("Key") == self.key and etag_matches(self.etag or "", v.get("ETag")):
                        return str(v["VersionId"])
        except (bx.ClientError, bx.BotoCoreError) as e:
            log.info("%s: cannot list versions (%s)", self._what(), e)
        return None

    def url(self, refresh: bool) -> str:
        s3 = self.client(self.region)
        return str(self._call(s3.generate_presigned_url, ClientMethod="get_object", Params=self._params(),
                              ExpiresIn=S3_URL_LIFETIME))

    def refused(self, status: int) -> None:
        return  # an expired presigned URL: the getter presigns a fresh one


# ---- the resolver ---------------------------------------------------------------------

_warned: set[str] = set()


def _warn_once(key: str, msg: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(msg, *args)


class RefResolver:
    """Makes sources for reference entries; holds the S3 client (created on first use)."""

    def __init__(self, http: urllib3.PoolManager, policy: FetchPolicy, stats: FetchStats) -> None:
        self.http = http
        self.policy = policy
        self.stats = stats
        self._s3: dict[str | None, Any] = {}
        self._s3_lock = threading.Lock()
        self._regions: dict[str, str | None] = {}
        self._have_boto3: bool | None = None

    def check(self, entry: ManifestEntry) -> None:
        """Raise ``Unsupported`` for an entry wandbfs cannot read."""
        if self._have_boto3 is None:
            self._have_boto3 = importlib.util.find_spec("boto3") is not None
        reason = unsupported_reason(entry, have_boto3=self._have_boto3)
        if reason is not None:
            raise Unsupported(reason)

    def source(self, entry: ManifestEntry) -> _Source:
        self.check(entry)
        assert entry.ref is not None
        scheme = _scheme(entry.ref)
        if scheme == "file":
            return LocalFileSource(entry)
        if scheme in ("http", "https"):
            return HttpSource(entry, self.http, self.policy, self.stats)
        if scheme == "s3":
            return S3Source(entry, self.http, self.policy, self.stats, self.s3, self.bucket_region)
        raise Unsupported(f"{entry.path} ({entry.ref}): not supported")  # pragma: no cover - check() said so

    def bucket_region(self, bucket: str) -> str | None:
        """The bucket's region (HeadBucket; real S3 names it even when it refuses the call),
        once per bucket; ``None`` when it cannot be told (then the client's region is used)."""
        if bucket in self._regions:
            return self._regions[bucket]
        import botocore.exceptions as bx

        region: str | None = None
        try:
            head = self.s3(None).head_bucket(Bucket=bucket)
            region = head.get("BucketRegion") or head.get("ResponseMetadata", {}).get(
                "HTTPHeaders", {}).get("x-amz-bucket-region")
        except bx.ClientError as e:
            region = e.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
        except bx.BotoCoreError as e:
            log.debug("region of bucket %s: %s", bucket, e)
        with self._s3_lock:
            self._regions[bucket] = region
        return region

    def s3(self, region: str | None = None) -> Any:
        """A boto3 S3 client from the usual credential chain (one per region asked for; None:
        AWS_REGION or boto3's default). Endpoint: boto3 itself honours AWS_ENDPOINT_URL and
        AWS_ENDPOINT_URL_S3; the SDK's AWS_S3_ENDPOINT_URL wins if set."""
        with self._s3_lock:
            client = self._s3.get(region)
            if client is None:
                import boto3
                from botocore.config import Config

                p = self.policy
                config = Config(signature_version="s3v4", connect_timeout=p.connect_timeout,
                                read_timeout=p.read_timeout, retries={"max_attempts": 3, "mode": "standard"})
                client = self._s3[region] = boto3.session.Session().client(
                    "s3", endpoint_url=os.environ.get("AWS_S3_ENDPOINT_URL") or None,
                    region_name=region or os.environ.get("AWS_REGION") or None, config=config)
            return client
