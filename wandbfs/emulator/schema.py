"""Resolver objects: how the emulator's Store looks through W&B's GraphQL types.

Each class is one W&B GraphQL type. Fields are methods ``f_<field>(**args)``; anything a
query selects that no method serves is reported as missing by the executor.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Callable, Iterable, Sequence

from wandbfs.emulator.executor import GraphQLFailure, Node
from wandbfs.emulator.signing import UrlSigner
from wandbfs.emulator.store import (REGISTRY_PREFIX, VIEWER, Artifact, Collection, Entity, Membership, Org,
                    Project, Run, Store, StoreError, gid, now_iso)

FEATURES_ON = {
    "LARGE_FILENAMES", "ARTIFACT_TAGS", "CLIENT_IDS", "ARTIFACT_REGISTRY_SEARCH",
    "ARTIFACT_COLLECTION_MEMBERSHIP_FILES", "ARTIFACT_COLLECTION_MEMBERSHIP_FILE_DOWNLOAD_HANDLER",
    "USE_ARTIFACT_WITH_ENTITY_AND_PROJECT_INFORMATION", "INCLUDE_ARTIFACT_TYPES_IN_REGISTRY_CREATION",
    "PROJECT_ARTIFACT_COLLECTION_MEMBERSHIP", "ARTIFACT_MEMBERSHIP_IN_LINK_ARTIFACT_RESPONSE",
    "TOTAL_COUNT_IN_FILE_CONNECTION", "ARTIFACT_V2_DOWNLOAD_HANDLER_SUPPORTS_ARTIFACT_ID",
    "ARTIFACT_DIGEST_ALGORITHM", "MARK_RUN_FILES_UPLOADED",
}


class Ctx:
    """What resolvers need besides the store: URL building and the caller's base URL."""

    def __init__(self, store: Store, signer: UrlSigner, base_url: str) -> None:
        self.store = store
        self.signer = signer
        self.base_url = base_url

    def blob_url(self, md5_hex: str) -> str:
        return self.signer.sign(self.base_url, f"/_storage/blobs/{md5_hex}")

    def manifest_url(self, md5_hex: str) -> str:
        return self.signer.sign(self.base_url, f"/_storage/manifests/{md5_hex}")

    def upload_url(self, kind: str, key: str) -> str:
        return self.signer.sign(self.base_url, f"/_storage/upload/{kind}/{key}")


# ---- helpers ---------------------------------------------------------------------------

def _cursor(i: int) -> str:
    return base64.b64encode(f"cursor:{i}".encode()).decode()


def _offset(after: str | None) -> int:
    if not after:
        return 0
    try:
        return int(base64.b64decode(after).decode().split(":")[1]) + 1
    except Exception as e:  # noqa: BLE001 - a bad cursor is a client error
        raise GraphQLFailure(f"invalid cursor {after!r}") from e


def connection(items: Sequence[Any], make: Callable[[Any], Any], after: str | None = None,
               first: int | None = None, edge_extra: Callable[[Any], dict[str, Any]] | None = None
               ) -> Node:
    """A Relay connection with offset cursors; W&B pages every list this way."""
    start = _offset(after)
    end = len(items) if first is None else min(len(items), start + int(first))
    edges = []
    for i in range(start, end):
        fields: dict[str, Any] = {"node": make(items[i]), "cursor": _cursor(i)}
        if edge_extra:
            fields.update(edge_extra(items[i]))
        edges.append(Node("Edge", fields))
    page = Node("PageInfo", {"endCursor": _cursor(end - 1) if end > start else after,
                             "hasNextPage": end < len(items), "hasPreviousPage": start > 0,
                             "startCursor": _cursor(start) if end > start else None})
    return Node("Connection", {"edges": edges, "pageInfo": page, "totalCount": len(items)})


