"""Organizations, users, entities, projects (registries are projects) and artifact types."""

from __future__ import annotations

from typing import Any

from wandbfs.emulator.executor import GraphQLFailure, Node
from wandbfs.emulator.records import REGISTRY_PREFIX, Entity, Org, Project, gid
from wandbfs.emulator.schema.paging import (connection, match_filter, order_by, _json, collection_doc,
                                            project_doc, version_doc)
from wandbfs.emulator.schema.context import Ctx, shows
from wandbfs.emulator.schema.runs import select_runs


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

    def f_id(self) -> str: return self.ctx.store.member_id(self.e.name)
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
        teams = [o.entity for o in self.ctx.store.orgs_of(self.e.name)]
        return connection(teams, lambda t: Node("Entity", {"name": t}))
    def f_organizations(self) -> list[Node]: return [OrgNode(self.ctx, o) for o in self.ctx.store.orgs_of(self.e.name)]


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
        """W&B answers a project the viewer may not see as if it did not exist, and one
        of her org she was not invited to with a permission error."""
        return project_node(self.ctx, self.e.name, name)

    def f_projects(self, filters: Any = None, after: str | None = None, first: int | None = None,
                   order: str | None = None, **_: Any) -> Node:
        flt = _json(filters)
        projects = sorted((p for p in self.ctx.store.projects.values()
                           if p.entity == self.e.name and self.ctx.store.can_see_project(p)), key=lambda p: p.num)
        if self.e.kind == "organization" and not flt:
            projects = [p for p in projects if p.name.startswith(REGISTRY_PREFIX)]
        projects = [p for p in projects if match_filter(project_doc(p, self.e.id), flt)]
        projects = order_by(projects, lambda p: project_doc(p, self.e.id), order)
        return connection(projects, lambda p: ProjectNode(self.ctx, p), after, first)

    def _registry_filter(self, project_filters: Any) -> list[Project]:
        flt = _json(project_filters)
        return [p for p in self.ctx.store.projects.values()
                if p.entity == self.e.name and p.name.startswith(REGISTRY_PREFIX)
                and self.ctx.store.can_see_project(p) and match_filter(project_doc(p, self.e.id), flt)]

    def f_artifactCollections(self, projectFilters: Any = None, filters: Any = None,
                              collectionTypes: list[str] | None = None, after: str | None = None,
                              first: int | None = None, order: str | None = None, **_: Any) -> Node:
        kinds = {"PORTFOLIO": "portfolio", "SEQUENCE": "sequence"}
        want = {kinds[k] for k in (collectionTypes or ["PORTFOLIO"])}
        projects = {p.name for p in self._registry_filter(projectFilters)}
        flt = _json(filters)
        colls = sorted((c for c in self.ctx.store.collections.values()
                        if c.entity == self.e.name and c.project in projects and c.kind in want
                        and match_filter(collection_doc(c), flt)),
                       key=lambda c: c.id)
        return connection(order_by(colls, collection_doc, order), lambda c: self.ctx.node(c), after, first)

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
            if not match_filter(collection_doc(c), cflt):
                continue
            out.extend(m for m in store.memberships_of(c.id) if match_filter(version_doc(store, m), aflt))
        out = order_by(out, lambda m: version_doc(store, m), order)
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

    def f_artifactCollections(self, after: str | None = None, first: int | None = None,
                              filters: Any = None, order: str | None = None, **_: Any) -> Node:
        """Every collection of the project, any type (``api.project(...).artifact_collections()``)."""
        flt = _json(filters)
        cs = [c for c in self.ctx.store.collections_in(self.p.entity, self.p.name)
              if match_filter(collection_doc(c), flt)]
        return connection(order_by(cs, collection_doc, order), lambda c: self.ctx.node(c), after, first)

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

    def _member_role(self, name: str) -> Node:
        """W&B's registry roles; the emulator keeps no per-member role, so members are admins."""
        return Node("Role", {"name": "admin"})

    def f_members(self) -> list[Node]:
        """The users invited to the project (``registry.user_members()``)."""
        store = self.ctx.store
        users = [store.entities[m] for m in self.p.members if m in store.entities
                 and store.entities[m].kind == "user"]
        return [Node("ProjectMember", {"id": store.member_id(e.name), "name": e.name, "username": e.name,
                                       "email": f"{e.name}@example.com", "role": self._member_role(e.name)})
                for e in users]

    def f_teamMembers(self) -> list[Node]:
        """The teams invited to the project (``registry.team_members()``)."""
        store = self.ctx.store
        teams = [store.entities[m] for m in self.p.members if m in store.entities
                 and store.entities[m].kind == "team"]
        return [Node("ProjectTeamMember", {"team": _team(self.ctx, t), "role": self._member_role(t.name)})
                for t in teams]

    def f_runs(self, filters: Any = None, after: str | None = None, first: int | None = None,
               order: str | None = None, **_: Any) -> Node:
        """``api.runs(path, filters, order)``: the project's runs, filtered and ordered."""
        runs = select_runs(self.ctx.store, self.p.entity, self.p.name, filters, order)
        return connection(runs, lambda r: self.ctx.node(r), after, first)

    def f_runCount(self, filters: Any = None, **_: Any) -> int:
        """How many runs ``filters`` matches (``len(api.runs(...))`` reads this)."""
        return len(select_runs(self.ctx.store, self.p.entity, self.p.name, filters, None))


def _team(ctx: Ctx, t: Entity) -> Node:
    """A team as the SDK's TeamFragment reads it."""
    members = [Node("Member", {"id": ctx.store.member_id(u) if u in ctx.store.entities else gid("User", u),
                               "role": "member", "pending": False, "email": f"{u}@example.com",
                               "username": u, "name": u, "photoUrl": None, "accountType": "USER",
                               "apiKey": None}) for u in t.members]
    return Node("Entity", {"id": ctx.store.member_id(t.name), "name": t.name, "available": True,
                           "photoUrl": None, "readOnly": False, "readOnlyAdmin": False, "isTeam": True,
                           "entityType": "team", "privateOnly": False, "storageBytes": 0,
                           "codeSavingEnabled": False, "defaultAccess": "USER_READ", "isPaid": False,
                           "members": members})


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

    def f_artifactCollections(self, after: str | None = None, first: int | None = None,
                              filters: Any = None, order: str | None = None, **_: Any) -> Node:
        flt = _json(filters)
        cs = [c for c in self.ctx.store.collections_in(self.p.entity, self.p.name)
              if c.type_name == self.name and match_filter(collection_doc(c), flt)]
        return connection(order_by(cs, collection_doc, order), lambda c: self.ctx.node(c), after, first)


def project_node(ctx: Ctx, entity: str, name: str) -> Node | None:
    """``entity.project(name)`` and ``project(entityName, name)``, as W&B answers them: a
    project the viewer may not see is null, a restricted registry of her org she was not
    invited to is HTTP 403 ``permission denied`` (PERMISSION_ERROR)."""
    if ctx.store.denied_project(entity, name):
        raise GraphQLFailure("permission denied", code="PERMISSION_ERROR", status=403)
    p = ctx.store.visible_project(entity, name)
    return ProjectNode(ctx, p) if p else None
