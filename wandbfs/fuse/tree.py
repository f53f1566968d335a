"""The tree: which typed nodes a directory holds, and which one a name finds.

Listings come from the catalog (orgs, registries, collections, versions and aliases) and,
inside a version, from its manifest; each child becomes a node of the inode table
(``nodes.py`` says what each kind is). A lookup asks the catalog for the one name it wants
(a collection, an alias or ``vN`` by name, not by listing the level), so a fresh mount
resolves a path in a request or two, and a known ``vN`` in none. Some names are found only
by lookup, never listed:
``wandb-registry-<R>`` and ``<coll>:<alias|vN>`` (the Registry UI's names), and ``vN`` or
an alias the listing does not show yet. A listing or a lookup also says what is likely
next: the warm-ups hear about it.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from wandbfs.catalog.catalog import Catalog
from wandbfs.fuse.inodes import InodeTable, Listing, Node
from wandbfs.fuse.nodes import (AliasLink, Collection, InVersion, Org, QualifiedLink, Redirect, Registry,
                                RegistryPrefixLink, Root, TypeDir, VersionDir)
from wandbfs.fuse.warmups import Warmups
from wandbfs.model.manifest import DIR, ManifestEntry
from wandbfs.model.names import (ENTITY_MARK, REGISTRY_PREFIX, entity_home, home_entity, is_safe_name,
                                  parse_version_token, split_qualified)
from wandbfs.sdk.client import BackendError, CollectionInfo, NotFound, VersionDetail

log = logging.getLogger(__name__)

__all__ = ["Tree"]


class Tree:
    """Builds the nodes below a node, from the catalog; the handlers only ask it."""

    def __init__(self, catalog: Catalog, table: InodeTable, warmups: Warmups) -> None:
        self.catalog = catalog
        self.table = table
        self.warmups = warmups

    async def detail(self, node: Node, looking_up: str | None = None) -> VersionDetail:
        """The version (with its manifest) a node inside a version belongs to.
        ``looking_up``: a name looked up at the version's top (see ``Warmups.early_url``)."""
        p = node.place
        assert isinstance(p, InVersion), p
        early = None
        if looking_up is not None:
            def early() -> None:
                self.warmups.early_url(p.org, p.reg, p.coll, p.idx, looking_up)
        return await self.catalog.version(p.org, p.reg, p.coll, p.idx, on_remote=early)

    async def children(self, node: Node, want: str | None = None) -> Listing:
        """Everything listed in a directory (unlisted names are only found by lookup).

        ``want``: the name a lookup looks for; a stale listing without it is refreshed first
        (bounded), since the name may be new."""
        p, now = node.place, time.time()
        if isinstance(p, Root):
            orgs = [(o, self.table.upsert(Org(o), now)) for o in sorted(await self.catalog.orgs(want=want))]
            if want is not None:   # a lookup: an @entity is looked up by itself (``_home``)
                return orgs
            return orgs + [(h, self.table.upsert(Org(h), now)) for h in await self._homes()]
        if isinstance(p, Org):
            regs = await self.catalog.registries(p.org, want=want)
            return [(r, self.table.upsert(Registry(p.org, r), info.created_at or now))
                    for r, info in sorted(regs.items())]
        if isinstance(p, Registry) and home_entity(p.org) is not None:   # a project: its types
            colls = await self.catalog.collections(p.org, p.reg, want=None)
            types = {info.type: info.created_at for info in colls.values() if is_safe_name(info.type)}
            return [(t, self.table.upsert(TypeDir(p.org, p.reg, t), created or now)) for t, created in sorted(types.items())]
        if isinstance(p, (Registry, TypeDir)):
            colls = await self.catalog.collections(p.org, p.reg, want=want)
            kind = p.type if isinstance(p, TypeDir) else ""
            return [(c, self.table.upsert(Collection(p.org, p.reg, c, type=kind), info.created_at or now))
                    for c, info in sorted(colls.items()) if not kind or info.type == kind]
        if isinstance(p, Collection):
            return await self._versions(p)
        if isinstance(p, InVersion):
            detail = await self.detail(node)
            listing = detail.manifest.listdir(p.parts)   # nodes made as readdir lists them
            return self.table.folder(p, listing, detail.created_at) if listing is not None else []
        return []   # links have no children

    async def _versions(self, p: Collection) -> Listing:
        vers = await self.catalog.versions(p.org, p.reg, p.coll)
        out = [(f"v{i}", self.table.upsert(VersionDir(p.org, p.reg, p.coll, i), v.created_at))
               for i, v in sorted(vers.versions.items())]
        out += [(a, self.table.upsert(AliasLink(p.org, p.reg, p.coll, a, i, type=p.type), vers.versions[i].created_at))
                for a, i in sorted(vers.aliases.items()) if i in vers.versions]
        self.warmups.collection_listed(p.org, p.reg, p.coll, vers.versions)
        return out

    def _in_version(self, parent: InVersion, detail: VersionDetail, name: str, child: ManifestEntry | str,
                    ix: int) -> Node:
        """A folder (``child`` is ``DIR``) or the file ``ix`` of the manifest's table."""
        if isinstance(child, ManifestEntry):   # no File place per file; the node keeps the table's index
            return self.table.upsert_file(parent, detail.manifest.entries, detail.created_at, ix)
        return self.table.upsert(parent.child(name), detail.created_at)

    async def child(self, parent: Node, name: str) -> Node | None:
        """The node ``name`` finds in ``parent``, listed or not; None if there is none."""
        p = parent.place
        if isinstance(p, Root) and name.startswith(ENTITY_MARK):
            return await self._home(name)
        if isinstance(p, Root) and name not in await self.catalog.known_orgs() \
                and await self.catalog.known_entity(name):   # a pasted <entity>/..., known: no W&B
            return self.table.upsert(Redirect((), name, (entity_home(name),)), time.time())
        if isinstance(p, Org) and name.startswith(REGISTRY_PREFIX):
            return await self._registry_by_project(p, name)
        if isinstance(p, Registry):
            qual = split_qualified(name)
            if qual is not None:
                return await self._qualified(p, name, *qual)
            if home_entity(p.org) is not None:
                return await self._type(p, name)
            return await self._collection(p, name)
        if isinstance(p, TypeDir):
            return await self._collection(p, name)
        if isinstance(p, Collection):
            return await self._version(p, name)
        if isinstance(p, InVersion):
            detail = await self.detail(parent, looking_up=None if p.parts else name)
            found = detail.manifest.locate(p.parts + (name,))
            if found is None:
                return None
            child, ix = found
            if child != DIR:
                # A file is being looked up, so an open is likely: get the version's signed
                # URLs now (listings alone never cost a URL request).
                self.warmups.file_looked_up(detail, child)
            return self._in_version(p, detail, name, child, ix)
        for child_name, node in await self.children(parent, want=name):
            if child_name == name:
                return node
        if isinstance(p, Root):          # a pasted project-artifact name: <entity>/...
            return await self._redirect((), name, name)
        if isinstance(p, Org) and home_entity(p.org) is None:   # an org and an entity of one name
            if is_safe_name(name) and not name.startswith("."):
                await self.catalog.registry_access(p.org, name)      # unlisted may be restricted: EACCES
            return await self._redirect((p.org,), name, p.org, name)
        return None

    # ---- project artifacts (@entity homes) ------------------------------------------------
    async def _homes(self) -> list[str]:
        """``@<entity>`` for the viewer's entities; ``ls`` of the root still lists the orgs
        when W&B does not answer this."""
        try:
            return [entity_home(e) for e in await self.catalog.entities() if is_safe_name(entity_home(e))]
        except (BackendError, ValueError) as e:
            log.info("listing the entities at the root: %s", e)
            return []

    async def _home(self, name: str) -> Node | None:
        """``@<entity>``: an entity W&B knows."""
        entity = home_entity(name)
        if entity is None or not await self.catalog.entity_exists(entity):
            return None
        return self.table.upsert(Org(name), time.time())

    async def _redirect(self, at: tuple[str, ...], name: str, entity: str, project: str | None = None) -> Node | None:
        """A link from a pasted spelling to its ``@entity`` folder (or ``project`` in it), if
        W&B has that entity (and that project)."""
        try:
            home = entity_home(entity)
        except ValueError:
            return None
        if name.startswith(".") or not is_safe_name(home):
            return None   # no entity's name: not worth a W&B request (desktop probes)
        to = (home,) if project is None else (home, project)
        try:
            if not await self.catalog.entity_exists(entity):
                return None
            if project is not None and project not in await self.catalog.registries(home, want=project):
                return None
        except NotFound:
            return None
        return self.table.upsert(Redirect(at, name, to), time.time())

    async def _registry_by_project(self, p: Org, name: str) -> Node | None:
        """``<org>/wandb-registry-<R>``; from an org's ``@entity`` home too (a registry stays
        a registry: it is shown in its org)."""
        reg = name[len(REGISTRY_PREFIX):]
        entity = home_entity(p.org)
        org = p.org if entity is None else self.catalog.client.org_of_entity(entity)
        if org is None or reg not in await self.catalog.registries(org, want=reg):
            return None
        if entity is None:
            return self.table.upsert(RegistryPrefixLink(org, reg), time.time())
        return self.table.upsert(Redirect((p.org,), name, (org, reg)), time.time())

    async def _type(self, p: Registry, name: str) -> Node | None:
        """An artifact type folder of a project: a type some collection of it has."""
        colls = await self.catalog.collections(p.org, p.reg, want_type=name)
        created = [c.created_at for c in colls.values() if c.type == name]
        return self.table.upsert(TypeDir(p.org, p.reg, name), min(created) or time.time()) if created else None

    async def _type_of(self, org: str, reg: str, coll: str, info: CollectionInfo) -> str:
        """A project collection's type ("" in a registry), from the project's listing when
        the lookup did not say it."""
        if home_entity(org) is None or info.type:
            return info.type if home_entity(org) is not None else ""
        listed = await self.catalog.collections(org, reg, want=coll)
        return listed[coll].type if coll in listed else ""

    async def _collection(self, p: Registry | TypeDir, name: str) -> Node | None:
        """A collection, looked up by name (the registry is not listed for it); in a type
        folder, only one of that type."""
        try:
            info = await self.catalog.collection(p.org, p.reg, name)
            kind = await self._type_of(p.org, p.reg, name, info)
        except NotFound:
            if isinstance(p, Registry) and home_entity(p.org) is None and is_safe_name(name) \
                    and not name.startswith("."):
                # W&B's collection search leaves out a registry closed to the key: ask (the
                # answer is kept list_ttl) whether that is why, for EACCES rather than ENOENT
                await self.catalog.registry_access(p.org, p.reg)
            return None
        if isinstance(p, TypeDir) and kind != p.type:
            return None
        return self.table.upsert(Collection(p.org, p.reg, name, type=kind), info.created_at or time.time())

    async def _qualified(self, p: Registry, name: str, coll: str, token: str) -> Node | None:
        """``<coll>:<alias|vN>``, a link to ``<coll>/vN`` (``<type>/<coll>/vN`` in a project)."""
        try:
            info = await self.catalog.collection(p.org, p.reg, coll)
            v = await self.catalog.find_version(p.org, p.reg, coll, token)
            kind = await self._type_of(p.org, p.reg, coll, info)
        except NotFound:
            return None
        return self.table.upsert(QualifiedLink(p.org, p.reg, coll, token, v.index, name=name, type=kind), time.time())

    async def _version(self, p: Collection, name: str) -> Node | None:
        """``vN`` (a directory) or an alias (a link to it), listed yet or not: looked up by
        name, so neither needs the whole listing (a known ``vN`` needs no W&B at all)."""
        try:
            ref = parse_version_token(name)
        except ValueError:
            return None
        try:
            v = await self.catalog.find_version(p.org, p.reg, p.coll, name)
        except NotFound:
            return None
        if ref.kind == "index":
            return self.table.upsert(VersionDir(p.org, p.reg, p.coll, v.index), v.created_at)
        return self.table.upsert(AliasLink(p.org, p.reg, p.coll, name, v.index, type=p.type), v.created_at)

    def gone(self, prefix: tuple[str, ...]) -> list[tuple[int, str]]:
        """(parent inode, name) of the versions, aliases and collections under ``prefix``
        the kernel knows that the refreshed listings no longer have (deleted, renamed): their
        cached entries are dropped, so the names go now rather than after their TTLs."""
        out = []
        for node in self.table.nodes():
            p = node.place
            if not isinstance(p, (VersionDir, AliasLink, Collection)) or p.scope[:len(prefix)] != prefix[:len(p.scope)]:
                continue
            if isinstance(p, Collection):   # in an @entity home, under its type's folder
                parent_key = ("type", p.org, p.reg, p.type) if p.type else ("reg", p.org, p.reg)
                name, listed = p.coll, self.catalog.listed_collection(p.org, p.reg, p.coll)
            elif isinstance(p, QualifiedLink):   # <coll>:<token>, in the registry's folder
                parent_key, name = ("reg", p.org, p.reg), p.name
                listed = self.catalog.listed_version(p.org, p.reg, p.coll, p.alias)
            else:
                parent_key = ("coll", p.org, p.reg, p.coll)
                name = f"v{p.idx}" if isinstance(p, VersionDir) else p.alias
                listed = self.catalog.listed_version(p.org, p.reg, p.coll, name)
            parent = self.table.by_key(parent_key)
            if listed is False and parent is not None:
                out.append((parent.inode, name))
        return out

    async def refresh_alias(self, node: Node) -> None:
        """Re-resolve an alias symlink (alias-TTL cached, see ``Catalog.find_version``)."""
        p = node.place
        assert isinstance(p, AliasLink), p
        idx = await self.catalog.resolve(p.org, p.reg, p.coll, p.alias)
        if idx != p.idx:
            log.info("alias %s:%s moved v%d -> v%d", p.coll, p.alias, p.idx, idx)
            node.place = dataclasses.replace(p, idx=idx)
