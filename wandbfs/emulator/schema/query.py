"""The Query root."""

from __future__ import annotations

from typing import Any

from wandbfs.emulator.executor import Node
from wandbfs.emulator.records import VIEWER
from wandbfs.emulator.schema.paging import connection
from wandbfs.emulator.schema.artifacts import ArtifactNode, CollectionNode
from wandbfs.emulator.schema.orgs import EntityNode, OrgNode, ProjectNode, UserNode, project_node
from wandbfs.emulator.schema.context import Ctx


class QueryRoot(Node):
    typename = "Query"

    def __init__(self, ctx: Ctx) -> None:
        super().__init__()
        self.ctx = ctx

    def f_viewer(self) -> Node: return UserNode(self.ctx, self.ctx.store.entities[VIEWER])

    def f_serverInfo(self) -> Node:
        from wandbfs.emulator.schema.context import FEATURES_ON as on
        import wandb.proto.wandb_internal_pb2 as pb  # the SDK's own list of feature names
        names = [n for n in pb.ServerFeature.keys() if n != "SERVER_FEATURE_UNSPECIFIED"]
        return Node("ServerInfo", {
            "features": [Node("ServerFeature", {"name": n, "isEnabled": n in on}) for n in names],
            "cliVersionInfo": "{}", "latestLocalVersionInfo": None,
            "availableBucketProviders": [], "frontendHost": self.ctx.base_url})

    def f_entity(self, name: str | None = None) -> Node | None:
        e = self.ctx.store.entities.get(name or VIEWER)
        return EntityNode(self.ctx, e) if e and self.ctx.store.can_see_entity(e.name) else None

    def f_organization(self, name: str | None = None, **_: Any) -> Node | None:
        """An organization the viewer is not in reads as absent (the SDK: "not found")."""
        o = self.ctx.store.org_by_name_or_entity(name or "")
        return OrgNode(self.ctx, o) if o and self.ctx.store.is_org_member(o) else None

    def f_project(self, name: str, entityName: str | None = None) -> Node | None:
        return project_node(self.ctx, entityName or VIEWER, name)

    def f_model(self, name: str, entityName: str | None = None) -> Node | None:
        return self.f_project(name, entityName)

    def f_models(self, entityName: str | None = None, after: str | None = None, first: int | None = None,
                 order: str | None = None, **_: Any) -> Node:
        """An entity's projects (``api.projects(entity)``), oldest first."""
        name = entityName or VIEWER
        projects = sorted((p for p in self.ctx.store.projects.values()
                           if p.entity == name and self.ctx.store.can_see_project(p)), key=lambda p: p.num)
        return connection(projects, lambda p: ProjectNode(self.ctx, p), after, first)

    def f_artifact(self, id: str) -> Node | None:
        a = self.ctx.store.artifacts.get(id)
        return ArtifactNode(self.ctx, a) if a else None

    def f_artifactCollection(self, id: str) -> Node | None:
        c = self.ctx.store.collections.get(id)
        p = self.ctx.store.visible_project(c.entity, c.project) if c else None
        return CollectionNode(self.ctx, c) if c and p else None

    def f_clientIDMapping(self, clientID: str) -> Node | None:
        for a in self.ctx.store.artifacts.values():
            if a.client_id == clientID:
                return Node("ClientIDMapping", {"serverID": a.id})
        return None