def match_filter(doc: dict[str, Any], flt: Any) -> bool:
    """The subset of W&B's Mongo-style filters the SDK sends ($eq $in $regex $and $or $ne)."""
    if not flt:
        return True
    for key, cond in flt.items():
        if key == "$and":
            if not all(match_filter(doc, c) for c in cond):
                return False
            continue
        if key == "$or":
            if not any(match_filter(doc, c) for c in cond):
                return False
            continue
        val = doc.get(key)
        if isinstance(cond, dict):
            for op, arg in cond.items():
                if op == "$eq" and val != arg:
                    return False
                if op == "$ne" and val == arg:
                    return False
                if op == "$in" and (val not in arg if not isinstance(val, list) else not set(val) & set(arg)):
                    return False
                if op == "$regex" and (val is None or not re.search(arg, str(val))):
                    return False
        elif isinstance(val, list):
            if cond not in val:
                return False
        elif val != cond:
            return False
    return True


def _json(s: Any) -> Any:
    if s is None or s == "":
        return None
    return json.loads(s) if isinstance(s, str) else s


# ---- types -----------------------------------------------------------------------------

class OrgNode(Node):
    typename = "Organization"

    def __init__(self, ctx: Ctx, org: Org) -> None:
        super().__init__()
        self.ctx, self.org = ctx, org

    def f_id(self) -> str: return self.org.id
    def f_name(self) -> str: return self.org.name
    def f_orgEntity(self) -> Node: return EntityNode(self.ctx, self.ctx.store.entities[self.org.entity])
    def f_coreWeaveOrganizationId(self) -> None: return None
    def f_orgType(self) -> str: return "ORGANIZATION"
    def f_advancedRegistryFeatures(self) -> Node: return Node("AdvancedRegistryFeatures", {"advancedSearch": False})
    def f_featureFlags(self, **_: Any) -> list[Any]: return []
    def f_members(self, **_: Any) -> list[Any]: return []


class UserNode(Node):
    typename = "User"

    def __init__(self, ctx: Ctx, entity: Entity) -> None:
        super().__init__()
        self.ctx, self.e = ctx, entity

    def f_id(self) -> str: return gid("User", self.e.id)
    def f_entity(self) -> str: return self.e.name
    def f_name(self) -> str: return self.e.name
    def f_username(self) -> str: return self.e.name
    def f_email(self) -> str: return f"{self.e.name}@example.com"
    def f_flags(self) -> str: return "{}"
    def f_admin(self) -> bool: return False
    def f_deletedAt(self) -> None: return None
    def f_apiKeys(self, **_: Any) -> Node:
        """No key is named back (W&B lists the viewer's keys' names; nothing reads them here)."""
        return connection([], lambda k: k)
    def f_teams(self, **_: Any) -> Node:
        teams = [o.entity for o in self.ctx.store.orgs.values()]
        return connection(teams, lambda t: Node("Entity", {"name": t}))
    def f_organizations(self) -> list[Node]: return [OrgNode(self.ctx, o) for o in self.ctx.store.orgs.values()]


