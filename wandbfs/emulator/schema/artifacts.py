"""Collections, memberships, aliases, artifact versions and their files."""

from __future__ import annotations

import base64
from typing import Any

from wandbfs.emulator.executor import Node
from wandbfs.emulator.records import VIEWER, Artifact, Collection, Membership, gid
from wandbfs.emulator.schema.paging import connection, match_filter, order_by, version_doc, _json
from wandbfs.emulator.schema.context import Ctx, shows


@shows(Collection)
class CollectionNode(Node):
    interfaces = ("ArtifactCollection",)

    def __init__(self, ctx: Ctx, c: Collection) -> None:
        super().__init__("ArtifactSequence" if c.kind == "sequence" else "ArtifactPortfolio")
        self.ctx, self.c = ctx, c

    def f_id(self) -> str: return self.c.id
    def f_name(self) -> str: return self.c.name
    def f_description(self) -> str: return self.c.description
    def f_createdAt(self) -> str: return self.c.created_at
    def f_updatedAt(self) -> str: return self.c.updated_at
    def f_state(self) -> str: return self.c.state
    def f_digestAlgorithm(self) -> str: return "MANIFEST_MD5"

    def f_project(self) -> Node:
        return self.ctx.node(self.ctx.store.project(self.c.entity, self.c.project))  # type: ignore[arg-type]

    def f_defaultArtifactType(self) -> Node: return Node("ArtifactType", {"name": self.c.type_name})

    def f_tags(self, **_: Any) -> Node:
        return connection(self.c.tags, tag_node)

    def f_aliases(self, after: str | None = None, first: int | None = None, **_: Any) -> Node:
        pairs = [(m, a) for m in self.ctx.store.memberships_of(self.c.id) for a in m.aliases]
        return connection(pairs, lambda p: AliasNode(self.ctx, self.c, p[0], p[1]), after, first)

    def _members(self, filters: Any, order: str | None = None) -> list[Membership]:
        """Newest first unless ``order`` says otherwise (``-createdAt``, ``+version_index``, ...)."""
        flt, store = _json(filters), self.ctx.store
        ms = [m for m in reversed(store.memberships_of(self.c.id)) if match_filter(version_doc(store, m), flt)]
        return order_by(ms, lambda m: version_doc(store, m), order)

    def f_artifacts(self, after: str | None = None, first: int | None = None, order: str | None = None,
                    filters: Any = None, **_: Any) -> Node:
        return connection(self._members(filters, order),
                          lambda m: ArtifactNode(self.ctx, self.ctx.store.artifacts[m.artifact_id], m),
                          after, first, edge_extra=lambda m: {"version": f"v{m.version_index}"})

    def f_artifactMemberships(self, after: str | None = None, first: int | None = None,
                              filters: Any = None, order: str | None = None, **_: Any) -> Node:
        return connection(self._members(filters, order), lambda m: MembershipNode(self.ctx, m), after, first)

    def f_artifactMembership(self, aliasName: str) -> Node | None:
        m = self.ctx.store.membership_by_alias(self.c, aliasName)
        return MembershipNode(self.ctx, m) if m else None

    def f_latestArtifact(self) -> Node | None:
        ms = self.ctx.store.memberships_of(self.c.id)
        if not ms:
            return None
        return ArtifactNode(self.ctx, self.ctx.store.artifacts[ms[-1].artifact_id], ms[-1])


def tag_node(name: str) -> Node:
    """A collection tag (W&B's ``Tag``: its id is stable per name)."""
    return Node("Tag", {"id": gid("Tag", name), "name": name})


def aliases_as_sent(m: Membership) -> list[str]:
    """A membership's aliases as W&B sends them: its own plus the collection's ``vN``.

    The SDK takes ``Artifact.version`` from that ``vN`` (``alias_is_version_index`` in
    wandb/sdk/artifacts/artifact.py) and only falls back to the source sequence's index
    without it, so a version linked into a new collection must say ``v0`` there, not ``v3``.
    """
    return [*m.aliases, f"v{m.version_index}"]


