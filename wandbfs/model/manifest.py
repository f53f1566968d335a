"""W&B artifact manifests, parsed into a validated file tree.

A manifest (``wandb_manifest.json``) is the complete listing of an artifact
version: logical path -> digest, size, and where the bytes live.  The mount
shows exactly this tree, so every path in it comes from a remote, possibly
hostile or buggy source and must be checked before it becomes a directory
entry.  One bad entry must not hide the rest of the artifact, so bad entries
are *skipped and logged*, never raised; only a manifest that is unusable as a
whole (not JSON, wrong version, no ``contents`` object) raises ``ValueError``.

A version can hold hundreds of thousands of files, so the parse is built for size:
raw JSON is read entry by entry through a window of about a MiB (the decoded text
and the decoded objects of the whole ``contents`` never exist at once), the entries go
straight into packed columns (``entries.py``: no object per file), and a directory's
listing is one int per child, built when it is first listed.

Digest encodings (checked against wandb 0.31, ``wandb/sdk/lib/hashutil.py``):

* MD5 entries (no ``extra.alg``, or ``"alg": "MD5"``): ``digest`` is
  ``base64(md5(bytes))``.
* XXH128 entries (``"extra": {"alg": "XXH128"}``): ``digest`` is
  ``base64(xxh128(bytes).digest())`` - also base64 of the 16 raw bytes, *not*
  hex.  The SDK's cache turns both into hex with ``b64_to_hex_id``.
* Reference entries (``ref`` set): ``digest`` is whatever the storage handler
  recorded - an ETag for s3/gs/http, the md5 base64 for ``file://``, or the
  reference URI itself when the reference was added with ``checksum=False``.
"""

from __future__ import annotations

import bisect
import codecs
import hashlib
import json
import json.decoder
import logging
import re
from array import array
from collections.abc import ItemsView, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Callable, Final, Literal, TypeAlias
from urllib.parse import urlparse

import xxhash

from wandbfs.model.entries import (CANONICAL_LAST, MAX_SIZE, Alg, Columns, EntryTable, ManifestEntry, a2b,
                                    canonical_digest, is_b64_128, make_entry)
from wandbfs.model.names import is_safe_name

__all__ = [
    "DIR",
    "Alg",
    "DirListing",
    "Manifest",
    "ManifestEntry",
    "TreeNode",
    "artifact_digest",
    "parse_manifest",
]

log = logging.getLogger(__name__)

DIR: Final = "dir"
"""Marker for a sub-directory in :attr:`Manifest.tree` listings."""

DIGEST_HEADER: Final[bytes] = b"wandb-artifact-manifest-v1\n"
"""Prefix of the artifact digest (``ArtifactManifestV1._DIGEST_HEADER``)."""

# The SDK's tags for ``extra["alg"]`` (artifact_manifest_entry.DIGEST_ALGORITHM_TO_STR).
# Matched case-sensitively like the SDK.  The SDK silently treats an unknown
# tag as MD5; we skip the entry instead, since a digest we can't interpret
# could only ever fail verification (or, worse, land in the wrong cache dir).
_ALG_TAGS: Final[dict[str, Alg]] = {"MD5": "md5", "XXH128": "xxh128"}


TreeNode: TypeAlias = Literal["dir"] | ManifestEntry
"""A child in :attr:`Manifest.tree`: :data:`DIR` or the file's entry."""