class EntityNode(Node):
    typename = "Entity"

    def __init__(self, ctx: Ctx, entity: Entity) -> None:
        super().__init__()
        self.ctx, self.e = ctx, entity

    def f_id(self) -> str: return self.e.id
    def f_name(self) -> str: return self.e.name
    def f_entityType(self) -> str: return self.e.kind
    def f_isTeam(self) -> bool: return self.e.kind != "user"
    def f_xxhashDigestsEnabled(self) -> bool: return False

    def f_organization(self) -> Node | None:
        o = self.ctx.store.org_of_entity(self.e.name)
        return OrgNode(self.ctx, o) if o else None

    def f_user(self) -> Node | None:
        return UserNode(self.ctx, self.e) if self.e.kind == "user" else None

    def f_project(self, name: str) -> Node | None:
        p = self.ctx.store.project(self.e.name, name)
        return ProjectNode(self.ctx, p) if p else None

    def f_projects(self, filters: Any = None, after: str | None = None, first: int | None = None,
                   order: str | None = None, **_: Any) -> Node:
        flt = _json(filters)
        projects = sorted((p for p in self.ctx.store.projects.values() if p.entity == self.e.name),
                          key=lambda p: p.num)
        if self.e.kind == "organization" and not flt:
            projects = [p for p in projects if p.name.startswith(REGISTRY_PREFIX)]
        projects = [p for p in projects if match_filter(
            {"name": p.name, "description": p.description, "access": p.access}, flt)]
        return connection(projects, lambda p: ProjectNode(self.ctx, p), after, first)

    def _registry_filter(self, project_filters: Any) -> list[Project]:
        flt = _json(project_filters)
        return [p for p in self.ctx.store.projects.values()
                if p.entity == self.e.name and p.name.startswith(REGISTRY_PREFIX)
                and match_filter({"name": p.name, "description": p.description}, flt)]

    def f_artifactCollections(self, projectFilters: Any = None, filters: Any = None,
                              collectionTypes: list[str] | None = None, after: str | None = None,
                              first: int | None = None, order: str | None = None, **_: Any) -> Node:
        kinds = {"PORTFOLIO": "portfolio", "SEQUENCE": "sequence"}
        want = {kinds[k] for k in (collectionTypes or ["PORTFOLIO"])}
        projects = {p.name for p in self._registry_filter(projectFilters)}
        flt = _json(filters)
        colls = sorted((c for c in self.ctx.store.collections.values()
                        if c.entity == self.e.name and c.project in projects and c.kind in want
                        and match_filter({"name": c.name, "description": c.description,
                                          "tag": c.tags, "type": c.type_name}, flt)),
                       key=lambda c: c.id)
        return connection(colls, lambda c: CollectionNode(self.ctx, c), after, first)

    def f_artifactMemberships(self, projectFilters: Any = None, collectionFilters: Any = None,
                              filters: Any = None, after: str | None = None, first: int | None = None,
                              order: str | None = None, **_: Any) -> Node:
        store = self.ctx.store
        projects = {p.name for p in self._registry_filter(projectFilters)}
        cflt, aflt = _json(collectionFilters), _json(filters)
        out = []
        for c in store.collections.values():
            if c.entity != self.e.name or c.project not in projects or c.kind != "portfolio":
                continue
            if not match_filter({"name": c.name, "description": c.description, "tag": c.tags}, cflt):
                continue
            for m in store.memberships_of(c.id):
                a = store.artifacts[m.artifact_id]
                if match_filter({"alias": m.aliases, "state": a.state, "version": f"v{m.version_index}"}, aflt):
                    out.append(m)
        return connection(out, lambda m: MembershipNode(self.ctx, m), after, first)


class ProjectNode(Node):
    typename = "Project"

    def __init__(self, ctx: Ctx, p: Project) -> None:
        super().__init__()
        self.ctx, self.p = ctx, p

    def f_id(self) -> str: return self.p.id
    def f_internalId(self) -> str: return str(self.p.num)
    def f_name(self) -> str: return self.p.name
    def f_entityName(self) -> str: return self.p.entity
    def f_entity(self) -> Node: return EntityNode(self.ctx, self.ctx.store.entities[self.p.entity])
    def f_description(self) -> str: return self.p.description
    def f_createdAt(self) -> str: return self.p.created_at
    def f_updatedAt(self) -> str: return self.p.updated_at
    def f_access(self) -> str: return self.p.access
    def f_allowAllArtifactTypesInRegistry(self) -> bool: return self.p.allow_all_types
    def f_readOnly(self) -> bool: return False
    def f_isBenchmark(self) -> bool: return False

    def f_user(self) -> Node | None:
        """The project's owner, for a user's project (W&B sends its creator)."""
        e = self.ctx.store.entities[self.p.entity]
        return UserNode(self.ctx, e) if e.kind == "user" else None

    def _types(self) -> list[str]:
        used = {c.type_name for c in self.ctx.store.collections_in(self.p.entity, self.p.name)}
        return sorted(set(self.p.artifact_types) | used)

    def f_artifactTypes(self, includeAll: bool = False, after: str | None = None,
                        first: int | None = None, **_: Any) -> Node:
        return connection(self._types(), lambda t: ArtifactTypeNode(self.ctx, self.p, t), after, first)

    def f_artifactType(self, name: str) -> Node | None:
        return ArtifactTypeNode(self.ctx, self.p, name) if name in self._types() else None

    def f_artifactCollection(self, name: str) -> Node | None:
        c = self.ctx.store.collection(self.p.entity, self.p.name, name)
        return CollectionNode(self.ctx, c) if c else None

    def f_artifactCollectionMembership(self, name: str) -> Node | None:
        coll, _, token = name.partition(":")
        c = self.ctx.store.collection(self.p.entity, self.p.name, coll)
        if c is None:
            return None
        m = self.ctx.store.membership_by_alias(c, token or "latest")
        return MembershipNode(self.ctx, m) if m else None

    def f_artifact(self, name: str) -> Node | None:
        m = self.f_artifactCollectionMembership(name)
        return m.f_artifact() if m else None  # type: ignore[union-attr]

    def f_run(self, name: str) -> Node | None:
        r = self.ctx.store.run(self.p.entity, self.p.name, name)
        return RunNode(self.ctx, r) if r else None

    def f_bucket(self, name: str, missingOk: bool = False) -> Node | None:
        return self.f_run(name)


