"""Organizations, users, entities, projects (registries are projects) and artifact types."""

from __future__ import annotations

from typing import Any

from wandbfs.emulator.executor import Node
from wandbfs.emulator.store import REGISTRY_PREFIX, Entity, Org, Project, gid
from wandbfs.emulator.schema.paging import connection, match_filter, _json
from wandbfs.emulator.schema.context import Ctx, shows


@shows(Org)
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


@shows(Entity)
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
        return connection(colls, lambda c: self.ctx.node(c), after, first)

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
        return connection(out, lambda m: self.ctx.node(m), after, first)


@shows(Project)
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
        return self.ctx.node(c) if c else None

    def f_artifactCollectionMembership(self, name: str) -> Node | None:
        coll, _, token = name.partition(":")
        c = self.ctx.store.collection(self.p.entity, self.p.name, coll)
        if c is None:
            return None
        m = self.ctx.store.membership_by_alias(c, token or "latest")
        return self.ctx.node(m) if m else None

    def f_artifact(self, name: str) -> Node | None:
        m = self.f_artifactCollectionMembership(name)
        return m.f_artifact() if m else None  # type: ignore[union-attr]

    def f_run(self, name: str) -> Node | None:
        r = self.ctx.store.run(self.p.entity, self.p.name, name)
        return self.ctx.node(r) if r else None

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
        return self.ctx.node(c) if c and c.type_name == self.name else None

    def f_artifactSequence(self, name: str) -> Node | None:
        return self.f_artifactCollection(name)

    def f_artifactCollections(self, after: str | None = None, first: int | None = None, **_: Any) -> Node:
        cs = [c for c in self.ctx.store.collections_in(self.p.entity, self.p.name) if c.type_name == self.name]
        return connection(cs, lambda c: self.ctx.node(c), after, first)