class DirListing(Mapping[str, TreeNode]):
    """One directory's children, sorted by name: name -> :data:`DIR` or the entry.

    Holds one int per child, not a name or an entry: a file's index in the manifest's
    :class:`EntryTable`, or ``~j`` for its ``j``-th sub-folder (whose full path it keeps).
    Names are sliced off the paths when listed, so a folder of 200,000 files costs 800 KB.
    Sorting by full path is sorting by name, since every child shares the folder's prefix."""

    __slots__ = ("_manifest", "_table", "_prefix", "_kids", "_subdirs")

    def __init__(self, manifest: "Manifest", prefix: str, kids: "array[int]", subdirs: list[str]) -> None:
        self._manifest = manifest
        self._table = manifest.entries
        self._prefix = prefix          # "" for the root, else "a/b/"
        self._kids = kids
        self._subdirs = subdirs

    @property
    def table(self) -> EntryTable:
        """The manifest's files, which the file indices of :meth:`index_at` point into."""
        return self._table

    def __len__(self) -> int:
        return len(self._kids)

    def index_at(self, k: int) -> int:
        """The ``k``-th child: a file's index in :attr:`table` (``>= 0``), or a negative
        number for a sub-folder."""
        return self._kids[k]  # type: ignore[no-any-return]

    def name_at(self, k: int) -> str:
        return self.kid(k)[1]

    def kid(self, k: int) -> tuple[int, str]:
        """The ``k``-th child's index (see :meth:`index_at`) and name, in one call (``readdir``
        asks for both, per child)."""
        ix = self._kids[k]
        path = self._table.path_at(ix) if ix >= 0 else self._subdirs[~ix]
        return ix, (path[len(self._prefix):] if self._prefix else path)

    def __iter__(self) -> Iterator[str]:
        return map(self.name_at, range(len(self._kids)))

    def __getitem__(self, name: str) -> TreeNode:
        if not isinstance(name, str) or "/" in name or not name:
            raise KeyError(name)
        child = self._manifest._child(self._prefix + name)
        if child is None:
            raise KeyError(name)
        return child

    def __contains__(self, name: object) -> bool:
        try:
            self[name]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def items(self) -> "_DirListingItems":
        return _DirListingItems(self)

    def pairs(self) -> Iterator[tuple[str, TreeNode]]:
        """``(name, DIR or entry)`` in order, without a lookup per child."""
        entry_at = self._table.entry_at
        for k, ix in enumerate(self._kids):
            yield self.name_at(k), (entry_at(ix) if ix >= 0 else DIR)

    def files_after(self, path: str) -> Iterator[ManifestEntry]:
        """The files after ``path`` (a path in this folder) in order, sub-folders skipped."""
        kids, table = self._kids, self._table
        start = bisect.bisect_right(range(len(kids)), path[len(self._prefix):], key=self.name_at)
        for ix in kids[start:]:
            if ix >= 0:
                yield table.entry_at(ix)

    def __repr__(self) -> str:
        return f"<listing of {self._prefix or '/'}: {len(self._kids)} entries>"


class _DirListingItems(ItemsView[str, TreeNode]):
    def __iter__(self) -> Iterator[tuple[str, TreeNode]]:
        return self._mapping.pairs()  # type: ignore[attr-defined,no-any-return]


class _Tree(Mapping[tuple[str, ...], Mapping[str, TreeNode]]):
    """Every directory (tuple of components, ``()`` = the root) -> its listing, each
    built when first asked for."""

    __slots__ = ("_m",)

    def __init__(self, manifest: "Manifest") -> None:
        self._m = manifest

    def __len__(self) -> int:
        return len(self._m._dirs)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        for d in sorted(self._m._dirs):
            yield tuple(d.split("/")) if d else ()

    def __getitem__(self, parts: tuple[str, ...]) -> Mapping[str, TreeNode]:
        listing = self._m.listdir(parts)
        if listing is None:
            raise KeyError(parts)
        return listing