class AliasNode(Node):
    typename = "ArtifactAlias"

    def __init__(self, ctx: Ctx, c: Collection, m: Membership, alias: str) -> None:
        super().__init__()
        self.ctx, self.c, self.m, self.alias = ctx, c, m, alias

    def f_id(self) -> str: return gid("ArtifactAlias", f"{self.m.id}:{self.alias}")
    def f_alias(self) -> str: return self.alias
    def f_artifactCollection(self) -> Node: return CollectionNode(self.ctx, self.c)
    def f_artifactCollectionName(self) -> str: return self.c.name

    def f_artifact(self) -> Node:
        return ArtifactNode(self.ctx, self.ctx.store.artifacts[self.m.artifact_id], self.m)


@shows(Membership)
class MembershipNode(Node):
    typename = "ArtifactCollectionMembership"

    def __init__(self, ctx: Ctx, m: Membership) -> None:
        super().__init__()
        self.ctx, self.m = ctx, m
        self.c = ctx.store.collections[m.collection_id]

    def f_id(self) -> str: return self.m.id
    def f_versionIndex(self) -> int: return self.m.version_index
    def f_createdAt(self) -> str: return self.m.created_at
    def f_aliases(self) -> list[Node]:
        return [AliasNode(self.ctx, self.c, self.m, a) for a in aliases_as_sent(self.m)]
    def f_artifactCollection(self) -> Node: return CollectionNode(self.ctx, self.c)

    def f_artifact(self) -> Node:
        return ArtifactNode(self.ctx, self.ctx.store.artifacts[self.m.artifact_id], self.m)

    def f_files(self, names: list[str] | None = None, after: str | None = None,
                first: int | None = None, **_: Any) -> Node:
        return ArtifactNode(self.ctx, self.ctx.store.artifacts[self.m.artifact_id], self.m).f_files(
            names=names, after=after, first=first)


