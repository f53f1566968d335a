"""A version's files: one entry type, and the packed table a parsed manifest keeps them in.

:class:`ManifestEntry` is one file as the rest of wandbfs sees it (path, digest, size, where
the bytes live). :class:`EntryTable` is how a manifest holds all of them: a version can hold
hundreds of thousands of files and the daemon keeps its manifest for the mount's life, so
the files are kept as columns (their paths' characters in one string, 16 bytes of digest, 8
of size), about 60 bytes a file where an entry object with its strings and a dict slot
costs about 330; an entry is made when one is asked for. Lookups by path bisect the sorted
paths; listings and the inode table work with a file's index.
"""

from __future__ import annotations

import binascii
import bisect
import re
from array import array
from collections.abc import ItemsView, Iterator, Mapping, ValuesView
from itertools import accumulate, chain, count
from operator import eq, itemgetter
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import urlparse

__all__ = ["MAX_SIZE", "Alg", "Columns", "EntryTable", "ManifestEntry", "b64_to_hex", "canonical_digest"]

Alg: TypeAlias = Literal["md5", "xxh128"]

MAX_SIZE: Final = 2**63 - 1
"""The largest file size a file system can report (``st_size`` is a signed 64-bit ``off_t``);
a larger one would make the whole version folder fail (``OverflowError`` in ``readdir``)."""

_NO_EXTRA: Final[Mapping[str, Any]] = MappingProxyType({})
"""The ``extra`` of (nearly) every entry: one shared empty mapping, not one per file."""

_FIELDS: Final = ("path", "digest", "size", "alg", "birth_artifact_id", "ref", "extra")


class ManifestEntry(tuple):  # type: ignore[type-arg]
    """One file of an artifact, as validated from the manifest (immutable).

    ``path`` is the manifest key ("sub/dir/notes.txt"); it has already been
    checked component by component, so it is safe to split on ``/``.

    A version may hold hundreds of thousands of these, so an entry is a tuple of its
    fields (one allocation, made in C; the size of a slotted object) and what can be
    derived (hex digests, name, parts) is computed when asked. It equals only another
    entry, never a plain tuple, and ``extra`` is not part of ``hash()``, so entries can
    be dict keys (e.g. for tracking in-flight downloads).
    """

    __slots__ = ()

    def __new__(cls, path: str, digest: str, size: int, alg: Alg = "md5", md5_hex: str | None = None,
                birth_artifact_id: str | None = None, ref: str | None = None,
                extra: Mapping[str, Any] | None = None) -> "ManifestEntry":
        """``md5_hex`` is accepted for callers that name it; it is always derived from
        ``digest`` (see :attr:`md5_hex`)."""
        return _tuple_new(cls, (path, digest, size, (alg, birth_artifact_id, ref,
                                                     MappingProxyType(dict(extra)) if extra else None)))

    # (path, digest, size, (alg, birth, ref, extra)): the last part is one tuple shared by
    # every entry born in the same artifact (a version's entries mostly are).
    path: str = property(itemgetter(0))  # type: ignore[assignment]
    digest: str = property(itemgetter(1))  # type: ignore[assignment]
    """Exactly as in the manifest (base64 for stored files; see module doc)."""
    size: int = property(itemgetter(2))  # type: ignore[assignment]

    @property
    def alg(self) -> Alg:
        return self[3][0]  # type: ignore[no-any-return]

    @property
    def birth_artifact_id(self) -> str | None:
        return self[3][1]  # type: ignore[no-any-return]

    @property
    def ref(self) -> str | None:
        return self[3][2]  # type: ignore[no-any-return]
    @property
    def extra(self) -> Mapping[str, Any]:
        """Raw ``extra`` object (read-only). Stored as ``None`` when empty: a tuple of only
        strings, ints and ``None`` is one the garbage collector stops tracking, and a
        version may hold 200,000 entries."""
        e = self[3][3]
        return _NO_EXTRA if e is None else e  # type: ignore[no-any-return]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not ManifestEntry:
            return NotImplemented
        return (_tuple_eq(self[:3], other[:3]) and _tuple_eq(self[3][:3], other[3][:3])  # type: ignore[index]
                and dict(self.extra) == dict(other.extra))  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash((self[0], self[1], self[2], self[3][:3]))

    def __repr__(self) -> str:
        return "ManifestEntry(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in _FIELDS) + ")"

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (self[0], self[1], self[2], self.alg, None, self.birth_artifact_id, self.ref, dict(self.extra))

    @property
    def parts(self) -> tuple[str, ...]:
        """Path components inside the artifact."""
        return tuple(self[0].split("/"))

    @property
    def name(self) -> str:
        """Last path component (the directory entry name)."""
        return self[0].rpartition("/")[2]  # type: ignore[no-any-return]

    @property
    def is_reference(self) -> bool:
        """True when the bytes live outside W&B storage (``ref`` set)."""
        return self[3][2] is not None

    @property
    def ref_scheme(self) -> str | None:
        """URL scheme of the reference (``"s3"``, ``"file"``...), or ``None``."""
        ref = self[3][2]
        return urlparse(ref).scheme if ref is not None else None

    @property
    def hex_digest(self) -> str | None:
        """Hex content hash (md5 or xxh128 per :attr:`alg`), if there is one.

        ``None`` for references whose digest is an ETag/URI rather than a hash
        of the bytes - those can be neither verified nor content-addressed.
        """
        if self[3][2] is not None and self.ref_scheme != "file":
            return None
        return b64_to_hex(self[1])

    @property
    def has_content_digest(self) -> bool:
        """Is :attr:`digest` a hash of the file bytes (so it can be verified)?

        True for stored files and ``file://`` references (the SDK's
        local-file handler records the md5 base64); false for other
        references, whose digest is an ETag or the URI itself.
        """
        return self.hex_digest is not None

    @property
    def md5_hex(self) -> str | None:
        """Hex md5 of the content, for md5 entries whose digest is a content hash."""
        return self.hex_digest if self[3][0] == "md5" else None