class Manifest:
    """A parsed manifest: valid entries, a directory tree, and what was skipped.

    ``entries`` is every shown file, path -> entry, in path order (an :class:`EntryTable`).
    ``tree`` maps every directory (tuple of components, ``()`` = artifact
    root) to its children sorted by name; a child is either :data:`DIR` or the
    file's :class:`ManifestEntry`.  The root is always present, even for an
    empty artifact, so ``readdir`` of an empty version works.
    """

    __slots__ = ("entries", "storage_layout", "storage_policy", "storage_region", "version", "skipped",
                 "_dirs", "_listings", "_skipped_digests", "tree")

    def __init__(self, entries: EntryTable, dirs: dict[str, tuple["array[int]", list[str]]],
                 storage_layout: str | None = None, storage_policy: str | None = None,
                 storage_region: str | None = None, skipped: list[tuple[str, str]] | None = None,
                 skipped_digests: dict[str, str] | None = None) -> None:
        self.entries: EntryTable = entries
        self.storage_layout = storage_layout
        self.storage_policy = storage_policy
        self.storage_region = storage_region
        self.version = 1
        self.skipped: list[tuple[str, str]] = skipped or []
        """``(path, reason)`` for every entry left out of ``entries``."""
        self._dirs = dirs                  # "a/b" ("" = root) -> (its files' indices, its sub-folders' paths)
        self._listings: dict[str, DirListing] = {}
        self._skipped_digests = skipped_digests or {}
        self.tree: Mapping[tuple[str, ...], Mapping[str, TreeNode]] = _Tree(self)

    @property
    def raw_digests(self) -> Mapping[str, str]:
        """``path -> digest`` for *every* entry with a string digest, skipped or not.

        The server's artifact digest covers all entries, including ones we refuse
        to show, so :meth:`digest` uses this to stay comparable with it.
        """
        out = dict(self._skipped_digests)
        for path, e in self.entries.items():
            out[path] = e.digest
        return MappingProxyType(out)

    def _child(self, path: str) -> TreeNode | None:
        found = self._locate(path)
        return None if found is None else found[0]

    def _locate(self, path: str) -> tuple[TreeNode, int] | None:
        if path in self._dirs:
            return DIR, -1
        i = self.entries.index_of(path)
        return None if i is None else (self.entries.entry_at(i), i)

    def lookup(self, parts: Iterable[str]) -> TreeNode | None:
        """Return :data:`DIR`, the file entry, or ``None`` for a path inside."""
        found = self.locate(parts)
        return None if found is None else found[0]

    def locate(self, parts: Iterable[str]) -> tuple[TreeNode, int] | None:
        """``lookup``, and the file's index in :attr:`entries` (-1 for a folder): one
        bisection for a caller that wants both (a node points into the table)."""
        if not isinstance(parts, tuple):
            parts = tuple(parts)
        if not parts:
            return DIR, -1
        return self._locate("/".join(parts))

    def listdir(self, parts: Iterable[str]) -> DirListing | None:
        """Children of a directory, or ``None`` if it is not a directory."""
        d = "/".join(parts)
        listing = self._listings.get(d)
        if listing is None:
            kids = self._dirs.get(d)
            if kids is None:
                return None
            files, subdirs = kids
            subdirs.sort()
            if subdirs:            # merged into the files by path: a bisection per sub-folder
                merged, prev, table = array("i"), 0, self.entries
                for j, sub in enumerate(subdirs):
                    k = bisect.bisect_left(files, sub, lo=prev, key=table.path_at)
                    merged.extend(files[prev:k])
                    merged.append(~j)
                    prev = k
                merged.extend(files[prev:])
                files = merged
            listing = self._listings[d] = DirListing(self, d + "/" if d else "", files, subdirs)
        return listing

    def following(self, path: str) -> Iterator[ManifestEntry]:
        """The files after ``path`` in its folder, in listing order (sub-folders skipped):
        what a reader going through the folder opens next."""
        parent = path.rpartition("/")[0]
        listing = self.listdir(tuple(parent.split("/")) if parent else ())
        if listing is None:
            return iter(())
        return listing.files_after(path)

    @property
    def total_size(self) -> int:
        """Sum of the sizes of the visible files."""
        return self.entries.total_size

    def digest(self, algorithm: Alg = "md5") -> str:
        """The artifact digest as W&B computes it (see :func:`artifact_digest`).

        ``algorithm`` is the *artifact's* digest algorithm (the server's
        ``Artifact.digestAlgorithm``), which is not recorded in the manifest.
        """
        return artifact_digest(self.raw_digests, algorithm)

    def __repr__(self) -> str:
        return f"<Manifest: {len(self.entries)} files in {len(self._dirs)} folders, {len(self.skipped)} skipped>"


