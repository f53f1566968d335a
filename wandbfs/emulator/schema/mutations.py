"""The Mutation root: everything the SDK changes."""

from __future__ import annotations

import base64
from typing import Any, Callable, Iterable

from wandbfs.emulator.executor import GraphQLFailure, Node
from wandbfs.emulator.records import VIEWER, Collection, StoreError, gid, now_iso
from wandbfs.emulator.store import Store
from wandbfs.emulator.schema.paging import connection
from wandbfs.emulator.schema.artifacts import (ArtifactNode, CollectionNode, MembershipNode, b64_to_hex,
                                                tag_node)
from wandbfs.emulator.schema.orgs import ProjectNode
from wandbfs.emulator.schema.runs import RunNode
from wandbfs.emulator.schema.context import Ctx


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
        if input.get("id") and not input.get("name") and (known := self.store.run_by_id(input["id"])) is not None:
            # The public API's run.update()/summary.update() name the run by its storage id only.
            entity, project, name = known.entity, known.project, known.name
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
        if art is None or art.state == "DELETED":
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
        self._guard(lambda: self.store.require_project_access(input["entityName"], input["projectName"]))
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
        self._guard(lambda: self.store.require_project_access(entity, name))
        existed = self.store.project(entity, name) is not None
        types = [t["name"] for t in input.get("artifactTypes") or []]
        p = self._guard(lambda: self.store.upsert_project(
            entity, name, description=input.get("description"),
            allow_all_types=input.get("allowAllArtifactTypesInRegistry"),
            artifact_types=types if input.get("artifactTypes") is not None else None,
            access=input.get("access")))
        return Node("UpsertModelPayload", {"project": ProjectNode(self.ctx, p), "model": ProjectNode(self.ctx, p),
                                           "inserted": not existed})

    def _registry_members(self, input: dict[str, Any], add: bool) -> Node:
        """``registry.add_members`` / ``remove_members``: invite or drop users (``User:<n>``
        ids) and teams (``Entity:<n>``); a project the viewer may not see is a permission error."""
        p = next((p for p in self.store.projects.values() if p.id == input["projectId"]), None)
        if p is None:
            raise GraphQLFailure("project not found")
        self._guard(lambda: self.store.require_project_access(p.entity, p.name))
        names = []
        for mid in [*(input.get("userIds") or []), *(input.get("teamIds") or [])]:
            e = self.store.entity_by_member_id(mid)
            if e is None:
                raise GraphQLFailure(f"user or team {mid} not found")
            names.append(e.name)
        self.store.set_project_access(p, add=names if add else None, remove=None if add else names)
        return Node("Payload", {"success": True})

    def f_createProjectMembers(self, input: dict[str, Any]) -> Node:
        return self._registry_members(input, add=True)

    def f_deleteProjectMembers(self, input: dict[str, Any]) -> Node:
        return self._registry_members(input, add=False)

    # deletions and renames: what artifact.delete(), collection.save()/delete() and
    # registry.save()/delete() send (wandb/sdk/artifacts/_generated/operations.py)
    def _may_write(self, entity: str, project: str) -> None:
        """W&B refuses a change to a project the viewer may not open (a restricted registry
        she is not a member of) with a permission error: deletes and renames too."""
        self._guard(lambda: self.store.require_project_access(entity, project))

    def _may_write_collection(self, coll_id: str) -> None:
        c = self.store.collection_by_id(coll_id)
        if c is not None:
            self._may_write(c.entity, c.project)

    def f_deleteArtifact(self, input: dict[str, Any]) -> Node:
        if (a := self.store.artifacts.get(input["artifactID"])) is not None:
            self._may_write_collection(a.seq_id)
        art = self._guard(lambda: self.store.delete_artifact(input["artifactID"],
                                                             bool(input.get("deleteAliases"))))
        return Node("DeleteArtifactPayload", {"artifact": ArtifactNode(self.ctx, art)})

    def _collection_payload(self, c: Collection) -> Node:
        return Node("ArtifactCollectionPayload", {"artifactCollection": CollectionNode(self.ctx, c)})

    def f_deleteArtifactSequence(self, input: dict[str, Any]) -> Node:
        self._may_write_collection(input["artifactSequenceID"])
        return self._collection_payload(self._guard(lambda: self.store.delete_collection(
            input["artifactSequenceID"], "sequence")))

    def f_deleteArtifactPortfolio(self, input: dict[str, Any]) -> Node:
        self._may_write_collection(input["artifactPortfolioID"])
        return self._collection_payload(self._guard(lambda: self.store.delete_collection(
            input["artifactPortfolioID"], "portfolio")))

    def f_updateArtifactSequence(self, input: dict[str, Any]) -> Node:
        self._may_write_collection(input["artifactSequenceID"])
        return self._collection_payload(self._guard(lambda: self.store.update_collection(
            input["artifactSequenceID"], "sequence", name=input.get("name"),
            description=input.get("description"))))

    def f_updateArtifactPortfolio(self, input: dict[str, Any]) -> Node:
        self._may_write_collection(input["artifactPortfolioID"])
        return self._collection_payload(self._guard(lambda: self.store.update_collection(
            input["artifactPortfolioID"], "portfolio", name=input.get("name"),
            description=input.get("description"))))

    def f_moveArtifactSequence(self, input: dict[str, Any]) -> Node:
        self._may_write_collection(input["artifactSequenceID"])
        return self._collection_payload(self._guard(lambda: self.store.move_sequence(
            input["artifactSequenceID"], input["destinationArtifactTypeName"])))

    def _tags(self, input: dict[str, Any], add: bool) -> list[str]:
        names = [t["tagName"] for t in input.get("tags") or []]
        self._may_write(input["entityName"], input["projectName"])
        return self._guard(lambda: self.store.tag_collection(
            input["entityName"], input["projectName"], input["artifactCollectionName"],
            add=names if add else [], remove=[] if add else names))

    def f_createArtifactCollectionTagAssignments(self, input: dict[str, Any]) -> Node:
        return Node("CreateArtifactCollectionTagAssignmentsPayload",
                    {"tags": [tag_node(t) for t in self._tags(input, add=True)]})

    def f_deleteArtifactCollectionTagAssignments(self, input: dict[str, Any]) -> Node:
        self._tags(input, add=False)
        return Node("DeleteArtifactCollectionTagAssignmentsPayload", {"success": True})

    def f_renameProject(self, input: dict[str, Any]) -> Node:
        self._may_write(input["entityName"], input["oldProjectName"])
        p = self._guard(lambda: self.store.rename_project(
            input["entityName"], input["oldProjectName"], input["newProjectName"]))
        return Node("RenameProjectPayload", {"project": ProjectNode(self.ctx, p), "inserted": False})

    def f_deleteModel(self, input: dict[str, Any]) -> Node:
        if (p := next((p for p in self.store.projects.values() if p.id == input["id"]), None)) is not None:
            self._may_write(p.entity, p.name)
        self._guard(lambda: self.store.delete_project(input["id"]))
        return Node("DeleteModelPayload", {"success": True})