class ArtifactTypeNode(Node):
    typename = "ArtifactType"

    def __init__(self, ctx: Ctx, p: Project, name: str) -> None:
        super().__init__()
        self.ctx, self.p, self.name = ctx, p, name

    def f_id(self) -> str: return gid("ArtifactType", f"{self.p.num}:{self.name}")
    def f_name(self) -> str: return self.name
    def f_description(self) -> None: return None
    def f_createdAt(self) -> str: return self.p.created_at

    def f_artifactCollection(self, name: str) -> Node | None:
        c = self.ctx.store.collection(self.p.entity, self.p.name, name)
        return CollectionNode(self.ctx, c) if c and c.type_name == self.name else None

    def f_artifactSequence(self, name: str) -> Node | None:
        return self.f_artifactCollection(name)

    def f_artifactCollections(self, after: str | None = None, first: int | None = None, **_: Any) -> Node:
        cs = [c for c in self.ctx.store.collections_in(self.p.entity, self.p.name) if c.type_name == self.name]
        return connection(cs, lambda c: CollectionNode(self.ctx, c), after, first)


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
    def f_state(self) -> str: return "READY"
    def f_digestAlgorithm(self) -> str: return "MANIFEST_MD5"

    def f_project(self) -> Node:
        return ProjectNode(self.ctx, self.ctx.store.project(self.c.entity, self.c.project))  # type: ignore[arg-type]

    def f_defaultArtifactType(self) -> Node: return Node("ArtifactType", {"name": self.c.type_name})

    def f_tags(self, **_: Any) -> Node:
        return connection(self.c.tags, lambda t: Node("Tag", {"id": gid("Tag", t), "name": t}))

    def f_aliases(self, after: str | None = None, first: int | None = None, **_: Any) -> Node:
        pairs = [(m, a) for m in self.ctx.store.memberships_of(self.c.id) for a in m.aliases]
        return connection(pairs, lambda p: AliasNode(self.ctx, self.c, p[0], p[1]), after, first)

    def _members(self, filters: Any) -> list[Membership]:
        flt = _json(filters)
        ms = self.ctx.store.memberships_of(self.c.id)
        return [m for m in reversed(ms) if match_filter(
            {"state": self.ctx.store.artifacts[m.artifact_id].state, "alias": m.aliases}, flt)]

    def f_artifacts(self, after: str | None = None, first: int | None = None, order: str | None = None,
                    filters: Any = None, **_: Any) -> Node:
        return connection(self._members(filters),
                          lambda m: ArtifactNode(self.ctx, self.ctx.store.artifacts[m.artifact_id], m),
                          after, first, edge_extra=lambda m: {"version": f"v{m.version_index}"})

    def f_artifactMemberships(self, after: str | None = None, first: int | None = None,
                              filters: Any = None, **_: Any) -> Node:
        return connection(self._members(filters), lambda m: MembershipNode(self.ctx, m), after, first)

    def f_artifactMembership(self, aliasName: str) -> Node | None:
        m = self.ctx.store.membership_by_alias(self.c, aliasName)
        return MembershipNode(self.ctx, m) if m else None

    def f_latestArtifact(self) -> Node | None:
        ms = self.ctx.store.memberships_of(self.c.id)
        if not ms:
            return None
        return ArtifactNode(self.ctx, self.ctx.store.artifacts[ms[-1].artifact_id], ms[-1])


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