def _check_path(path: str) -> str | None:
    """Return why ``path`` can't be shown in the mount, or ``None`` if it can.

    We reject rather than normalise (``a//b`` -> ``a/b``): a rewritten path
    could collide with another entry, and silently showing a file somewhere
    other than where the manifest says is more confusing than hiding it.
    """
    if not path:
        return "empty path"
    if "\0" in path:
        return "path contains NUL"
    if path.startswith("/"):
        return "absolute path"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "path is not valid UTF-8"
    for comp in path.split("/"):
        if comp == "":
            return "empty path component"
        if comp in (".", ".."):
            return f"{comp!r} path component"
        if not is_safe_name(comp):
            return "path component longer than 255 bytes"
    return None


class _Builder:
    """Collects a manifest's ``contents`` one entry at a time into :class:`Columns` (the last
    of a repeated path wins, as with ``json.loads`` and so the SDK); at the end keeps the
    winners, builds the folders and reports what it skipped."""

    def __init__(self) -> None:
        self.cols = Columns()
        self.bad: dict[str, tuple[int, str]] = {}   # path -> (the slots before it, why it is not shown)
        self.dups: list[str] = []
        self.skipped_digests: dict[str, str] = {}   # digests of entries not shown (the artifact digest)
        self.births: dict[str, str] = {}            # one string per birth artifact id, not one per file
        self.md5_metas: dict[str | None, int] = {}  # birth -> the meta of md5 entries born there

    def reset(self) -> None:
        """A second ``contents`` key: as with ``json.loads``, only the last counts."""
        self.__init__()  # type: ignore[misc]

    def _md5(self, path: str, digest: str, size: int, birth: str | None) -> None:
        """A plain md5 entry whose fields are checked (its digest canonical) into the columns."""
        meta = self.md5_metas.get(birth)
        if meta is None:
            if birth is not None:
                birth = self.births.setdefault(birth, birth)
            meta = self.md5_metas[birth] = self.cols.meta("md5", birth)
        self.cols.add(path, a2b(digest), size, meta)

    def add(self, path: Any, raw: Any) -> None:
        # The common entry, checked inline (this runs once per file): a dict with a base64
        # md5, an int size, no ref, no or empty extra, and a plain short ASCII path.
        if (raw.__class__ is dict and path.__class__ is str and 0 < len(path) <= 255 and path.isascii()
                and "//" not in path and "/." not in path and "\0" not in path
                and path[0] not in "./" and path[-1] != "/"):
            digest = raw.get("digest")
            size = raw.get("size")
            if (digest.__class__ is str and size.__class__ is int and 0 <= size <= MAX_SIZE
                    and not raw.get("extra") and raw.get("ref") is None and canonical_digest(digest)):
                birth = raw.get("birthArtifactID")
                if birth is None or birth.__class__ is str:
                    self._md5(path, digest, size, birth)
                    return
        parsed = self._entry(path, raw) if isinstance(path, str) else "path is not a string"
        if parsed.__class__ is ManifestEntry:
            self.cols.add_entry(parsed)  # type: ignore[arg-type]
            return
        key = path if isinstance(path, str) else repr(path)
        if key in self.bad:
            self.dups.append(key)
        self.bad[key] = (len(self.cols.paths), parsed)  # type: ignore[assignment]
        if isinstance(raw, Mapping) and isinstance(raw.get("digest"), str):
            self.skipped_digests[key] = raw["digest"]

    def add_simple(self, path: str, digest: str, size: int, birth: str | None) -> None:
        """An entry the reader matched whole (a base64 128-bit digest, a size in digits, maybe a
        birth artifact id, no ref, no extra): only the path and the size are left to check."""
        if (not (0 < len(path) <= 255) or not path.isascii() or "//" in path or "/." in path or "\0" in path
                or path[0] in "./" or path[-1] == "/" or size > MAX_SIZE or digest[21] not in CANONICAL_LAST):
            raw: dict[str, Any] = {"digest": digest, "size": size}
            if birth is not None:
                raw["birthArtifactID"] = birth
            self.add(path, raw)
            return
        self._md5(path, digest, size, birth)   # the regex matched its digest: canonical is all that was left

    def _entry(self, path: str, raw: Any) -> ManifestEntry | str:
        """The entry, or why it is invalid (every case; ``add`` has the fast one)."""
        if (reason := _check_path(path)) is not None:
            return reason
        if not isinstance(raw, Mapping):
            return "entry is not an object"
        digest = raw.get("digest")
        if not isinstance(digest, str) or not digest:
            return "missing digest"
        size = raw.get("size")
        if size is None:
            return "missing size"
        if isinstance(size, bool) or not isinstance(size, int):
            return f"size is not an integer: {size!r}"
        size = int(size)
        if size < 0:
            return f"negative size: {size}"
        if size > MAX_SIZE:
            return f"size out of range: {size} (more than 2^63-1 bytes)"

        extra = raw.get("extra", {})
        if extra is None:
            extra = {}
        if not isinstance(extra, Mapping):
            return "extra is not an object"
        alg: Alg = "md5"
        alg_tag = extra.get("alg")
        if alg_tag is not None:
            if isinstance(alg_tag, str) and alg_tag in _ALG_TAGS:
                alg = _ALG_TAGS[alg_tag]
            else:
                return f"unsupported digest algorithm {alg_tag!r}"

        ref = raw.get("ref")
        if ref is not None and (not isinstance(ref, str) or not ref):
            return "ref is not a string"

        birth = raw.get("birthArtifactID")
        if birth is not None:
            if not isinstance(birth, str):
                return "birthArtifactID is not a string"
            birth = self.births.setdefault(birth, birth)

        if ref is None or urlparse(ref).scheme == "file":
            # A stored file must be content-addressable, or we can neither cache nor verify it.
            if not is_b64_128(digest):
                return f"digest is not a base64 128-bit hash: {digest!r}"
        return make_entry(path, digest, size, alg, birth, ref, MappingProxyType(dict(extra)) if extra else None)

    def finish(self, storage_layout: str | None, storage_policy: str | None,
               storage_region: str | None) -> Manifest:
        skipped: list[tuple[str, str]] = []

        def skip(path: str, reason: str) -> None:
            log.warning("manifest: skipping entry %r: %s", path, reason)
            skipped.append((path, reason))

        cols = self.cols
        paths = cols.paths
        dups = self.dups
        # Every slot in path order (a stable sort: repeats in manifest order); the last of
        # each run of one path wins.
        live: list[int] = []
        prev: str | None = None
        for s in sorted(range(len(paths)), key=paths.__getitem__):
            p = paths[s]
            if p == prev:
                dups.append(p)
                live[-1] = s
            else:
                live.append(s)
                prev = p
        path_of = paths.__getitem__
        dead: set[int] = set()            # positions in live
        bad = []
        for path, (before, reason) in self.bad.items():
            k = bisect.bisect_left(live, path, key=path_of)
            if k < len(live) and paths[live[k]] == path:
                dups.append(path)
                if live[k] >= before:     # a valid entry later in the manifest wins
                    continue
                self.skipped_digests.setdefault(path, cols.digest_at(live[k]))
                dead.add(k)
            bad.append((path, reason))
        for dup in dups:
            skip(dup, "duplicate path (a later entry with the same path wins)")
        for path, reason in bad:
            skip(path, reason)

        subdirs: dict[str, list[str]] = {"": []}   # folder ("" = root) -> its sub-folders' paths
        for s in live:
            d = paths[s].rpartition("/")[0]
            while d and d not in subdirs:    # a folder not seen yet, and the ones above it
                subdirs[d] = []
                d = d.rpartition("/")[0]
        for d in list(subdirs):
            if d:
                subdirs[d.rpartition("/")[0]].append(d)
        for d in subdirs:
            if d:
                k = bisect.bisect_left(live, d, key=path_of)
                if k < len(live) and paths[live[k]] == d and k not in dead:
                    skip(d, "file/folder clash: a folder with the same path exists")
                    self.skipped_digests[d] = cols.digest_at(live[k])
                    dead.add(k)
        if dead:
            live = [s for k, s in enumerate(live) if k not in dead]

        table = cols.pack(live)
        if len(subdirs) == 1:             # one flat folder: every file, in order
            files = {"": array("i", range(len(live)))}
        else:
            files = {d: array("i") for d in subdirs}
            for i, s in enumerate(live):
                files[paths[s].rpartition("/")[0]].append(i)
        del live, paths
        self.cols = Columns()
        return Manifest(table, {d: (files[d], subdirs[d]) for d in subdirs}, storage_layout, storage_policy,
                        storage_region, skipped, self.skipped_digests)