_tuple_new = tuple.__new__
_tuple_eq = tuple.__eq__


def make_entry(path: str, digest: str, size: int, alg: Alg, birth: str | None, ref: str | None,
               extra: Mapping[str, Any] | None) -> ManifestEntry:
    """An entry from already checked fields (the parser's path: no copies)."""
    return _tuple_new(ManifestEntry, (path, digest, size, (alg, birth, ref, extra)))  # type: ignore[no-any-return]


_B64_128 = re.compile(r"[A-Za-z0-9+/]{22}==")
"""Exactly the strings ``base64.b64decode(s, validate=True)`` turns into 16 bytes."""


def b64_to_hex(digest: str) -> str | None:
    """Hex of a base64-encoded 128-bit digest, or ``None`` if it isn't one."""
    if not isinstance(digest, str) or _B64_128.fullmatch(digest) is None:
        return None
    return binascii.a2b_base64(digest).hex()


def is_b64_128(digest: str) -> bool:
    """Is ``digest`` base64 of 16 bytes (what a stored file's digest must be)?"""
    return _B64_128.fullmatch(digest) is not None


CANONICAL_LAST: Final = "AQgw"
"""The characters a base64 128-bit digest can end its data with (before ``==``) when its four
unused bits are zero: only such a digest is given back exactly from its 16 bytes."""


def canonical_digest(digest: str) -> bool:
    """A base64 128-bit digest that its 16 bytes encode back to exactly, so the table can
    keep the bytes and give the same string back."""
    return len(digest) == 24 and digest[21] in CANONICAL_LAST and _B64_128.fullmatch(digest) is not None


_ZERO16: Final = bytes(16)
a2b = binascii.a2b_base64
_b2a = binascii.b2a_base64


def _b64(digest: bytes) -> str:
    """The base64 string of 16 digest bytes."""
    return _b2a(digest, newline=False).decode("ascii")


class _Values(ValuesView[ManifestEntry]):
    def __iter__(self) -> Iterator[ManifestEntry]:
        t: EntryTable = self._mapping  # type: ignore[assignment]
        return map(t.entry_at, range(len(t)))


class _Items(ItemsView[str, ManifestEntry]):
    def __iter__(self) -> Iterator[tuple[str, ManifestEntry]]:
        t: EntryTable = self._mapping  # type: ignore[assignment]
        for i in range(len(t)):
            e = t.entry_at(i)
            yield e[0], e


