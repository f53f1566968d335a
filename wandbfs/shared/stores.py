"""Where the shared cache tier keeps its objects: an S3-compatible bucket or a directory.

Both stores offer the few operations the tier needs, blocking and thread-safe, with keys
that are ``/``-separated paths under the tier's root (``obj/md5/ab/cdef…``):

* ``read`` (a range or all; ``None`` when absent), ``size``, ``names`` (what is directly in
  a folder);
* ``write`` / ``write_file`` (from an open local file: the caller holds it, so eviction
  cannot take it away half way): atomic replace (S3 PUT and multipart upload are atomic; a
  directory writes a temp file beside the key and renames it, so no reader ever sees half);
* ``create``: atomic create-if-absent, the one primitive the lease needs (S3
  ``If-None-Match: *``; a directory ``link(2)`` of a temp file, the classic NFS lock);
* ``delete``; ``compose`` (S3 only: the final object built server-side from the first
  bytes of each published part, ``UploadPartCopy`` with a source range, no byte sent again).

Every failure to reach or use the store is ``TierError`` (the tier counts it as the store
being down and falls back to W&B); an absent key is not a failure. ``BadData`` (a read whose
bytes failed the store's own checksum) is not an outage: that one read is worth nothing.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlparse

__all__ = ["BadData", "Bounded", "DirStore", "S3Store", "TierError", "TierStore", "open_store"]


class TierError(Exception):
    """The shared store could not be reached or refused the operation (the message says which)."""


class BadData(TierError):
    """The store answered, but the bytes failed its own checksum (boto3's response check)."""


class TierStore(Protocol):
    url: str

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes | None: ...
    def size(self, key: str) -> int | None: ...
    def names(self, folder: str) -> list[str]: ...
    def write(self, key: str, data: bytes) -> None: ...
    def write_file(self, key: str, src: BinaryIO, size: int) -> None: ...
    def create(self, key: str, data: bytes) -> bool: ...
    def delete(self, key: str) -> None: ...
    def compose(self, key: str, parts: list[tuple[str, int]]) -> bool: ...


def open_store(url: str, *, timeout: float = 10.0) -> TierStore:
    """``s3://bucket/prefix`` or an absolute directory; ``ValueError`` (one line) for anything else."""
    if url.startswith("s3://"):
        parsed = urlparse(url)
        if not parsed.netloc:
            raise ValueError(f"--shared-cache {url}: no bucket (expected s3://bucket/prefix)")
        return S3Store(parsed.netloc, parsed.path.strip("/"), timeout=timeout)
    if "://" in url:
        raise ValueError(f"--shared-cache {url}: only s3:// URLs and absolute directories are supported")
    if not os.path.isabs(url):
        raise ValueError(f"--shared-cache {url}: a directory must be an absolute path")
    return Bounded(DirStore(Path(url)), timeout)


class Bounded:
    """Every call of a store on a thread of its own, given up after ``timeout`` seconds.

    A directory on a hard-mounted NFS whose server went away blocks in the kernel for as
    long as it is away; that thread stays blocked (a daemon thread: it never holds up the
    daemon's exit), the caller gets ``TierError`` and the tier counts as down. S3 needs none
    of this: boto3's own timeouts bound it."""

    def __init__(self, inner: TierStore, timeout: float) -> None:
        self.inner = inner
        self.url = inner.url
        self.timeout = timeout

    SLOWEST = 16 << 20
    """Bytes a second an object copy may be as slow as before it counts as hung."""

    def _run(self, name: str, *args: Any, timeout: float | None = None) -> Any:
        limit = self.timeout if timeout is None else timeout
        out: list[Any] = []
        err: list[BaseException] = []

        def call() -> None:
            try:
                out.append(getattr(self.inner, name)(*args))
            except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
                err.append(e)
        t = threading.Thread(target=call, name=f"wandbfs-tier-{name}", daemon=True)
        t.start()
        t.join(limit)
        if t.is_alive():
            raise TierError(f"{self.url}: {name} did not answer within {limit:g}s")
        if err:
            raise err[0]
        return out[0]

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        return self._run("read", key, start, end)

    def size(self, key: str) -> int | None:
        return self._run("size", key)

    def names(self, folder: str) -> list[str]:
        return self._run("names", folder)

    def write(self, key: str, data: bytes) -> None:
        self._run("write", key, data)

    def write_file(self, key: str, src: BinaryIO, size: int) -> None:
        self._run("write_file", key, src, size, timeout=self.timeout + size / self.SLOWEST)

    def create(self, key: str, data: bytes) -> bool:
        return self._run("create", key, data)

    def delete(self, key: str) -> None:
        self._run("delete", key)

    def compose(self, key: str, parts: list[tuple[str, int]]) -> bool:
        return self._run("compose", key, parts)


def _temp_name(name: str) -> str:
    """A temp name no other host or process picks (pids repeat across hosts and namespaces)."""
    return f".{name}.tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class DirStore:
    """A directory on a filesystem every host mounts (NFS, Lustre, GPFS, CephFS).

    Relies only on what those give across hosts: ``rename`` and ``link`` are atomic and
    visible to the others once done (close-to-open consistency), ``link`` fails with
    ``EEXIST`` for every host but one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        try:
            with open(self._path(key), "rb", buffering=0) as f:
                if end is None:
                    f.seek(start)
                    return f.read()
                out = bytearray()
                while start + len(out) < end:
                    chunk = os.pread(f.fileno(), end - start - len(out), start + len(out))
                    if not chunk:
                        break
                    out += chunk
                return bytes(out)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise TierError(f"{self.url}: reading {key}: {e.strerror or e}") from e

    def size(self, key: str) -> int | None:
        try:
            return os.stat(self._path(key)).st_size
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise TierError(f"{self.url}: {key}: {e.strerror or e}") from e

    def names(self, folder: str) -> list[str]:
        try:
            return [n for n in os.listdir(self._path(folder)) if not n.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:
            raise TierError(f"{self.url}: listing {folder}: {e.strerror or e}") from e

    def _temp(self, key: str, data: bytes | None, src: BinaryIO | None = None, size: int = 0) -> Path:
        """A complete temp file beside ``key``; removed again if anything fails. Only objects
        (``src``) are fsynced: a lease or a part that a crash of the file server cut short is
        found out (unreadable lease, a part failing its md5) and costs nothing but a refetch."""
        path = self._path(key)
        tmp = path.parent / _temp_name(path.name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            raise TierError(f"{self.url}: writing {key}: {e.strerror or e}") from e
        try:
            if src is not None:
                _copy(src.fileno(), fd, size)
            else:
                view = memoryview(data or b"")
                while view:
                    view = view[os.write(fd, view):]
            if src is not None:
                os.fsync(fd)
        except OSError as e:
            _unlink(tmp)
            raise TierError(f"{self.url}: writing {key}: {e.strerror or e}") from e
        except BaseException:
            _unlink(tmp)
            raise
        finally:
            os.close(fd)
        return tmp

    def _commit(self, tmp: Path, key: str) -> None:
        try:
            os.replace(tmp, self._path(key))
        except OSError as e:
            _unlink(tmp)
            raise TierError(f"{self.url}: writing {key}: {e.strerror or e}") from e

    def write(self, key: str, data: bytes) -> None:
        self._commit(self._temp(key, data), key)

    def write_file(self, key: str, src: BinaryIO, size: int) -> None:
        self._commit(self._temp(key, None, src, size), key)

    def create(self, key: str, data: bytes) -> bool:
        tmp = self._temp(key, data)
        try:
            os.link(tmp, self._path(key))
            return True
        except FileExistsError:
            return False
        except OSError as e:
            raise TierError(f"{self.url}: creating {key}: {e.strerror or e}") from e
        finally:
            _unlink(tmp)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as e:
            raise TierError(f"{self.url}: removing {key}: {e.strerror or e}") from e

    def compose(self, key: str, parts: list[tuple[str, int]]) -> bool:
        return False   # the caller copies its verified local file instead


def _copy(src: int, dst: int, size: int) -> None:
    """The first ``size`` bytes of ``src`` into ``dst`` (in the kernel where the filesystems
    allow); ``OSError`` if it has fewer."""
    left, off = size, 0
    while left:
        try:
            n = os.copy_file_range(src, dst, left, off, off)
        except OSError:
            n = 0
        if n <= 0:   # no copy_file_range between these filesystems: a plain copy
            chunk = os.pread(src, min(left, 8 << 20), off)
            if not chunk:
                raise OSError(f"the local file ended at byte {off}")
            n = os.pwrite(dst, chunk, off)
        off, left = off + n, left - n


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class S3Store:
    """A bucket and prefix on any S3-compatible API (AWS S3, MinIO, Ceph RGW, ...).

    boto3's usual credential chain and ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``; every
    call has connect and read timeouts and at most 2 attempts, so an unreachable bucket is
    known within seconds. The lease needs conditional writes (``If-None-Match: *``), which
    AWS S3, MinIO and Ceph RGW (Squid) implement."""

    MULTIPART = 8 << 20

    def __init__(self, bucket: str, prefix: str, *, timeout: float = 10.0) -> None:
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
        except ImportError as e:
            raise ValueError("--shared-cache s3://...: boto3 is not installed "
                             "(pip install 'wandbfs[s3]')") from e
        self.bucket = bucket
        self.prefix = prefix + "/" if prefix else ""
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        config = Config(connect_timeout=min(timeout, 5.0), read_timeout=timeout,
                        retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=32)
        self._client: Any = boto3.session.Session().client("s3", config=config)
        self._transfer = TransferConfig(multipart_threshold=self.MULTIPART, multipart_chunksize=self.MULTIPART,
                                        max_concurrency=4, use_threads=True)
        from botocore.exceptions import BotoCoreError, ClientError, FlexibleChecksumError

        self._errors = (BotoCoreError, ClientError, OSError)
        self._bad_data = FlexibleChecksumError

    def _key(self, key: str) -> str:
        return self.prefix + key

    @staticmethod
    def _code(e: Exception) -> str:
        return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))

    def _fail(self, what: str, key: str, e: Exception) -> TierError:
        return TierError(f"{self.url}: {what} {key}: {e}")

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if start or end is not None:
            if end is not None and end <= start:
                return b""
            args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            body = self._client.get_object(**args)["Body"]
            try:
                return body.read()
            finally:
                body.close()
        except self._errors as e:
            if self._code(e) in ("NoSuchKey", "404", "InvalidRange"):
                return None if self._code(e) != "InvalidRange" else b""
            if isinstance(e, self._bad_data):
                raise BadData(f"{self.url}: reading {key}: {e}") from e
            raise self._fail("reading", key, e) from e

    def size(self, key: str) -> int | None:
        try:
            return int(self._client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except self._errors as e:
            if self._code(e) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._fail("looking up", key, e) from e

    def names(self, folder: str) -> list[str]:
        prefix = self._key(folder.rstrip("/") + "/")
        out: list[str] = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                out += [o["Key"][len(prefix):] for o in page.get("Contents", [])]
        except self._errors as e:
            raise self._fail("listing", folder, e) from e
        return out

    def write(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except self._errors as e:
            raise self._fail("writing", key, e) from e

    def write_file(self, key: str, src: BinaryIO, size: int) -> None:
        try:
            self._client.upload_fileobj(src, self.bucket, self._key(key), Config=self._transfer)
            if self.size(key) != size:   # the local file changed under the upload
                self.delete(key)
                raise TierError(f"{self.url}: uploading {key}: the local file was not {size} bytes")
        except self._errors as e:
            raise self._fail("uploading", key, e) from e
        except Exception as e:  # boto3.exceptions.S3UploadFailedError wraps the ClientError
            raise self._fail("uploading", key, e) from e

    def create(self, key: str, data: bytes) -> bool:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            return True
        except self._errors as e:
            if self._code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise self._fail("creating", key, e) from e

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as e:
            if self._code(e) in ("NoSuchKey", "404"):
                return
            raise self._fail("removing", key, e) from e

    def compose(self, key: str, parts: list[tuple[str, int]]) -> bool:
        """Build ``key`` on the server from the first ``n`` bytes of each ``(part, n)`` (each at
        least 5 MiB but the last)."""
        target = self._key(key)
        try:
            upload = self._client.create_multipart_upload(Bucket=self.bucket, Key=target)["UploadId"]
        except self._errors as e:
            raise self._fail("composing", key, e) from e
        try:
            done = []
            for n, (part, length) in enumerate(parts, 1):
                r = self._client.upload_part_copy(Bucket=self.bucket, Key=target, UploadId=upload, PartNumber=n,
                                                  CopySource={"Bucket": self.bucket, "Key": self._key(part)},
                                                  CopySourceRange=f"bytes=0-{length - 1}")
                done.append({"PartNumber": n, "ETag": r["CopyPartResult"]["ETag"]})
            self._client.complete_multipart_upload(Bucket=self.bucket, Key=target, UploadId=upload,
                                                   MultipartUpload={"Parts": done})
            return True
        except self._errors as e:
            try:
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=target, UploadId=upload)
            except self._errors:
                pass
            if self._code(e) in ("NoSuchKey", "404", "EntityTooSmall", "NotImplemented", "InvalidRequest"):
                return False
            raise self._fail("composing", key, e) from e

