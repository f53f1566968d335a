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

Project artifacts: ``@<entity>`` is an ``Org``, a project a ``Registry``, and its artifact
types ``TypeDir`` folders holding its collections (``names.py`` says why the slots are
shared). A collection's ``type`` is where it is shown, not what it is (not in its key).
A link's target is relative (``target``) or absolute under the mount point
(``target_at(mountpoint)``, what the mount serves by default, so that a copied link still
finds the version).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import ClassVar, Hashable, Union

from wandbfs.model.manifest import ManifestEntry
from wandbfs.model.names import home_entity

Key = tuple[Hashable, ...]
VersionKey = tuple[str, str, str, str, int]
"""``("ver", org, reg, coll, idx)``: one version, whichever name it was reached by."""

__all__ = ["AliasLink", "Collection", "File", "Folder", "InVersion", "Key", "Link", "Org", "Place", "QualifiedLink",
           "Redirect", "Registry", "TypeDir", "collection_dir", "RegistryPrefixLink", "Root", "VersionDir", "VersionKey"]


class _Place:
    @property
    def scope(self) -> tuple[str, ...]:
        """The ``refresh`` prefix (org, registry, collection) this entry lies under."""
        return tuple(getattr(self, f) for f in ("org", "reg", "coll") if hasattr(self, f))


class _Dir(_Place):
    kind: ClassVar[str] = "dir"
    mode: ClassVar[int] = 0o555
    immutable: ClassVar[bool] = False


def collection_dir(org: str, reg: str, coll: str, type_name: str = "") -> tuple[str, ...]:
    """A collection's folder, relative to the mount: ``org/reg/coll``, and in an ``@entity``
    home ``@entity/project/<type>/coll``."""
    if home_entity(org) is not None and type_name:
        return (org, reg, type_name, coll)
    return (org, reg, coll)


class _Link(_Place):
    kind: ClassVar[str] = "symlink"
    mode: ClassVar[int] = 0o777
    immutable: ClassVar[bool] = False

    def _ends(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(the folder the link is in, what it points to), relative to the mount."""
        raise NotImplementedError

    @property
    def target(self) -> str:
        """Relative to the link's folder (``vN``, ``coll/vN``, ...)."""
        at, to = self._ends()
        return posixpath.relpath("/".join(to), "/".join(at) or ".")

    def target_at(self, mountpoint: str | None) -> str:
        """Absolute under ``mountpoint`` (relative when None): ``cp -r``, ``rsync -a`` or
        ``tar`` of the link keep a link that still reaches the version."""
        if mountpoint is None:
            return self.target
        return posixpath.join(mountpoint, *self._ends()[1])


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
class TypeDir(_Dir):
    """``@entity/<project>/<type>``: a project's collections of one artifact type."""

    org: str
    reg: str
    type: str

    @property
    def key(self) -> Key:
        return ("type", self.org, self.reg, self.type)


@dataclass(frozen=True)
class Collection(_Dir):
    org: str
    reg: str
    coll: str
    type: str = field(default="", compare=False, kw_only=True)
    """Its artifact type folder in an ``@entity`` home ("" in a registry)."""

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
    type: str = field(default="", compare=False, kw_only=True)
    """The collection's type folder in an ``@entity`` home (see ``collection_dir``)."""

    @property
    def key(self) -> Key:
        return ("alias", self.org, self.reg, self.coll, self.alias)

    def _ends(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        folder = collection_dir(self.org, self.reg, self.coll, self.type)
        return folder, folder + (f"v{self.idx}",)

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

    def _ends(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return (self.org, self.reg), collection_dir(self.org, self.reg, self.coll, self.type) + (f"v{self.idx}",)


@dataclass(frozen=True)
class RegistryPrefixLink(_Link):
    """``<org>/wandb-registry-<R> -> <R>`` (unlisted: the registry's project name)."""

    org: str
    reg: str

    @property
    def key(self) -> Key:
        return ("regprefix", self.org, self.reg)

    def _ends(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return (self.org,), (self.org, self.reg)


@dataclass(frozen=True)
class Redirect(_Link):
    """An unlisted name that is another folder's spelling (pasted project-artifact names):
    ``<entity> -> @<entity>`` at the root, ``<org>/<project> -> @<org>/<project>`` (an org
    and an entity of one name), ``@<entity>/wandb-registry-<R> -> <org>/<R>`` (a registry
    stays a registry). ``at`` is the folder it is in, ``to`` what it names."""

    at: tuple[str, ...]
    name: str
    to: tuple[str, ...]

    @property
    def key(self) -> Key:
        return ("redirect", self.at, self.name)

    def _ends(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return self.at, self.to


Link = _Link
"""Any symlink node (its ``target`` / ``target_at``)."""

Place = Union[Root, Org, Registry, TypeDir, Collection, VersionDir, Folder, File, AliasLink, RegistryPrefixLink,
              Redirect]
"""What an inode is (``QualifiedLink`` is an ``AliasLink``)."""