class EntryTable(Mapping[str, ManifestEntry]):
    """path -> :class:`ManifestEntry` for a version's files, sorted by path, packed in columns.

    Index ``i`` is a file's place in path order: ``path_at(i)``, ``size_at(i)`` and
    ``entry_at(i)`` read it without a lookup, ``index_of(path)`` finds it (a bisection).
    Entries whose fields the columns cannot hold (a reference, an ``extra`` object, a digest
    that is not canonical base64) are kept whole, by index."""

    __slots__ = ("_blob", "_offs", "_digests", "_sizes", "_metas", "_rests", "_odd", "_n")

    def __init__(self, blob: str, offs: array[int], digests: bytes, sizes: array[int], metas: array[int],
                 rests: list[tuple[Any, ...]], odd: dict[int, ManifestEntry]) -> None:
        self._blob = blob          # every path, in order, one string
        self._offs = offs          # path i is blob[offs[i]:offs[i + 1]]
        self._digests = digests    # 16 bytes a file
        self._sizes = sizes
        self._metas = metas        # index into rests: the (alg, birth, ref, extra) tuple entries share
        self._rests = rests
        self._odd = odd
        self._n = len(sizes)

    def __len__(self) -> int:
        return self._n

    def path_at(self, i: int) -> str:
        o = self._offs
        return self._blob[o[i]:o[i + 1]]

    def size_at(self, i: int) -> int:
        return self._sizes[i]  # type: ignore[no-any-return]

    def entry_at(self, i: int) -> ManifestEntry:
        if self._odd:
            e = self._odd.get(i)
            if e is not None:
                return e
        return _tuple_new(ManifestEntry, (self.path_at(i), _b64(self._digests[16 * i:16 * i + 16]),  # type: ignore[no-any-return]
                                          self._sizes[i], self._rests[self._metas[i]]))

    def index_of(self, path: object) -> int | None:
        """The index of ``path``, or None when the version has no such file."""
        if path.__class__ is not str and not isinstance(path, str):   # str subclasses too (the SDK's LogicalPath)
            return None
        i = bisect.bisect_left(range(self._n), path, key=self.path_at)  # type: ignore[arg-type]
        return i if i < self._n and self.path_at(i) == path else None

    def __getitem__(self, path: str) -> ManifestEntry:
        i = self.index_of(path)
        if i is None:
            raise KeyError(path)
        return self.entry_at(i)

    def __contains__(self, path: object) -> bool:
        return self.index_of(path) is not None

    def __iter__(self) -> Iterator[str]:
        return map(self.path_at, range(self._n))

    def values(self) -> ValuesView[ManifestEntry]:
        return _Values(self)

    def items(self) -> ItemsView[str, ManifestEntry]:
        return _Items(self)

    @property
    def total_size(self) -> int:
        return sum(self._sizes)

    def __repr__(self) -> str:
        return f"<EntryTable: {self._n} files>"


class Columns:
    """Entries as a parse meets them, one slot each, in manifest order (a repeated path takes
    another slot): what the parse keeps instead of an entry object per file. ``pack`` makes
    the table of the slots that are shown."""

    __slots__ = ("paths", "digests", "sizes", "metas", "rests", "_rest_ix", "odd")

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.digests = bytearray()
        self.sizes = array("q")
        self.metas = array("I")
        self.rests: list[tuple[Any, ...]] = []
        self._rest_ix: dict[tuple[str, str | None], int] = {}
        self.odd: dict[int, ManifestEntry] = {}

    def meta(self, alg: Alg, birth: str | None) -> int:
        """The index of the ``(alg, birth, None, None)`` tuple entries of that kind share."""
        k = (alg, birth)
        i = self._rest_ix.get(k)
        if i is None:
            i = self._rest_ix[k] = len(self.rests)
            self.rests.append((alg, birth, None, None))
        return i

    def add(self, path: str, digest: bytes, size: int, meta: int) -> None:
        """One slot: a plain stored file's path, the 16 bytes of its canonical digest (see
        ``canonical_digest``), its size and its ``meta``."""
        self.paths.append(path)
        self.digests += digest
        self.sizes.append(size)
        self.metas.append(meta)

    def add_entry(self, e: ManifestEntry) -> None:
        rest = e[3]
        if rest[2] is None and rest[3] is None and canonical_digest(e[1]):
            self.add(e[0], a2b(e[1]), e[2], self.meta(rest[0], rest[1]))
            return
        self.odd[len(self.paths)] = e
        self.add(e[0], _ZERO16, e[2], 0)

    def digest_at(self, slot: int) -> str:
        e = self.odd.get(slot)
        if e is not None:
            return e.digest
        return _b64(self.digests[16 * slot:16 * slot + 16])

    def pack(self, slots: list[int]) -> EntryTable:
        """The table of ``slots`` (their paths sorted and unique)."""
        paths = self.paths
        kept = [paths[s] for s in slots]
        offs = array("q", [0])
        offs.extend(accumulate(map(len, kept)))
        blob = "".join(kept)
        del kept
        metas_code = "H" if len(self.rests) <= 0xFFFF else "I"
        if len(slots) == len(paths) and all(map(eq, slots, count())):
            # Every slot, in manifest order (a manifest sorted by path, without repeats, as the
            # SDK writes them): the columns as they are.
            digests = bytes(self.digests)
            sizes = self.sizes
            metas = array(metas_code, self.metas)
        else:                        # streamed through ints, not a bytes object per file
            words = array("Q")
            words.frombytes(self.digests)
            digests = array("Q", chain.from_iterable((words[2 * s], words[2 * s + 1]) for s in slots)).tobytes()
            del words
            sizes = array("q", map(self.sizes.__getitem__, slots))
            metas = array(metas_code, map(self.metas.__getitem__, slots))
        odd: dict[int, ManifestEntry] = {}
        if self.odd:
            odd = {i: self.odd[s] for i, s in enumerate(slots) if s in self.odd}
        return EntryTable(blob, offs, digests, sizes, metas, self.rests or [("md5", None, None, None)], odd)
