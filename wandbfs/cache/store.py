"""Content-addressed object cache sharing the wandb SDK's on-disk layout.

Why share the SDK's layout: users of the mount very often also run
``artifact.download()`` on the same machine.  Using the SDK's exact object
paths means whatever either side fetched is a cache hit for the other, and
``wandb artifact cache cleanup`` manages our objects too.

Layout (wandb 0.31, ``wandb/sdk/artifacts/artifact_file_cache.py``), with
``<root>`` = the W&B cache dir (see :func:`default_cache_root`)::

    <root>/artifacts/obj/md5/<hex[:2]>/<hex[2:]>     md5 entries
    <root>/artifacts/obj/xxh128/<hex[:2]>/<hex[2:]>  xxh128 entries
    <root>/artifacts/obj/etag/<h[:2]>/<h[2:]>        s3/gs/http/azure references,
        h = sha256(sha256(ref URL) + sha256(ETag)).hexdigest()
    <root>/artifacts/tmp/                            in-flight downloads
    <root>/artifacts/locks/<kind>/<hex>.lock         ours only (SDK ignores it)

``hex`` is the manifest digest base64-decoded to hex - for xxh128 too.  An
object is a hit when it is a regular file whose size equals the manifest
size; like the SDK we do not re-hash on lookup (that is what
:meth:`ObjectCache.verify_file` is for).  Objects enter the cache only via
``os.replace`` from ``tmp/`` (same filesystem, so the rename is atomic): a
reader - us or the SDK - sees either no object or a complete one.

Things the SDK does to this directory that callers must tolerate:

* ``ArtifactFileCache._reserve_space`` evicts objects (LRU by atime) when a
  download would not fit on the disk, and ``cleanup(remove_temp=True)``
  deletes *every* temp file.  So an object path may vanish between
  :meth:`ObjectCache.lookup` and ``open`` (open it once and keep the fd), and
  a temp file may vanish under an in-flight download (then
  :meth:`ObjectCache.commit` raises ``FileNotFoundError``; just retry).
* The SDK writes no lock; see :meth:`ObjectCache.object_lock`.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import xxhash

from wandbfs.model.manifest import Alg, ManifestEntry
from wandbfs.procfs import process_alive

__all__ = [
    "CACHE_DIR_ENV",
    "TEMP_PREFIX",
    "DigestMismatch",
    "Hasher",
    "ObjectCache",
    "ObjectKey",
    "default_cache_root",
    "object_key",
]

CACHE_DIR_ENV: Final = "WANDB_CACHE_DIR"
TEMP_PREFIX: Final = "wandbfs-"
"""Our temp-file prefix.  The SDK's temps are ``tmpXXXXXXXX`` (tempfile's
default), so :meth:`ObjectCache.cleanup_temps` can tell ours apart."""

log = logging.getLogger(__name__)

_DIR_MODE: Final = 0o700
UNWRITABLE: Final = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
"""What writing into a read-only (or someone else's) cache directory fails with."""
_HASH_CHUNK: Final = 1024 * 1024

ObjectKind = Literal["md5", "xxh128", "etag"]


def _user_cache_dir() -> Path:
    """``platformdirs.user_cache_dir("wandb")``, as the SDK uses.

    platformdirs is a wandb dependency; the fallback reproduces its Linux
    behaviour (``$XDG_CACHE_HOME`` if non-blank, else ``~/.cache``).
    """
    try:
        import platformdirs
    except ImportError:  # pragma: no cover - platformdirs ships with wandb
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = xdg if xdg.strip() else os.path.expanduser("~/.cache")
        return Path(base) / "wandb"
    return Path(platformdirs.user_cache_dir("wandb"))


def default_cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """The W&B cache directory, resolved the way the SDK resolves it.

    Mirrors ``wandb.env.get_cache_dir``: ``$WANDB_CACHE_DIR`` if set, else
    ``platformdirs.user_cache_dir("wandb")`` (``$XDG_CACHE_HOME/wandb`` or
    ``~/.cache/wandb`` on Linux, ``~/Library/Caches/wandb`` on macOS).
    Objects live under ``<this>/artifacts``.

    Deliberate differences, both because a mount daemon may change its cwd:

    * the result is made absolute (the SDK re-resolves a relative value
      against the current cwd on every use);
    * an *empty* ``WANDB_CACHE_DIR`` counts as unset (the SDK turns it into
      ``Path("")``, i.e. the cwd).

    Like the SDK, ``~`` in ``WANDB_CACHE_DIR`` is *not* expanded.
    """
    env = os.environ if environ is None else environ
    value = env.get(CACHE_DIR_ENV)
    root = Path(value) if value else _user_cache_dir()
    return root.absolute()


@dataclass(frozen=True)
class ObjectKey:
    """Where an entry's bytes live in the cache: ``obj/<kind>/<hex[:2]>/<hex[2:]>``."""

    kind: ObjectKind
    hex: str


def object_key(entry: ManifestEntry) -> ObjectKey:
    """Compute the SDK's cache key for a manifest entry.

    Stored files and ``file://`` references are keyed by content hash.
    Other references (s3, gs, http, azure) have only an ETag, so the SDK
    keys them by ``sha256(sha256(url) + sha256(etag))`` under ``etag/`` -
    reproduced here so reference objects are shared too.
    """
    hex_digest = entry.hex_digest
    if hex_digest is not None:
        return ObjectKey(entry.alg, hex_digest)
    if entry.ref is None:  # pragma: no cover - parse_manifest rejects these
        raise ValueError(f"entry {entry.path!r} has no usable digest")
    h = hashlib.sha256(
        hashlib.sha256(entry.ref.encode("utf-8")).digest()
        + hashlib.sha256(entry.digest.encode("utf-8")).digest()
    ).hexdigest()
    return ObjectKey("etag", h)


class DigestMismatch(Exception):
    """Downloaded bytes do not match the manifest; the temp file was deleted.

    Carries both sides so the caller can log something actionable (a stale
    signed URL serving another object looks different from truncation).
    """

    def __init__(
        self,
        path: str,
        expected: str,
        actual: str,
        expected_size: int | None = None,
        actual_size: int | None = None,
    ) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        self.expected_size = expected_size
        self.actual_size = actual_size
        msg = f"digest mismatch for {path!r}: expected {expected}, got {actual}"
        if expected_size != actual_size:
            msg += f" (size expected {expected_size}, got {actual_size})"
        super().__init__(msg)


class Hasher:
    """Incremental hash + byte count, so a download can verify while it writes.

    Feeding the bytes through a ``Hasher`` as they stream in and passing it
    to :meth:`ObjectCache.commit` avoids reading a multi-GB file a second
    time just to check it.
    """

    def __init__(self, alg: Alg = "md5") -> None:
        self.alg: Alg = alg
        self._h: Any
        if alg == "md5":
            self._h = hashlib.md5(usedforsecurity=False)
        elif alg == "xxh128":
            self._h = xxhash.xxh128()
        else:
            raise ValueError(f"unknown digest algorithm {alg!r}")
        self.size = 0

    @classmethod
    def for_entry(cls, entry: ManifestEntry) -> Hasher:
        """A hasher using the algorithm the entry's digest was made with."""
        return cls(entry.alg)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add the next chunk of the file."""
        self._h.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        """Hex of the digest so far (what the cache paths use)."""
        return str(self._h.hexdigest())

    def b64digest(self) -> str:
        """Base64 of the digest so far (what manifests store, for both algs)."""
        return base64.b64encode(self._h.digest()).decode("ascii")

    def matches(self, entry: ManifestEntry) -> bool:
        """Do the bytes seen so far have the entry's size and digest?

        For references without a content digest (ETag-keyed) only the size
        can be checked.
        """
        if self.size != entry.size:
            return False
        expected = entry.hex_digest
        if expected is None:
            return True
        return self.alg == entry.alg and self.hexdigest() == expected


def _hash_file(path: Path, alg: Alg) -> Hasher:
    h = Hasher(alg)
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h


def _current_umask() -> int:
    """Read the umask without changing it (``os.umask`` is racy in threads).

    The SDK spawns a Python subprocess for this; ``/proc/self/status`` is
    cheaper on Linux >= 4.7, and 022 is the common default elsewhere.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _mkdirs(path: Path) -> None:
    """Create ``path`` and missing parents with mode 0700.

    ``os.makedirs(mode=...)`` only applies the mode to the leaf (Python >=
    3.7), and cached artifacts may be private, so every level we create is
    owner-only.  Existing directories (e.g. made by the SDK) are untouched.
    """
    missing: list[Path] = []
    p = path
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, _DIR_MODE)
        except FileExistsError:
            if not d.is_dir():
                raise