@shows(Artifact)
class ArtifactNode(Node):
    typename = "Artifact"

    def __init__(self, ctx: Ctx, a: Artifact, via: Membership | None = None) -> None:
        super().__init__()
        self.ctx, self.a, self.via = ctx, a, via

    def f_id(self) -> str: return self.a.id
    def f_versionIndex(self) -> int | None: return self.a.version_index
    def f_artifactType(self) -> Node: return Node("ArtifactType", {"name": self.a.type_name, "id": gid("ArtifactType", self.a.type_name)})
    def f_description(self) -> str | None: return self.a.description
    def f_metadata(self) -> str: return self.a.metadata
    def f_ttlDurationSeconds(self) -> int: return -1
    def f_ttlIsInherited(self) -> bool: return True
    def f_tags(self) -> list[Any]: return []
    def f_historyStep(self) -> int | None: return self.a.history_step
    def f_state(self) -> str: return self.a.state
    def f_size(self) -> int: return self.a.size
    def f_digest(self) -> str: return self.a.digest
    def f_digestAlgorithm(self) -> str: return "MANIFEST_MD5"
    def f_commitHash(self) -> str | None: return self.a.digest[:20] if self.a.state == "COMMITTED" else None
    def f_fileCount(self) -> int: return self.a.file_count
    def f_createdAt(self) -> str: return self.a.created_at
    def f_updatedAt(self) -> str: return self.a.updated_at
    def f_labels(self) -> None: return None

    def f_artifactSequence(self) -> Node:
        return CollectionNode(self.ctx, self.ctx.store.collection_by_id(self.a.seq_id))  # type: ignore[arg-type]

    def f_aliases(self) -> list[Node]:
        out = []
        for m in self.ctx.store.memberships.values():
            if m.artifact_id == self.a.id:
                c = self.ctx.store.collections[m.collection_id]
                out.extend(AliasNode(self.ctx, c, m, al) for al in aliases_as_sent(m))
        return out

    def f_artifactMemberships(self, **_: Any) -> Node:
        ms = [m for m in self.ctx.store.memberships.values() if m.artifact_id == self.a.id]
        return connection(ms, lambda m: MembershipNode(self.ctx, m))

    def f_currentManifest(self) -> Node:
        md5 = self.a.manifest_md5
        file = Node("File", {"directUrl": self.ctx.manifest_url(md5) if md5 else None,
                             "id": gid("File", f"manifest:{self.a.id}")})
        return Node("ArtifactManifest", {"id": gid("ArtifactManifest", self.a.id), "file": file})

    def f_files(self, names: list[str] | None = None, after: str | None = None,
                first: int | None = None, **_: Any) -> Node:
        """The version's files by path; ``names``: only those (``Artifact.files(names=...)``)."""
        contents = self.ctx.store.contents(self.a)   # parsed once per manifest, not per page
        entries = contents.items
        if names:
            entries = sorted((n, contents.by_path[n]) for n in set(names) if n in contents.by_path)
        return connection(entries, lambda e: FileNode(self.ctx, self.a, e[0], e[1]), after, first)

    def f_filesByManifestEntries(self, entries: list[dict[str, Any]] | None = None,
                                 after: str | None = None, first: int | None = None, **_: Any) -> Node:
        items = [(e.get("name"), {"digest": e.get("digest")}) for e in entries or []]
        return connection(items, lambda e: FileNode(self.ctx, self.a, e[0], e[1]), after, first)

    def f_createdBy(self) -> Node | None:
        """The run that logged it, else the user who created it: W&B's ``ArtifactCreator`` is
        ``Run | User`` and never null (the SDK's ArtifactCreatedBy model takes either)."""
        r = self.ctx.store.run(*self.a.created_by) if self.a.created_by else None
        if r is not None:
            return self.ctx.node(r)
        entity = self.a.created_by[0] if self.a.created_by else VIEWER
        return Node("User", {"id": gid("User", entity), "name": entity, "username": entity})

    def f_usedBy(self, **_: Any) -> Node:
        runs = [self.ctx.store.run_by_id(u.run_id) for u in self.ctx.store.uses if u.artifact_id == self.a.id]
        return connection([r for r in runs if r], lambda r: self.ctx.node(r))


def b64_to_hex(d: str) -> str:
    return base64.b64decode(d).hex()


class FileNode(Node):
    typename = "File"

    def __init__(self, ctx: Ctx, a: Artifact, name: str, entry: dict[str, Any]) -> None:
        super().__init__()
        self.ctx, self.a, self.name, self.entry = ctx, a, name, entry

    @property
    def md5hex(self) -> str | None:
        try:
            return b64_to_hex(self.entry["digest"]) if not self.entry.get("ref") else None
        except Exception:  # noqa: BLE001 - a malformed digest has no blob
            return None

    def f_id(self) -> str: return gid("File", f"{self.a.id}:{self.name}")
    def f_name(self) -> str: return self.name
    def f_displayName(self) -> str: return self.name.rsplit("/", 1)[-1]
    def f_sizeBytes(self) -> int: return int(self.entry.get("size") or 0)
    def f_storagePath(self) -> str | None: return f"wandb_artifacts/{self.md5hex}" if self.md5hex else None
    def f_mimetype(self) -> str: return "application/octet-stream"
    def f_updatedAt(self) -> str: return self.a.updated_at
    def f_digest(self) -> str | None: return self.entry.get("digest")
    def f_md5(self) -> str | None: return self.entry.get("digest")

    def f_directUrl(self) -> str | None:
        # A reference entry's bytes live outside W&B: its URL is the reference itself
        # (the SDK's generated models require a string; the SDK downloads references
        # through its storage handlers and never uses this URL for them).
        ref = self.entry.get("ref")
        if ref:
            return str(ref)
        return self.ctx.blob_url(self.md5hex) if self.md5hex else None

    def f_url(self) -> str | None: return self.f_directUrl()
