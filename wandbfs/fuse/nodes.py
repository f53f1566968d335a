"""What each inode is: one small frozen type per kind of tree entry.

``/<org>/<registry>/<collection>/{vN, alias -> vN}/<folders and files>``, plus two links
found only by lookup: ``<org>/wandb-registry-<R> -> <R>`` and ``<R>/<coll>:<alias|vN> ->
<coll>/vN``. Each type carries its own fields (no level strings, no dicts) and says what
the kernel sees: its ``kind`` ("dir", "file", "symlink"), ``mode``, and whether its contents
never change (everything inside a version).

``key`` names the object by what it is, not by its path; the inode number is a hash of it
(``inodes.inode_for``), so these tuples must stay exactly as they are: the same (version,
path) has had the same inode in every mount, and tools comparing ``st_ino`` rely on it.
An alias link's target version is not part of its key: when the alias moves, the table
keeps the inode and swaps in a copy with the new ``idx``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Hashable, Union

from wandbfs.model.manifest import ManifestEntry

Key = tuple[Hashable, ...]
VersionKey = tuple[str, str, str, str, int]
"""``("ver", org, reg, coll, idx)``: one version, whichever name it was reached by."""

__all__ = ["AliasLink", "Collection", "File", "Folder", "InVersion", "Key", "Org", "Place", "QualifiedLink",
           "Registry", "RegistryPrefixLink", "Root", "VersionDir", "VersionKey"]


class _Place:
    @property
    def scope(self) -> tuple[str, ...]:
        """The ``refresh`` prefix (org, registry, collection) this entry lies under."""
        return tuple(getattr(self, f) for f in ("org", "reg", "coll") if hasattr(self, f))


class _Dir(_Place):
    kind: ClassVar[str] = "dir"
    mode: ClassVar[int] = 0o555
    immutable: ClassVar[bool] = False


class _Link(_Place):
    kind: ClassVar[str] = "symlink"
    mode: ClassVar[int] = 0o777
    immutable: ClassVar[bool] = False


@dataclass(frozen=True)
class Root(_Dir):
    @property
    def key(self) -> Key:
        return ("root",)


@dataclass(frozen=True)
class Org(_Dir):
    org: str

    @property
    def key(self) -> Key:
        return ("org", self.org)


@dataclass(frozen=True)
class Registry(_Dir):
    org: str
    reg: str

    @property
    def key(self) -> Key:
        return ("reg", self.org, self.reg)


@dataclass(frozen=True)
class Collection(_Dir):
    org: str
    reg: str
    coll: str

    @property
    def key(self) -> Key:
        return ("coll", self.org, self.reg, self.coll)


@dataclass(frozen=True)
class InVersion(_Place):
    """Anything inside one version: the ``vN`` directory itself (``parts == ()``), a folder
    or a file. Immutable: versions never change."""

    org: str
    reg: str
    coll: str
    idx: int
    parts: tuple[str, ...] = ()
    immutable: ClassVar[bool] = True

    @property
    def key(self) -> Key:
        return ("path", self.org, self.reg, self.coll, self.idx, "/".join(self.parts))

    @property
    def version_key(self) -> VersionKey:
        return ("ver", self.org, self.reg, self.coll, self.idx)

    def child(self, name: str, entry: ManifestEntry | None = None) -> "Folder | File":
        """The folder (``entry`` None) or file ``name`` directly inside this one."""
        parts = self.parts + (name,)
        if entry is None:
            return Folder(self.org, self.reg, self.coll, self.idx, parts)
        return File(self.org, self.reg, self.coll, self.idx, parts, entry=entry)


@dataclass(frozen=True)
class VersionDir(InVersion):
    kind: ClassVar[str] = "dir"
    mode: ClassVar[int] = 0o555

    @property
    def key(self) -> Key:
        return self.version_key


@dataclass(frozen=True)
class Folder(InVersion):
    kind: ClassVar[str] = "dir"
    mode: ClassVar[int] = 0o555


@dataclass(frozen=True)
class File(InVersion):
    entry: ManifestEntry = field(kw_only=True)
    kind: ClassVar[str] = "file"
    mode: ClassVar[int] = 0o444

    @property
    def size(self) -> int:
        return self.entry.size


@dataclass(frozen=True)
class AliasLink(_Link):
    """``<coll>/<alias> -> vN``: re-resolved after ``--alias-ttl``; lineage names a read
    through it by the alias."""

    org: str
    reg: str
    coll: str
    alias: str
    idx: int

    @property
    def key(self) -> Key:
        return ("alias", self.org, self.reg, self.coll, self.alias)

    @property
    def target(self) -> str:
        return f"v{self.idx}"

    @property
    def version_key(self) -> VersionKey:
        return ("ver", self.org, self.reg, self.coll, self.idx)


@dataclass(frozen=True)
class QualifiedLink(AliasLink):
    """``<R>/<coll>:<alias|vN> -> <coll>/vN`` (unlisted, the Registry UI's names); ``name``
    is the link's own name, ``alias`` the token after the colon."""

    name: str = field(kw_only=True)

    @property
    def key(self) -> Key:
        return ("qual", self.org, self.reg, self.name)

    @property
    def target(self) -> str:
        return f"{self.coll}/v{self.idx}"


@dataclass(frozen=True)
class RegistryPrefixLink(_Link):
    """``<org>/wandb-registry-<R> -> <R>`` (unlisted: the registry's project name)."""

    org: str
    reg: str

    @property
    def key(self) -> Key:
        return ("regprefix", self.org, self.reg)

    @property
    def target(self) -> str:
        return self.reg


Place = Union[Root, Org, Registry, Collection, VersionDir, Folder, File, AliasLink, RegistryPrefixLink]
"""What an inode is (``QualifiedLink`` is an ``AliasLink``)."""