# ---- reading raw JSON a window at a time -------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")
_scanstring = json.decoder.scanstring
_scan_value = json.JSONDecoder().scan_once
_WINDOW: Final = 1 << 20


class _NotAnObject(Exception):
    """Valid JSON, but not an object."""


class _Text:
    """Decoded text of a JSON document, a window at a time: ``text[i:]`` is what is left of
    the window; ``more()`` appends the next chunk (the part before ``i`` is dropped)."""

    def __init__(self, data: bytes | str) -> None:
        if isinstance(data, str):
            self.text, self._data, self._decoder = data, b"", None
        else:
            self._data = data
            self._decoder = codecs.getincrementaldecoder(json.detect_encoding(data))("surrogatepass")
            self.text = ""
        self._pos = 0
        self.i = 0

    @property
    def exhausted(self) -> bool:
        return self._pos >= len(self._data)

    def more(self, at_least: int = _WINDOW) -> bool:
        """Read the next chunk; False when everything was read."""
        if self._decoder is None or self.exhausted:
            return False
        end = min(len(self._data), self._pos + max(at_least, _WINDOW))
        chunk = self._decoder.decode(self._data[self._pos:end], final=end >= len(self._data))
        self._pos = end
        self.text = self.text[self.i:] + chunk
        self.i = 0
        return True

    def ws(self) -> None:
        self.i = _WS.match(self.text, self.i).end()  # type: ignore[union-attr]
        while self.i >= len(self.text) and self.more():
            self.i = _WS.match(self.text, self.i).end()  # type: ignore[union-attr]

    def peek(self) -> str:
        self.ws()
        if self.i >= len(self.text):
            raise ValueError("unexpected end of data")
        return self.text[self.i]

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise ValueError(f"expected {ch!r} at char {self.i}")
        self.i += 1

    def _attempt(self, fn: Callable[[str, int], tuple[Any, int]]) -> Any:
        """One value or string read by ``fn``; near the window's end, more text first."""
        while True:
            if len(self.text) - self.i < 65536 and not self.exhausted:
                self.more()
            try:
                value, end = fn(self.text, self.i)
            except (ValueError, StopIteration, IndexError) as e:
                if self.more(2 * len(self.text)):
                    continue
                if isinstance(e, StopIteration):
                    raise ValueError(f"expecting a value at char {self.i}") from None
                raise ValueError(str(e)) from None
            if end >= len(self.text) and not self.exhausted:
                # A number or literal may go on past the window: read it again with more.
                self.more()
                continue
            self.i = end
            return value

    def string(self) -> str:
        self.expect('"')
        return self._attempt(lambda text, i: _scanstring(text, i, True))  # type: ignore[no-any-return]

    def value(self) -> Any:
        self.ws()
        return self._attempt(_scan_value)

    def end(self) -> None:
        self.ws()
        if self.i < len(self.text) or not self.exhausted:
            raise ValueError(f"extra data at char {self.i}")


