"""W&B artifact manifests, parsed into a validated file tree.

A manifest (``wandb_manifest.json``) is the complete listing of an artifact
version: logical path -> digest, size, and where the bytes live.  The mount
shows exactly this tree, so every path in it comes from a remote, possibly
hostile or buggy source and must be checked before it becomes a directory
entry.  One bad entry must not hide the rest of the artifact, so bad entries
are *skipped and logged*, never raised; only a manifest that is unusable as a
whole (not JSON, wrong version, no ``contents`` object) raises ``ValueError``.

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

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import urlparse

import xxhash

from wandbfs.model.names import is_safe_name

__all__ = [
    "DIR",
    "Alg",
    "Manifest",
    "ManifestEntry",
    "TreeNode",
    "artifact_digest",
    "parse_manifest",
]

log = logging.getLogger(__name__)

Alg: TypeAlias = Literal["md5", "xxh128"]

DIR: Final = "dir"
"""Marker for a sub-directory in :attr:`Manifest.tree` listings."""

DIGEST_HEADER: Final[bytes] = b"wandb-artifact-manifest-v1\n"
"""Prefix of the artifact digest (``ArtifactManifestV1._DIGEST_HEADER``)."""

# The SDK's tags for ``extra["alg"]`` (artifact_manifest_entry.DIGEST_ALGORITHM_TO_STR).
# Matched case-sensitively like the SDK.  The SDK silently treats an unknown
# tag as MD5; we skip the entry instead, since a digest we can't interpret
# could only ever fail verification (or, worse, land in the wrong cache dir).
_ALG_TAGS: Final[dict[str, Alg]] = {"MD5": "md5", "XXH128": "xxh128"}
_DIGEST_BYTES: Final = 16  # md5 and xxh128 are both 128-bit

MAX_SIZE: Final = 2**63 - 1
"""The largest file size a file system can report (``st_size`` is a signed 64-bit ``off_t``);
a larger one would make the whole version folder fail (``OverflowError`` in ``readdir``)."""


@dataclass(frozen=True)
class ManifestEntry:
    """One file of an artifact, as validated from the manifest.

    ``path`` is the manifest key ("sub/dir/notes.txt"); it has already been
    checked component by component, so it is safe to split on ``/``.
    """

    path: str
    digest: str
    """Exactly as in the manifest (base64 for stored files; see module doc)."""
    size: int
    alg: Alg = "md5"
    md5_hex: str | None = None
    """Hex md5 of the content, for md5 entries whose digest is a content hash."""
    birth_artifact_id: str | None = None
    ref: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Raw ``extra`` object (read-only); excluded from ``hash()`` so entries
    can be dict keys, e.g. for tracking in-flight downloads."""

    @property
    def parts(self) -> tuple[str, ...]:
        """Path components inside the artifact."""
        return tuple(self.path.split("/"))

    @property
    def name(self) -> str:
        """Last path component (the directory entry name)."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def is_reference(self) -> bool:
        """True when the bytes live outside W&B storage (``ref`` set)."""
        return self.ref is not None

    @property
    def ref_scheme(self) -> str | None:
        """URL scheme of the reference (``"s3"``, ``"file"``...), or ``None``."""
        return urlparse(self.ref).scheme if self.ref is not None else None

    @property
    def hex_digest(self) -> str | None:
        """Hex content hash (md5 or xxh128 per :attr:`alg`), if there is one.

        ``None`` for references whose digest is an ETag/URI rather than a hash
        of the bytes - those can be neither verified nor content-addressed.
        """
        if not self.has_content_digest:
            return None
        return _b64_to_hex(self.digest)

    @property
    def has_content_digest(self) -> bool:
        """Is :attr:`digest` a hash of the file bytes (so it can be verified)?

        True for stored files and ``file://`` references (the SDK's
        local-file handler records the md5 base64); false for other
        references, whose digest is an ETag or the URI itself.
        """
        if self.ref is not None and self.ref_scheme != "file":
            return False
        return _b64_to_hex(self.digest) is not None


TreeNode: TypeAlias = Literal["dir"] | ManifestEntry
"""A child in :attr:`Manifest.tree`: :data:`DIR` or the file's entry."""


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: valid entries, a directory tree, and what was skipped.

    ``tree`` maps every directory (tuple of components, ``()`` = artifact
    root) to its children sorted by name; a child is either :data:`DIR` or the
    file's :class:`ManifestEntry`.  The root is always present, even for an
    empty artifact, so ``readdir`` of an empty version works.
    """

    entries: Mapping[str, ManifestEntry]
    tree: Mapping[tuple[str, ...], Mapping[str, TreeNode]]
    storage_layout: str | None = None
    storage_policy: str | None = None
    storage_region: str | None = None
    version: int = 1
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """``(path, reason)`` for every entry left out of ``entries``."""
    raw_digests: Mapping[str, str] = field(default_factory=dict)
    """``path -> digest`` for *every* entry with a string digest, skipped or not.

    The server's artifact digest covers all entries, including ones we refuse
    to show, so :meth:`digest` uses this to stay comparable with it.
    """

    def lookup(self, parts: Iterable[str]) -> TreeNode | None:
        """Return :data:`DIR`, the file entry, or ``None`` for a path inside."""
        parts = tuple(parts)
        if parts in self.tree:
            return DIR
        if not parts:
            return None
        return self.tree.get(parts[:-1], {}).get(parts[-1])

    def listdir(self, parts: Iterable[str]) -> Mapping[str, TreeNode] | None:
        """Children of a directory, or ``None`` if it is not a directory."""
        return self.tree.get(tuple(parts))

    @property
    def total_size(self) -> int:
        """Sum of the sizes of the visible files."""
        return sum(e.size for e in self.entries.values())

    def digest(self, algorithm: Alg = "md5") -> str:
        """The artifact digest as W&B computes it (see :func:`artifact_digest`).

        ``algorithm`` is the *artifact's* digest algorithm (the server's
        ``Artifact.digestAlgorithm``), which is not recorded in the manifest.
        """
        return artifact_digest(self.raw_digests, algorithm)


def _b64_to_hex(digest: str) -> str | None:
    """Hex of a base64-encoded 128-bit digest, or ``None`` if it isn't one."""
    try:
        raw = base64.b64decode(digest, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _DIGEST_BYTES:
        return None
    return raw.hex()


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


def _parse_entry(path: str, raw: Any) -> ManifestEntry | str:
    """Build a :class:`ManifestEntry`, or return the reason it's invalid."""
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
    if size < 0:
        return f"negative size: {size}"
    if size > MAX_SIZE:
        return f"size out of range: {size} (more than 2^63-1 bytes)"

    extra = raw.get("extra", {})
    if extra is None:
        extra = {}
    if not isinstance(extra, Mapping):
        return "extra is not an object"
    alg_tag = extra.get("alg")
    if alg_tag is None:
        alg: Alg = "md5"
    elif isinstance(alg_tag, str) and alg_tag in _ALG_TAGS:
        alg = _ALG_TAGS[alg_tag]
    else:
        return f"unsupported digest algorithm {alg_tag!r}"

    ref = raw.get("ref")
    if ref is not None and (not isinstance(ref, str) or not ref):
        return "ref is not a string"

    birth = raw.get("birthArtifactID")
    if birth is not None and not isinstance(birth, str):
        return "birthArtifactID is not a string"

    hex_digest = _b64_to_hex(digest)
    is_content_hash = ref is None or urlparse(ref).scheme == "file"
    if is_content_hash and hex_digest is None:
        # A stored file must be content-addressable, or we can neither cache
        # nor verify it.
        return f"digest is not a base64 128-bit hash: {digest!r}"

    return ManifestEntry(
        path=path,
        digest=digest,
        size=size,
        alg=alg,
        md5_hex=hex_digest if (alg == "md5" and is_content_hash) else None,
        birth_artifact_id=birth,
        ref=ref,
        extra=MappingProxyType(dict(extra)),
    )


class _Contents(dict):  # type: ignore[type-arg]
    """Marks a JSON object so duplicate keys can be reported after parsing."""

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the *last* value of a repeated key; so does the SDK
    # (it parses with a plain JSON parser).  Keep that, but remember which
    # keys repeated so the earlier copies can be reported as skipped.
    out = _Contents()
    dups: list[str] = []
    for k, v in pairs:
        if k in out:
            dups.append(k)
        out[k] = v
    out.duplicates = dups
    return out


def parse_manifest(data: Mapping[str, Any] | bytes | str) -> Manifest:
    """Parse a version-1 manifest into a :class:`Manifest`.

    Accepts the decoded dict or the raw JSON (bytes/str).  Only raw JSON lets
    us see repeated keys in ``contents``; for those the *last* occurrence wins
    (what ``json.loads``, and therefore ``artifact.download()``, uses) and
    each earlier one is recorded in ``skipped``.

    Per-entry problems are logged with ``logging.warning`` and recorded in
    :attr:`Manifest.skipped`; see :func:`_check_path` and the reasons in
    ``_parse_entry`` for the list.  When a file and a folder share a name
    (``"a"`` and ``"a/b"``), the folder is kept and the file skipped: a file
    can't also be a directory, and keeping the folder loses fewer entries.

    Raises:
        ValueError: the input is not JSON, not an object, not manifest
            version 1, or has no ``contents`` object.
    """
    if isinstance(data, (bytes, bytearray, str)):
        try:
            doc = json.loads(data, object_pairs_hook=_pairs_hook)
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
    if not isinstance(contents, Mapping):
        raise ValueError("manifest has no 'contents' object")

    policy_cfg = doc.get("storagePolicyConfig")
    if not isinstance(policy_cfg, Mapping):
        policy_cfg = {}
    storage_policy = doc.get("storagePolicy")

    skipped: list[tuple[str, str]] = []

    def skip(path: str, reason: str) -> None:
        log.warning("manifest: skipping entry %r: %s", path, reason)
        skipped.append((path, reason))

    for dup in getattr(contents, "duplicates", ()):
        skip(dup, "duplicate path (a later entry with the same path wins)")

    raw_digests: dict[str, str] = {}
    candidates: dict[str, ManifestEntry] = {}
    for path, raw in contents.items():
        if not isinstance(path, str):
            skip(repr(path), "path is not a string")
            continue
        if isinstance(raw, Mapping) and isinstance(raw.get("digest"), str):
            raw_digests[path] = raw["digest"]
        parsed = _parse_entry(path, raw)
        if isinstance(parsed, str):
            skip(path, parsed)
        else:
            candidates[path] = parsed

    dirs: set[tuple[str, ...]] = {()}
    for entry in candidates.values():
        parts = entry.parts
        for i in range(1, len(parts)):
            dirs.add(parts[:i])

    entries: dict[str, ManifestEntry] = {}
    for path, entry in candidates.items():
        if entry.parts in dirs:
            skip(path, "file/folder clash: a folder with the same path exists")
        else:
            entries[path] = entry

    children: dict[tuple[str, ...], dict[str, TreeNode]] = {d: {} for d in dirs}
    for d in dirs:
        if d:
            children[d[:-1]][d[-1]] = DIR
    for entry in entries.values():
        parts = entry.parts
        children[parts[:-1]][parts[-1]] = entry
    tree = {
        d: MappingProxyType(dict(sorted(kids.items()))) for d, kids in sorted(children.items())
    }

    def opt_str(v: Any) -> str | None:
        return v if isinstance(v, str) else None

    return Manifest(
        entries=MappingProxyType(entries),
        tree=MappingProxyType(tree),
        storage_layout=opt_str(policy_cfg.get("storageLayout")),
        storage_policy=opt_str(storage_policy),
        storage_region=opt_str(policy_cfg.get("storageRegion")),
        version=1,
        skipped=skipped,
        raw_digests=MappingProxyType(raw_digests),
    )


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