class MembershipNode(Node):
    typename = "ArtifactCollectionMembership"

    def __init__(self, ctx: Ctx, m: Membership) -> None:
        super().__init__()
        self.ctx, self.m = ctx, m
        self.c = ctx.store.collections[m.collection_id]

    def f_id(self) -> str: return self.m.id
    def f_versionIndex(self) -> int: return self.m.version_index
    def f_createdAt(self) -> str: return self.m.created_at
    def f_aliases(self) -> list[Node]: return [AliasNode(self.ctx, self.c, self.m, a) for a in self.m.aliases]
    def f_artifactCollection(self) -> Node: return CollectionNode(self.ctx, self.c)

    def f_artifact(self) -> Node:
        return ArtifactNode(self.ctx, self.ctx.store.artifacts[self.m.artifact_id], self.m)

    def f_files(self, names: list[str] | None = None, after: str | None = None,
                first: int | None = None, **_: Any) -> Node:
        return ArtifactNode(self.ctx, self.ctx.store.artifacts[self.m.artifact_id], self.m).f_files(
            names=names, after=after, first=first)


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
        return CollectionNode(self.ctx, self.ctx.store.collections[self.a.seq_id])

    def f_aliases(self) -> list[Node]:
        out = []
        for m in self.ctx.store.memberships.values():
            if m.artifact_id == self.a.id:
                c = self.ctx.store.collections[m.collection_id]
                out.extend(AliasNode(self.ctx, c, m, al) for al in m.aliases)
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
        if not self.a.created_by:
            return None
        r = self.ctx.store.run(*self.a.created_by)
        return RunNode(self.ctx, r) if r else None

    def f_usedBy(self, **_: Any) -> Node:
        runs = [self.ctx.store.run_by_id(u.run_id) for u in self.ctx.store.uses if u.artifact_id == self.a.id]
        return connection([r for r in runs if r], lambda r: RunNode(self.ctx, r))


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


class RunNode(Node):
    typename = "Run"

    def __init__(self, ctx: Ctx, r: Run) -> None:
        super().__init__()
        self.ctx, self.r = ctx, r

    def f_id(self) -> str: return self.r.id
    def f_name(self) -> str: return self.r.name
    def f_displayName(self) -> str: return self.r.display_name or self.r.name
    def f_projectId(self) -> int: return self.ctx.store.project(self.r.entity, self.r.project).num  # type: ignore[union-attr]
    def f_project(self) -> Node: return ProjectNode(self.ctx, self.ctx.store.project(self.r.entity, self.r.project))  # type: ignore[arg-type]
    def f_tags(self) -> list[str]: return self.r.tags
    def f_sweepName(self) -> None: return None
    def f_state(self) -> str: return self.r.state
    def f_config(self) -> str: return self.r.config
    def f_group(self) -> None: return None
    def f_jobType(self) -> str | None: return self.r.job_type
    def f_commit(self) -> None: return None
    def f_readOnly(self) -> bool: return False
    def f_createdAt(self) -> str: return self.r.created_at
    def f_heartbeatAt(self) -> str: return self.r.heartbeat_at
    def f_description(self) -> None: return None
    def f_notes(self) -> None: return None
    def f_systemMetrics(self) -> str: return "{}"
    def f_summaryMetrics(self) -> str: return self.r.summary
    def f_historyLineCount(self) -> int: return 0
    def f_logLineCount(self) -> int: return 0
    def f_eventsLineCount(self) -> int: return 0
    def f_historyTail(self) -> str: return "[]"
    def f_eventsTail(self) -> str: return "[]"
    def f_historyKeys(self) -> str: return "{}"
    def f_wandbConfig(self, keys: list[str] | None = None) -> str: return "{}"
    def f_user(self) -> Node: return Node("User", {"name": VIEWER, "username": VIEWER})

    def f_inputArtifacts(self, after: str | None = None, first: int | None = None, **_: Any) -> Node:
        seen: list[str] = []
        for u in self.ctx.store.uses_by_run(self.r):
            if u.artifact_id not in seen:
                seen.append(u.artifact_id)
        return connection(seen, lambda i: ArtifactNode(self.ctx, self.ctx.store.artifacts[i]), after, first)

    def f_outputArtifacts(self, after: str | None = None, first: int | None = None, **_: Any) -> Node:
        arts = [a for a in self.ctx.store.artifacts.values()
                if a.created_by == [self.r.entity, self.r.project, self.r.name]]
        return connection(arts, lambda a: ArtifactNode(self.ctx, a), after, first)