def _read_object(t: _Text, on_value: Callable[[str], None]) -> None:
    """The members of the object at ``t`` (``{`` next): ``on_value(key)`` reads each value."""
    t.expect("{")
    if t.peek() == "}":
        t.i += 1
        return
    while True:
        key = t.string()
        t.expect(":")
        on_value(key)
        ch = t.peek()
        t.i += 1
        if ch == "}":
            return
        if ch != ",":
            raise ValueError(f"expected ',' or '}}' at char {t.i - 1}")


_KEY = re.compile(r'[ \t\n\r]*"([^"\\\x00-\x1f]*)"[ \t\n\r]*:[ \t\n\r]*')
"""A member's key without escapes, and the colon after it (the fast path)."""
_SEP = re.compile(r"[ \t\n\r]*([,}])")
_STR = r'"([^"\\\x00-\x1f]*)"'
_B64 = r'"([A-Za-z0-9+/]{22}==)"'
_INT = r"(0|[1-9][0-9]*)"
_KEY_SRC = r'[ \t\n\r]*"([^"\\\x00-\x1f]*)"[ \t\n\r]*:[ \t\n\r]*'
_SEP_SRC = r"[ \t\n\r]*([,}])"
_SIMPLE = (   # a whole member: key, the usual entry (SDK order, sorted keys), separator; its groups
    (re.compile(_KEY_SRC + r'\{\s*"digest"\s*:\s*' + _B64 + r'\s*,\s*(?:"birthArtifactID"\s*:\s*' + _STR
               + r'\s*,\s*)?"size"\s*:\s*' + _INT + r'\s*(?:,\s*"extra"\s*:\s*\{\s*\}\s*)?\}' + _SEP_SRC), (1, 2, 3, 4, 5)),
    (re.compile(_KEY_SRC + r'\{\s*(?:"birthArtifactID"\s*:\s*' + _STR + r'\s*,\s*)?"digest"\s*:\s*' + _B64
                + r'\s*,\s*(?:"extra"\s*:\s*\{\s*\}\s*,\s*)?"size"\s*:\s*' + _INT + r"\s*\}" + _SEP_SRC), (1, 3, 2, 4, 5)),
)
"""Members matched whole by one regex each (no dict, no key strings): most of a manifest.
The groups of each, in the order (path, digest, birth, size, sep)."""
_LOW: Final = 65536
"""Read more once less than this is left in the window (a larger entry is read again with more)."""