class ObjectCache:
    """Content-addressed object store in the SDK's layout (see module doc).

    Typical download flow (blocking calls: run them in a worker thread)::

        with cache.object_lock(entry):
            if (hit := cache.lookup(entry)) is not None:
                return hit
            fd, tmp = cache.new_temp()
            hasher = Hasher.for_entry(entry)
            with os.fdopen(fd, "wb") as f:
                for chunk in stream:
                    hasher.update(chunk)
                    f.write(chunk)
            return cache.commit(tmp, entry, hasher=hasher)
    """

    def __init__(
        self,
        root: Path | str,
        *,
        object_mode: int | None = None,
        fsync: bool = True,
    ) -> None:
        """Open (lazily create) the cache under ``root`` (the W&B cache dir).

        ``root`` is the directory ``$WANDB_CACHE_DIR`` names, *not* its
        ``artifacts`` subdirectory (which is what the SDK's
        ``ArtifactFileCache`` takes).

        ``object_mode`` defaults to ``0o666 & ~umask``, the SDK's choice:
        ``artifact.download()`` copies the cached object's mode onto the
        user's file, so 0600 objects would surprise SDK users.  Privacy comes
        from the 0700 directories instead.

        ``fsync`` flushes each object before the rename; the SDK doesn't,
        but a crash could otherwise leave a right-sized file of zeros, which
        both of us would treat as a hit forever.
        """
        self.root = Path(root).absolute()
        self.artifacts_dir = self.root / "artifacts"
        self.obj_dir = self.artifacts_dir / "obj"
        self.tmp_dir = self.artifacts_dir / "tmp"
        self.locks_dir = self.artifacts_dir / "locks"
        self.object_mode = (0o666 & ~_current_umask()) if object_mode is None else object_mode
        self.fsync = fsync
        self._paths: dict[tuple[str, str, str | None], Path] = {}   # path_for's answers (see there)
        self.read_only = False
        """Set once a write into the cache failed with EROFS/EACCES (see :meth:`note_unwritable`)."""

    def note_unwritable(self, error: OSError) -> bool:
        """Is ``error`` the cache refusing writes? If the whole cache is (its filesystem is
        read-only, or its directories not writable), remember it for good and say so once;
        one unwritable file (another user's lock file on a shared cache) only means that
        object is streamed.

        A pre-filled cache bind-mounted read-only (a container) still serves its objects:
        lookups, reads and shared flocks need no write access; only downloads, lock files,
        temp cleanup and eviction do, and those are skipped from then on.
        """
        if error.errno not in UNWRITABLE:
            return False
        if not self.read_only and self._whole_cache_unwritable(error):
            self.read_only = True
            log.warning("cache %s is read-only (%s): cached objects are served from it, "
                        "the others are streamed without being cached", self.root, error.strerror)
        return True

    def _whole_cache_unwritable(self, error: OSError) -> bool:
        if error.errno == errno.EROFS:
            return True
        try:
            if os.statvfs(self.root).f_flag & os.ST_RDONLY:
                return True
            d = self.artifacts_dir if self.artifacts_dir.exists() else self.root
            return not os.access(d, os.W_OK)
        except OSError:
            return True

    @classmethod
    def default(cls) -> ObjectCache:
        """The cache the SDK would use in this environment."""
        return cls(default_cache_root())

    # --- paths and lookup -------------------------------------------------

    PATHS_KEPT = 4096

    def path_for(self, entry: ManifestEntry) -> Path:
        """Path the entry's object has (or would have) in the cache.

        Kept for the last ``PATHS_KEPT`` entries asked about: an open asks several times
        (the reader, the fetcher, the hit check), and building a ``Path`` from the digest
        was a fifth of the daemon's time when a new mount opens many small cached files."""
        k = (entry.digest, entry.alg, entry.ref)   # all object_key reads
        path = self._paths.get(k)
        if path is None:
            if len(self._paths) >= self.PATHS_KEPT:
                self._paths.clear()
            key = object_key(entry)
            path = self._paths[k] = self.obj_dir / key.kind / key.hex[:2] / key.hex[2:]
        return path

    def lookup(self, entry: ManifestEntry) -> Path | None:
        """Return the object's path on a hit, else ``None``.

        Hit = regular file (symlinks followed) whose size equals the
        manifest size: the SDK's rule, so we agree on what is cached.  The
        content is not re-hashed here.
        """
        path = self.path_for(entry)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISREG(st.st_mode) and st.st_size == entry.size:
            return path
        return None

    # --- writing ----------------------------------------------------------

    def new_temp(self) -> tuple[int, Path]:
        """Create an empty temp file (mode 0600) in ``artifacts/tmp``.

        Returns an open, writable file descriptor (the caller closes it) and
        the path to pass to :meth:`commit` or :meth:`discard`.  The temp dir
        is on the same filesystem as ``obj/``, which is what makes the final
        ``os.replace`` atomic.
        """
        _mkdirs(self.tmp_dir)
        # The pid in the name lets a later mount remove what a killed daemon left behind.
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix=f"{TEMP_PREFIX}{os.getpid()}-")
        return fd, Path(name)

    def cleanup_orphan_temps(self) -> int:
        """Delete our temp files whose writing process is gone (a daemon killed mid-download)."""
        removed = 0
        try:
            names = os.listdir(self.tmp_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            pid_part = name[len(TEMP_PREFIX):].split("-", 1)[0]
            if not name.startswith(TEMP_PREFIX) or not pid_part.isdigit():
                continue
            if not process_alive(int(pid_part)):
                try:
                    os.unlink(os.path.join(self.tmp_dir, name))
                    removed += 1
                except FileNotFoundError:
                    continue
                except OSError as e:
                    if self.note_unwritable(e):  # a read-only cache keeps its leftovers
                        break
                    raise
        return removed

    def commit(
        self,
        tmp_path: Path | str,
        entry: ManifestEntry,
        *,
        verify: bool = True,
        hasher: Hasher | None = None,
    ) -> Path:
        """Verify ``tmp_path`` against ``entry`` and move it into the cache.

        The size is always checked (a wrong-sized object would never be a
        hit and would just waste space).  With ``verify`` the digest is
        checked too, from ``hasher`` if given (bytes already hashed while
        streaming) or by reading the file.  References without a content
        digest can only be size-checked.

        On any failure the temp file is deleted before the exception
        propagates, so nothing is left behind in ``tmp/``.  The object
        becomes visible only through one ``os.replace``; replacing an object
        that another process just committed is harmless (same bytes).

        Raises:
            DigestMismatch: size or digest differ from the manifest.
            FileNotFoundError: the temp file vanished (e.g. the SDK's
                ``cleanup(remove_temp=True)`` ran); retry the download.
        """
        tmp_path = Path(tmp_path)
        try:
            actual_size = tmp_path.stat().st_size
            if verify:
                h = hasher if hasher is not None else _hash_file(tmp_path, entry.alg)
                if not h.matches(entry) or actual_size != entry.size:
                    expected = entry.hex_digest or f"(size {entry.size})"
                    actual = h.hexdigest() if entry.hex_digest else f"(size {actual_size})"
                    raise DigestMismatch(entry.path, expected, actual, entry.size, actual_size)
            elif actual_size != entry.size:
                raise DigestMismatch(
                    entry.path,
                    f"(size {entry.size})",
                    f"(size {actual_size})",
                    entry.size,
                    actual_size,
                )
            if self.fsync:
                fd = os.open(tmp_path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.chmod(tmp_path, self.object_mode)
            dest = self.path_for(entry)
            _mkdirs(dest.parent)
            os.replace(tmp_path, dest)
            return dest
        except BaseException:
            self.discard(tmp_path)
            raise

    def discard(self, tmp_path: Path | str) -> None:
        """Delete a temp file (abandoned download); missing is fine."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)

    def verify_file(self, path: Path | str, entry: ManifestEntry) -> bool:
        """Full check of a file against the entry: size, then content hash.

        For an fsck-style pass or after a suspicious read; :meth:`lookup`
        only checks the size.
        """
        try:
            if os.stat(path).st_size != entry.size:
                return False
            return _hash_file(Path(path), entry.alg).matches(entry)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False

    # --- readers and eviction ----------------------------------------------
    # Every descriptor wandbfs holds on an object carries a shared flock; eviction takes the
    # exclusive one without blocking, so an object that is open - in this mount, another
    # mount, or a download still being renamed in - is never removed under its reader.

    def open_shared(self, path: Path | str) -> int | None:
        """Open an object for reading, holding it against eviction; ``None`` if it was evicted.

        The flock is taken after the open, so the object may have been unlinked in between:
        a zero link count says it is gone and the caller fetches it again.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            st = os.fstat(fd)
            if st.st_nlink == 0:
                os.close(fd)
                return None
        except BaseException:
            os.close(fd)
            raise
        self._touch(fd, st)
        return fd

    @staticmethod
    def hold(fd: int) -> None:
        """Mark a descriptor (e.g. a download's temp file, soon the object) as in use."""
        fcntl.flock(fd, fcntl.LOCK_SH)

    TOUCH_EVERY_S = 60.0

    def _touch(self, fd: int, st: os.stat_result) -> None:
        """Record a use for LRU eviction: set atime to now, keep mtime (which the verified
        mark and the SDK look at). Needed because relatime/noatime mounts rarely update
        atime on their own; skipped when atime is already recent, so re-opening a hot file
        does not write its inode each time."""
        now = time.time_ns()
        if now - st.st_atime_ns < self.TOUCH_EVERY_S * 1e9:
            return
        try:
            os.utime(fd, ns=(now, st.st_mtime_ns))
        except OSError:
            pass

    def try_evict(self, path: Path | str) -> bool:
        """Remove one object unless someone holds it open; ``True`` if it was removed."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            st = os.fstat(fd)
            try:
                same = os.stat(path).st_ino == st.st_ino  # not replaced since we opened it
            except FileNotFoundError:
                return False
            if not same:
                return False
            os.unlink(path)
            return True
        finally:
            os.close(fd)

    @staticmethod
    def _regular_files(directory: Path | str) -> Iterator[tuple[Path, os.stat_result]]:
        """Regular files directly in ``directory``; entries vanishing meanwhile are skipped."""
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for de in entries:
            try:
                st = de.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield Path(de.path), st

    def iter_objects(self) -> Iterator[tuple[Path, os.stat_result]]:
        """Every object file in the cache, with its stat (for sizes and LRU order)."""
        for kind in ("md5", "xxh128", "etag"):
            try:
                prefixes = [de.path for de in os.scandir(self.obj_dir / kind) if de.is_dir(follow_symlinks=False)]
            except FileNotFoundError:
                continue
            for pre in prefixes:
                yield from self._regular_files(pre)

    def iter_temps(self) -> Iterator[tuple[Path, os.stat_result]]:
        """Temp files in ``tmp/`` (ours and the SDK's)."""
        yield from self._regular_files(self.tmp_dir)

    # --- verified marks ----------------------------------------------------

    VERIFIED_XATTR = "user.wandbfs.verified"

    def _stamp(self, st: os.stat_result, entry: ManifestEntry) -> bytes:
        return f"{entry.alg}:{entry.hex_digest}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}".encode()

    def mark_verified(self, path: Path | str, entry: ManifestEntry) -> None:
        """Remember on the object itself that its bytes matched the digest.

        The SDK treats any right-sized file as a hit and never re-hashes, so wandbfs checks
        objects it did not verify itself. The mark (an xattr naming the digest, size, mtime
        and inode) lets a later mount skip that full read; an object rewritten by anyone
        else gets a new inode or mtime and no longer matches. Filesystems without user
        xattrs simply never skip.
        """
        try:
            os.setxattr(path, self.VERIFIED_XATTR, self._stamp(os.stat(path), entry))
        except OSError:
            pass

    def is_marked_verified(self, path: Path | str, entry: ManifestEntry) -> bool:
        try:
            return os.getxattr(path, self.VERIFIED_XATTR) == self._stamp(os.stat(path), entry)
        except OSError:
            return False

    # --- locking and housekeeping ----------------------------------------

    def lock_path(self, entry: ManifestEntry) -> Path:
        """Lock file guarding the download of one object."""
        key = object_key(entry)
        return self.locks_dir / key.kind / f"{key.hex}.lock"

    @contextlib.contextmanager
    def object_lock(self, entry: ManifestEntry, *, blocking: bool = True,
                    timeout: float | None = None) -> Iterator[Path]:
        """Hold an exclusive cross-process lock for one object.

        So that two mounts (or two readers in one mount) sharing a cache
        download a given object once: take the lock, re-check
        :meth:`lookup`, and only download on a miss.  ``fcntl.flock`` locks
        belong to the open file description, so this also excludes other
        threads of the same process, and the kernel drops the lock if the
        holder dies.

        The SDK does not take this lock.  That's still safe, only possibly
        wasteful: both sides write private temp files and publish with an
        atomic ``os.replace`` of identical content, so a reader never sees a
        partial object whichever side wins.

        Lock files are never deleted: unlinking one while another process
        waits on it would let a third process lock a fresh inode at the same
        path, and then two holders would both believe they own the object.

        Blocks the calling thread (use a worker thread under trio).  With
        ``blocking=False``, raises ``BlockingIOError`` if the lock is held; with
        ``timeout``, ``TimeoutError`` once it has been held that long by someone else (a
        stopped or hung holder must not hang our readers).
        """
        path = self.lock_path(entry)
        _mkdirs(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if timeout is not None and blocking:
                _flock_within(fd, timeout, path)
            else:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            try:
                yield path
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def cleanup_temps(
        self,
        max_age_s: float,
        *,
        include_foreign: bool = False,
        now: float | None = None,
    ) -> int:
        """Delete temp files not modified for ``max_age_s`` seconds.

        Leftovers of a crash mid-download would otherwise sit in ``tmp/``
        forever (and make the SDK warn about them).  By age, not by "is
        anyone writing it", because a live download keeps its mtime fresh.
        Only our own ``wandbfs-*`` temps are touched unless
        ``include_foreign``, which also removes the SDK's stale temps.

        Returns the number of files removed.
        """
        cutoff = (time.time() if now is None else now) - max_age_s
        removed = 0
        try:
            it = os.scandir(self.tmp_dir)
        except FileNotFoundError:
            return 0
        with it:
            for de in it:
                if not (include_foreign or de.name.startswith(TEMP_PREFIX)):
                    continue
                try:
                    st = de.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                        os.unlink(de.path)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed


def _flock_within(fd: int, timeout: float, path: Path) -> None:
    """An exclusive flock, polled, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{path} has been locked by another process for {timeout:.0f}s") from None
            time.sleep(delay)
            delay = min(0.2, delay * 2)