# ---- roots -----------------------------------------------------------------------------

class QueryRoot(Node):
    typename = "Query"

    def __init__(self, ctx: Ctx) -> None:
        super().__init__()
        self.ctx = ctx

    def f_viewer(self) -> Node: return UserNode(self.ctx, self.ctx.store.entities[VIEWER])

    def f_serverInfo(self) -> Node:
        from wandbfs.emulator.schema import FEATURES_ON as on
        import wandb.proto.wandb_internal_pb2 as pb  # the SDK's own list of feature names
        names = [n for n in pb.ServerFeature.keys() if n != "SERVER_FEATURE_UNSPECIFIED"]
        return Node("ServerInfo", {
            "features": [Node("ServerFeature", {"name": n, "isEnabled": n in on}) for n in names],
            "cliVersionInfo": "{}", "latestLocalVersionInfo": None,
            "availableBucketProviders": [], "frontendHost": self.ctx.base_url})

    def f_entity(self, name: str | None = None) -> Node | None:
        e = self.ctx.store.entities.get(name or VIEWER)
        return EntityNode(self.ctx, e) if e else None

    def f_organization(self, name: str | None = None, **_: Any) -> Node | None:
        o = self.ctx.store.org_by_name_or_entity(name or "")
        return OrgNode(self.ctx, o) if o else None

    def f_project(self, name: str, entityName: str | None = None) -> Node | None:
        p = self.ctx.store.project(entityName or VIEWER, name)
        return ProjectNode(self.ctx, p) if p else None

    def f_model(self, name: str, entityName: str | None = None) -> Node | None:
        return self.f_project(name, entityName)

    def f_models(self, entityName: str | None = None, after: str | None = None, first: int | None = None,
                 order: str | None = None, **_: Any) -> Node:
        """An entity's projects (``api.projects(entity)``), oldest first."""
        name = entityName or VIEWER
        projects = sorted((p for p in self.ctx.store.projects.values() if p.entity == name), key=lambda p: p.num)
        return connection(projects, lambda p: ProjectNode(self.ctx, p), after, first)

    def f_artifact(self, id: str) -> Node | None:
        a = self.ctx.store.artifacts.get(id)
        return ArtifactNode(self.ctx, a) if a else None

    def f_artifactCollection(self, id: str) -> Node | None:
        c = self.ctx.store.collections.get(id)
        return CollectionNode(self.ctx, c) if c else None

    def f_clientIDMapping(self, clientID: str) -> Node | None:
        for a in self.ctx.store.artifacts.values():
            if a.client_id == clientID:
                return Node("ClientIDMapping", {"serverID": a.id})
        return None