def _read_contents(t: _Text, builder: "_Builder") -> None:
    """``contents``, entry by entry, with C doing the work (a key by regex, the usual entry
    by regex too, anything else by the JSON scanner): the hot loop of a manifest of 200,000
    files."""
    add, add_simple = builder.add, builder.add_simple
    # The two shapes, the one that matched last tried first (a manifest is written one way).
    (first, first_groups), (second, second_groups) = _SIMPLE
    t.expect("{")
    if t.peek() == "}":
        t.i += 1
        return
    text, i, n = t.text, t.i, len(t.text)
    while True:
        if n - i < _LOW and not t.exhausted:
            t.i = i
            t.more()
            text, i, n = t.text, t.i, len(t.text)
        simple = first.match(text, i)
        if simple is not None:
            path, digest, birth, size, sep = simple.group(*first_groups)
        elif (simple := second.match(text, i)) is not None:
            path, digest, birth, size, sep = simple.group(*second_groups)
            (first, first_groups), (second, second_groups) = (second, second_groups), (first, first_groups)
        if simple is not None and (simple.end() < n or t.exhausted):
            add_simple(path, digest, int(size), birth)
            i = simple.end()
            if sep == "}":
                t.i = i
                return
            continue
        m = _KEY.match(text, i)
        try:
            if m is not None:
                key = m.group(1)
                value, end = _scan_value(text, m.end())
            else:                          # escapes in the key: the general reader
                t.i = i
                key = t.string()
                t.expect(":")
                t.ws()
                text, i, n = t.text, t.i, len(t.text)
                value, end = _scan_value(text, i)
            sep = _SEP.match(text, end)
            if sep is None or (end >= n and not t.exhausted):
                raise ValueError(f"expected ',' or '}}' at char {end}")
        except (ValueError, StopIteration) as e:
            t.i = i
            if t.more(2 * n):              # the entry went on past the window: again, with more
                text, i, n = t.text, t.i, len(t.text)
                continue
            raise ValueError(f"expecting a value at char {i}" if isinstance(e, StopIteration) else str(e)) from None
        add(key, value)
        i = sep.end()
        if sep.group(1) == "}":
            t.i = i
            return


def _read_json(data: bytes | str, builder: _Builder) -> dict[str, Any]:
    """The top-level members of a manifest's JSON; ``contents`` goes to ``builder`` entry by
    entry (the returned dict then says ``contents: True``)."""
    t = _Text(data)
    if t.peek() != "{":
        json.loads(data)    # raises for text that is not JSON at all
        raise _NotAnObject()
    top: dict[str, Any] = {}

    def member(key: str) -> None:
        if key == "contents" and t.peek() == "{":
            if top.get("contents") is True:
                builder.reset()
            _read_contents(t, builder)
            top[key] = True
        else:
            top[key] = t.value()
    _read_object(t, member)
    t.end()
    return top


def parse_manifest(data: Mapping[str, Any] | bytes | str) -> Manifest:
    """Parse a version-1 manifest into a :class:`Manifest`.

    Accepts the decoded dict or the raw JSON (bytes/str).  Only raw JSON lets
    us see repeated keys in ``contents``; for those the *last* occurrence wins
    (what ``json.loads``, and therefore ``artifact.download()``, uses) and
    each earlier one is recorded in ``skipped``.

    Per-entry problems are logged with ``logging.warning`` and recorded in
    :attr:`Manifest.skipped`; see :func:`_check_path` and the reasons in
    ``_Builder._entry`` for the list.  When a file and a folder share a name
    (``"a"`` and ``"a/b"``), the folder is kept and the file skipped: a file
    can't also be a directory, and keeping the folder loses fewer entries.

    Raises:
        ValueError: the input is not JSON, not an object, not manifest
            version 1, or has no ``contents`` object.
    """
    builder = _Builder()
    if isinstance(data, (bytes, bytearray, str)):
        try:
            doc: Any = _read_json(bytes(data) if isinstance(data, bytearray) else data, builder)
        except _NotAnObject:
            raise ValueError("manifest is not a JSON object") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"manifest is not valid JSON: {e}") from e
    else:
        doc = data
    if not isinstance(doc, Mapping):
        raise ValueError("manifest is not a JSON object")
    version = doc.get("version")
    if version != 1 or isinstance(version, bool):
        raise ValueError(f"unsupported manifest version {version!r} (expected 1)")
    contents = doc.get("contents")
    if contents is not True:
        if not isinstance(contents, Mapping):
            raise ValueError("manifest has no 'contents' object")
        for path, raw in contents.items():
            builder.add(path, raw)

    policy_cfg = doc.get("storagePolicyConfig")
    if not isinstance(policy_cfg, Mapping):
        policy_cfg = {}

    def opt_str(v: Any) -> str | None:
        return v if isinstance(v, str) else None

    return builder.finish(opt_str(policy_cfg.get("storageLayout")), opt_str(doc.get("storagePolicy")),
                          opt_str(policy_cfg.get("storageRegion")))


def artifact_digest(
    entries: Mapping[str, ManifestEntry | str] | Iterable[ManifestEntry],
    algorithm: Alg = "md5",
) -> str:
    """Hex digest of an artifact from its entries, as W&B computes it.

    Same as ``ArtifactManifestV1.digest()``::

        H("wandb-artifact-manifest-v1\\n" + "".join(f"{path}:{digest}\\n"
                                                     for path in sorted(paths)))

    where ``H`` is md5, or xxh128 for artifacts whose digest algorithm is
    XXH128 (a per-artifact setting, not derivable from the manifest).  Used
    to check that a manifest we fetched is the one the server's artifact
    record describes.  ``entries`` may be a mapping path -> entry/digest
    string, or an iterable of entries.
    """
    pairs: dict[str, str] = {}
    if isinstance(entries, Mapping):
        for path, v in entries.items():
            pairs[path] = v if isinstance(v, str) else v.digest
    else:
        for e in entries:
            pairs[e.path] = e.digest
    hasher: Any
    if algorithm == "xxh128":
        hasher = xxhash.xxh128(DIGEST_HEADER)
    elif algorithm == "md5":
        hasher = hashlib.md5(DIGEST_HEADER, usedforsecurity=False)
    else:
        raise ValueError(f"unknown digest algorithm {algorithm!r}")
    for path in sorted(pairs):
        # surrogatepass: never raise on a path json.loads let through with a
        # lone surrogate; such an entry is already skipped from the tree.
        hasher.update(f"{path}:{pairs[path]}\n".encode("utf-8", "surrogatepass"))
    return str(hasher.hexdigest())