class MutationRoot(Node):
    typename = "Mutation"

    def __init__(self, ctx: Ctx) -> None:
        super().__init__()
        self.ctx = ctx

    @property
    def store(self) -> Store:
        return self.ctx.store

    def _guard(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except StoreError as e:
            raise GraphQLFailure(str(e)) from e

    # runs
    def f_upsertBucket(self, input: dict[str, Any]) -> Node:
        entity = input.get("entityName") or VIEWER
        project = input.get("modelName") or "uncategorized"
        name = input.get("name") or input.get("id")
        run, inserted = self._guard(lambda: self.store.upsert_run(
            entity, project, name, config=input.get("config"), job_type=input.get("jobType"),
            display_name=input.get("displayName"), summary=input.get("summaryMetrics"),
            tags=input.get("tags")))
        bucket = RunNode(self.ctx, run)
        return Node("UpsertBucketPayload", {"bucket": bucket, "inserted": inserted})

    def f_createRunFiles(self, input: dict[str, Any]) -> Node:
        run = self.store.run(input["entityName"], input["projectName"], input["runName"])
        if run is None:
            raise GraphQLFailure("run not found")
        files = [Node("File", {"name": n, "uploadUrl": self.ctx.upload_url(
            "run", f"{run.id}/{base64.urlsafe_b64encode(n.encode()).decode()}")})
            for n in input["files"]]
        return Node("CreateRunFilesPayload", {"runID": run.id, "uploadHeaders": [], "files": files})

    def f_markRunFilesUploaded(self, input: dict[str, Any]) -> Node:
        return Node("Payload", {"success": True})

    def f_stopRun(self, input: dict[str, Any]) -> Node:
        return Node("Payload", {"success": True})

    def f_useArtifact(self, input: dict[str, Any]) -> Node:
        run = self.store.run(input["entityName"], input["projectName"], input["runName"])
        if run is None:
            raise GraphQLFailure(f"run {input['entityName']}/{input['projectName']}/{input['runName']} not found")
        art = self._guard(lambda: self.store.record_use(
            run, input["artifactID"], input.get("usedAs"), input.get("artifactEntityName"),
            input.get("artifactProjectName")))
        return Node("UseArtifactPayload", {"artifact": ArtifactNode(self.ctx, art)})

    # artifacts
    def f_createArtifact(self, input: dict[str, Any]) -> Node:
        aliases = [a["alias"] for a in input.get("aliases") or []]
        art = self._guard(lambda: self.store.create_artifact(
            entity=input["entityName"], project=input["projectName"],
            collection=input["artifactCollectionName"] if "artifactCollectionName" in input
            else input["artifactCollectionNames"][0],
            type_name=input["artifactTypeName"], digest=input["digest"],
            description=input.get("description"), metadata=input.get("metadata"),
            aliases=aliases, run=input.get("runName"), client_id=input.get("clientID"),
            history_step=input.get("historyStep")))
        return Node("CreateArtifactPayload", {"artifact": ArtifactNode(self.ctx, art)})

    def _manifest_payload(self, art_id: str) -> Node:
        file = Node("File", {"id": gid("File", f"manifest:{art_id}"),
                             "uploadUrl": self.ctx.upload_url("manifest", art_id), "uploadHeaders": []})
        return Node("CreateArtifactManifestPayload", {"artifactManifest": Node(
            "ArtifactManifest", {"id": gid("ArtifactManifest", art_id), "file": file})})

    def f_createArtifactManifest(self, input: dict[str, Any]) -> Node:
        if input["artifactID"] not in self.store.artifacts:
            raise GraphQLFailure("artifact not found")
        return self._manifest_payload(input["artifactID"])

    def f_updateArtifactManifest(self, input: dict[str, Any]) -> Node:
        art_id = base64.b64decode(input["artifactManifestID"]).decode().split(":", 1)[1]
        return self._manifest_payload(art_id)

    def f_createArtifactFiles(self, input: dict[str, Any]) -> Node:
        nodes = []
        for f in input.get("artifactFiles") or []:
            md5hex = b64_to_hex(f["md5"])
            exists = self.store.blobs.has(md5hex)
            nodes.append(Node("File", {
                "storagePath": f"wandb_artifacts/{md5hex}",
                "uploadUrl": None if exists else self.ctx.upload_url("blob", md5hex),
                "uploadHeaders": [], "uploadMultipartUrls": None,
                "artifact": Node("Artifact", {"id": f["artifactID"]})}))
        return Node("CreateArtifactFilesPayload", {"files": connection(nodes, lambda n: n)})

    def f_completeMultipartUploadArtifact(self, input: dict[str, Any]) -> Node:
        raise GraphQLFailure("multipart upload is not supported by the emulator")

    def f_commitArtifact(self, input: dict[str, Any]) -> Node:
        art = self._guard(lambda: self.store.commit_artifact(input["artifactID"]))
        return Node("CommitArtifactPayload", {"artifact": ArtifactNode(self.ctx, art)})

    def f_updateArtifact(self, input: dict[str, Any]) -> Node:
        art = self.store.artifacts.get(input["artifactID"])
        if art is None:
            raise GraphQLFailure("artifact not found")
        with self.store.lock:
            if input.get("description") is not None:
                art.description = input["description"]
            if input.get("metadata") is not None:
                art.metadata = input["metadata"]
            art.updated_at = now_iso()
            self.store.save()
        if input.get("aliases") is not None:
            seq = self.store.collections[art.seq_id]
            self._guard(lambda: self.store.add_aliases(seq.id, art.id, [a["alias"] for a in input["aliases"]]))
        return Node("UpdateArtifactPayload", {"artifact": ArtifactNode(self.ctx, art)})

    def _alias_targets(self, input: dict[str, Any]) -> Iterable[tuple[Collection, str]]:
        for a in input["aliases"]:
            c = self.store.collection(a["entityName"], a["projectName"], a["artifactCollectionName"])
            if c is None:
                raise GraphQLFailure(f"collection {a['artifactCollectionName']} not found")
            yield c, a["alias"]

    def f_addAliases(self, input: dict[str, Any]) -> Node:
        for c, alias in list(self._alias_targets(input)):
            self._guard(lambda: self.store.add_aliases(c.id, input["artifactID"], [alias]))
        return Node("Payload", {"success": True})

    def f_deleteAliases(self, input: dict[str, Any]) -> Node:
        for c, alias in list(self._alias_targets(input)):
            self._guard(lambda: self.store.delete_aliases(c.id, input["artifactID"], [alias]))
        return Node("Payload", {"success": True})

    def f_linkArtifact(self, input: dict[str, Any]) -> Node:
        art_id = input.get("artifactID")
        if not art_id and input.get("clientID"):
            art_id = next((a.id for a in self.store.artifacts.values() if a.client_id == input["clientID"]), None)
        if not art_id:
            raise GraphQLFailure("artifact not found")
        aliases = [a["alias"] for a in input.get("aliases") or []]
        m = self._guard(lambda: self.store.link(art_id, input["entityName"], input["projectName"],
                                                input["artifactPortfolioName"], aliases))
        return Node("LinkArtifactPayload", {"versionIndex": m.version_index,
                                            "artifactMembership": MembershipNode(self.ctx, m)})

    def f_unlinkArtifact(self, input: dict[str, Any]) -> Node:
        self.store.unlink(input["artifactPortfolioID"], input["artifactID"])
        return Node("Payload", {"success": True, "artifactID": input["artifactID"]})

    def f_upsertModel(self, input: dict[str, Any]) -> Node:
        entity = input.get("entityName") or VIEWER
        name = input["name"]
        existed = self.store.project(entity, name) is not None
        types = [t["name"] for t in input.get("artifactTypes") or []]
        p = self._guard(lambda: self.store.upsert_project(
            entity, name, description=input.get("description"),
            allow_all_types=input.get("allowAllArtifactTypesInRegistry"),
            artifact_types=types if input.get("artifactTypes") is not None else None,
            access=input.get("access")))
        return Node("UpsertModelPayload", {"project": ProjectNode(self.ctx, p), "model": ProjectNode(self.ctx, p),
                                           "inserted": not existed})
