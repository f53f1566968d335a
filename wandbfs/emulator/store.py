"""The emulator's data model: W&B's entities, projects, collections, artifacts and runs.

It mirrors how W&B models the Registry (see docs/emulator.md): a registry is the project
``wandb-registry-<name>`` under an organization's entity; artifacts are born in an
``ArtifactSequence`` of an ordinary project and linked into an ``ArtifactPortfolio`` of a
registry; versions and aliases belong to a *membership* of an artifact in a collection.
All state is in memory, guarded by one lock, and snapshotted as JSON under ``state_dir``
after every change, so a restarted emulator comes back with the same data.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from wandbfs.emulator.blobs import BlobStore
from wandbfs.emulator.records import (REGISTRY_PREFIX, VIEWER, TABLES, Artifact, Collection, Contents, Entity,
                                      Membership, Org, Project, Run, StoreError, Use, gid, now_iso)
from wandbfs.emulator.runstream import check_stream_files, stream_file

__all__ = ["Store"]


class Store:
    """All emulator state. Methods take ``self.lock`` themselves; callers never need to."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.state_dir / "blobs")
        self.lock = threading.RLock()
        self._contents: OrderedDict[str, Contents] = OrderedDict()   # parsed manifests, by md5
        self.manifest_parses = 0   # json parses of stored manifests (tests prove pages reuse them)
        self.counter = 0
        self.orgs: dict[str, Org] = {}
        self.entities: dict[str, Entity] = {}
        self.projects: dict[str, Project] = {}
        self.collections: dict[str, Collection] = {}
        self.artifacts: dict[str, Artifact] = {}
        self.memberships: dict[str, Membership] = {}
        # Deleted collections, kept so their deleted versions still name their sequence
        # (a run's logged artifacts and ``artifact(id)`` still show them, state DELETED).
        self.deleted_collections: dict[str, Collection] = {}
        self.runs: dict[str, Run] = {}
        self.uses: list[Use] = []
        self.revoked: set[str] = set()
        self._load()
        if VIEWER not in self.entities:
            self.add_entity(VIEWER, "user")

    # ---- persistence -------------------------------------------------------------------
    @property
    def _snapshot(self) -> Path:
        return self.state_dir / "state.json"

    def _load(self) -> None:
        if not self._snapshot.exists():
            return
        raw = json.loads(self._snapshot.read_text())
        self.counter = raw["counter"]
        for table, cls in TABLES.items():
            setattr(self, table, {k: cls(**v) for k, v in raw.get(table, {}).items()})
        for key, p in self.projects.items():   # saved before members were: its creator's, as upsert_project does
            if p.access == "RESTRICTED" and "members" not in raw["projects"][key]:
                p.members = [VIEWER]
        self.uses = [Use(**u) for u in raw["uses"]]

    def save(self) -> None:
        with self.lock:
            raw: dict[str, Any] = {"counter": self.counter, "uses": [dataclasses.asdict(u) for u in self.uses]}
            for table in TABLES:
                raw[table] = {k: dataclasses.asdict(v) for k, v in getattr(self, table).items()}
            tmp = self._snapshot.with_suffix(".tmp")
            tmp.write_text(json.dumps(raw))
            os.replace(tmp, self._snapshot)

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    # ---- auth --------------------------------------------------------------------------
    def key_ok(self, key: str | None) -> bool:
        """W&B refuses keys under 40 chars; a revoked key (see revoke_key) is refused too."""
        if not key or len(key) < 40:
            return False
        return key not in self.revoked

    # ---- permissions -------------------------------------------------------------------
    # W&B's model, as far as a registry user meets it: an organization's registries are seen
    # by its members; a RESTRICTED project (a registry made with visibility="restricted") only
    # by the users and teams invited to it. W&B also lets org admins see restricted registries;
    # the emulator has no admins, so a test that restricts gets exactly the invited members.
    def is_org_member(self, org: Org, user: str = VIEWER) -> bool:
        return user in org.members

    def orgs_of(self, user: str = VIEWER) -> list[Org]:
        """The organizations ``user`` belongs to (``viewer.organizations``)."""
        return [o for o in self.orgs.values() if self.is_org_member(o, user)]

    def can_see_entity(self, name: str, user: str = VIEWER) -> bool:
        """An organization's entity is seen by its members; users and teams by everyone."""
        e = self.entities.get(name)
        if e is None or not e.org or e.org not in self.orgs:
            return e is not None
        return self.is_org_member(self.orgs[e.org], user)

    def in_members(self, members: list[str], user: str = VIEWER) -> bool:
        """``user`` is among ``members``, by name or through a team that lists her."""
        return any(m == user or user in getattr(self.entities.get(m), "members", ()) for m in members)

    def can_see_project(self, p: Project, user: str = VIEWER) -> bool:
        if not self.can_see_entity(p.entity, user):
            return False
        return p.access != "RESTRICTED" or self.in_members(p.members, user)

    def visible_project(self, entity: str, name: str, user: str = VIEWER) -> Project | None:
        """The project as W&B answers a read of it: absent when ``user`` may not see it."""
        p = self.project(entity, name)
        return p if p is not None and self.can_see_project(p, user) else None

    def denied_project(self, entity: str, name: str, user: str = VIEWER) -> bool:
        """A project ``user`` may not open though its org is hers: a RESTRICTED registry she
        was not invited to. W&B refuses a read of it by name with "permission denied" (403,
        PERMISSION_ERROR), while listings leave it out; an org she is not in is "not found"."""
        p = self.project(entity, name)
        return p is not None and self.can_see_entity(entity, user) and not self.can_see_project(p, user)

    def require_project_access(self, entity: str, name: str, user: str = VIEWER) -> None:
        """For mutations: W&B refuses a write into an existing project ``user`` may not see
        with a permission error (reads just find nothing)."""
        p = self.project(entity, name)
        if p is not None and not self.can_see_project(p, user):
            raise StoreError(f"permission denied: {user} may not access project {name} in {entity}")

    def registry_project(self, ref: str) -> Project:
        """``org/registry`` (``acme/secret``, ``acme-org/wandb-registry-secret``) -> its project."""
        org_name, _, reg = ref.partition("/")
        org = self.org_by_name_or_entity(org_name)
        if org is None:
            raise StoreError(f"organization {org_name} not found")
        p = self.project(org.entity, reg if reg.startswith(REGISTRY_PREFIX) else REGISTRY_PREFIX + reg)
        if p is None:
            raise StoreError(f"registry {reg} not found in {org.name}")
        return p

    def set_org_member(self, org_name: str, member: bool, user: str = VIEWER) -> Org:
        with self.lock:
            org = self.org_by_name_or_entity(org_name)
            if org is None:
                raise StoreError(f"organization {org_name} not found")
            org.members = [m for m in org.members if m != user] + ([user] if member else [])
            self.save()
            return org

    def set_project_access(self, p: Project, access: str | None = None, members: list[str] | None = None,
                           add: list[str] | None = None, remove: list[str] | None = None) -> Project:
        """Visibility (``ORGANIZATION`` / ``RESTRICTED`` / ...) and invited members of a project."""
        with self.lock:
            if access is not None:
                p.access = access
            if members is not None:
                p.members = list(dict.fromkeys(members))
            p.members = [m for m in dict.fromkeys(p.members + list(add or [])) if m not in (remove or [])]
            self.save()
            return p

    def add_team(self, name: str, members: list[str]) -> Entity:
        """A team entity whose users see what the team is invited to."""
        with self.lock:
            e = self.add_entity(name, "team")
            e.members = list(dict.fromkeys(members))
            self.save()
            return e

    def member_id(self, name: str) -> str:
        """The id a registry member goes by: ``User:<n>`` for a user, ``Entity:<n>`` for a
        team, ``n`` its entity's number (the SDK parses ``n`` as an integer)."""
        e = self.entities[name]
        n = base64.b64decode(e.id).decode().split(":", 1)[1]
        return gid("User" if e.kind == "user" else "Entity", n)

    def entity_by_member_id(self, member_id: str) -> Entity | None:
        try:
            n = base64.b64decode(member_id).decode().split(":", 1)[1]
        except (ValueError, IndexError):
            return None
        return next((e for e in self.entities.values() if e.id == gid("Entity", n)), None)

    def access_state(self) -> dict[str, Any]:
        """What ``GET /_emulator/access`` answers: org members, teams, non-default projects."""
        return {"orgs": {o.name: list(o.members) for o in self.orgs.values()},
                "teams": {e.name: list(e.members) for e in self.entities.values() if e.kind == "team"},
                "projects": {k: {"access": p.access, "members": list(p.members)}
                             for k, p in self.projects.items() if p.access == "RESTRICTED" or p.members}}



    # ---- organizations, entities, projects ---------------------------------------------
    def add_entity(self, name: str, kind: str, org: str | None = None) -> Entity:
        with self.lock:
            if name in self.entities:
                return self.entities[name]
            e = Entity(name=name, id=gid("Entity", self._next()), kind=kind, org=org)
            self.entities[name] = e
            self.save()
            return e

    def add_org(self, name: str, entity: str | None = None) -> Org:
        """An organization has a display name and a separate org entity, as on W&B."""
        with self.lock:
            if name in self.orgs:
                return self.orgs[name]
            ent = entity or f"{name}-org"
            o = Org(name=name, entity=ent, id=gid("Organization", self._next()))
            self.orgs[name] = o
            self.add_entity(ent, "organization", org=name)
            self.save()
            return o

    def org_by_name_or_entity(self, name: str) -> Org | None:
        for o in self.orgs.values():
            if name in (o.name, o.entity):
                return o
        return None

    def org_of_entity(self, entity: str) -> Org | None:
        e = self.entities.get(entity)
        return self.orgs.get(e.org) if e and e.org else None

    def project(self, entity: str, name: str) -> Project | None:
        return self.projects.get(f"{entity}/{name}")

    def upsert_project(self, entity: str, name: str, *, description: str | None = None,
                       allow_all_types: bool | None = None, artifact_types: list[str] | None = None,
                       access: str | None = None) -> Project:
        with self.lock:
            if entity not in self.entities:
                raise StoreError(f"entity {entity} not found")
            key = f"{entity}/{name}"
            p = self.projects.get(key)
            if p is None:
                n = self._next()
                p = Project(id=gid("Project", n), num=n, entity=entity, name=name,
                            created_at=now_iso(), updated_at=now_iso())
                self.projects[key] = p
            if description is not None:
                p.description = description
            if allow_all_types is not None:
                p.allow_all_types = allow_all_types
            if artifact_types is not None:
                p.artifact_types = list(artifact_types)
            if access is not None:
                if access == "RESTRICTED" and p.access != "RESTRICTED" and not p.members:
                    p.members = [VIEWER]  # W&B makes whoever restricts a registry its admin member
                p.access = access
            p.updated_at = now_iso()
            self.save()
            return p

    def create_registry(self, org: str, name: str, *, description: str = "",
                        artifact_types: list[str] | None = None, access: str = "ORGANIZATION",
                        members: list[str] | None = None) -> Project:
        """A seed-side shortcut for what ``api.create_registry`` does over GraphQL; a
        RESTRICTED one is seen by ``members`` only (default: the viewer, its creator)."""
        o = self.orgs.get(org) or self.add_org(org)
        p = self.upsert_project(o.entity, REGISTRY_PREFIX + name, description=description,
                                allow_all_types=not artifact_types,
                                artifact_types=artifact_types or [], access=access)
        return p if members is None else self.set_project_access(p, members=members)

    def registries(self, org: Org) -> list[Project]:
        return [p for p in self.projects.values()
                if p.entity == org.entity and p.name.startswith(REGISTRY_PREFIX)]

    # ---- collections, artifacts, memberships -------------------------------------------
    def collection(self, entity: str, project: str, name: str) -> Collection | None:
        for c in self.collections.values():
            if c.entity == entity and c.project == project and c.name == name:
                return c
        return None

    def collections_in(self, entity: str, project: str, kind: str | None = None) -> list[Collection]:
        return [c for c in self.collections.values() if c.entity == entity and c.project == project
                and (kind is None or c.kind == kind)]

    def _collection(self, entity: str, project: str, name: str, kind: str, type_name: str,
                    description: str | None = None) -> Collection:
        c = self.collection(entity, project, name)
        if c is None:
            prefix = "ArtifactSequence" if kind == "sequence" else "ArtifactPortfolio"
            c = Collection(id=gid(prefix, self._next()), entity=entity, project=project, name=name,
                           kind=kind, type_name=type_name, description=description or "",
                           created_at=now_iso(), updated_at=now_iso())
            self.collections[c.id] = c
        elif c.kind != kind:
            raise StoreError(f"{name} is an artifact {c.kind}, not a {kind}")
        return c

    def memberships_of(self, coll_id: str) -> list[Membership]:
        ms = [m for m in self.memberships.values() if m.collection_id == coll_id]
        return sorted(ms, key=lambda m: m.version_index)

    def membership_by_alias(self, coll: Collection, token: str) -> Membership | None:
        ms = self.memberships_of(coll.id)
        for m in ms:
            if token == f"v{m.version_index}" or token in m.aliases:
                return m
        return None

    def membership_of_artifact(self, coll_id: str, artifact_id: str) -> Membership | None:
        for m in self.memberships.values():
            if m.collection_id == coll_id and m.artifact_id == artifact_id:
                return m
        return None

    def source_membership(self, art: Artifact) -> Membership | None:
        return self.membership_of_artifact(art.seq_id, art.id)

    @staticmethod
    def _is_version_alias(alias: str) -> bool:
        """``vN`` is W&B's to give: an added ``v3`` is ignored (W&B's documented alias limits)."""
        return alias.startswith("v") and alias[1:].isdigit()

    def _check_aliases(self, coll: Collection, aliases: list[str]) -> None:
        """W&B's documented alias limits: "aliases are case-sensitive, but a collection can't
        have two aliases that differ only in letter case". Raised before anything changes."""
        seen = {a.lower(): a for m in self.memberships_of(coll.id) for a in m.aliases}
        for alias in (a for a in aliases if a and not self._is_version_alias(a)):
            other = seen.setdefault(alias.lower(), alias)
            if other != alias:
                raise StoreError(f"alias {alias!r} differs only in case from the alias {other!r} "
                                 f"in artifact collection {coll.name!r}")

    def _set_aliases(self, coll: Collection, m: Membership, aliases: list[str]) -> None:
        """An alias names one membership per collection: adding it elsewhere moves it."""
        self._check_aliases(coll, aliases)
        for alias in aliases:
            if not alias or self._is_version_alias(alias):
                continue
            for other in self.memberships_of(coll.id):
                if other is not m and alias in other.aliases:
                    other.aliases.remove(alias)
            if alias not in m.aliases:
                m.aliases.append(alias)

    def _add_membership(self, coll: Collection, art: Artifact, aliases: list[str]) -> Membership:
        m = self.membership_of_artifact(coll.id, art.id)
        self._check_aliases(coll, ["latest", *aliases] if m is None else aliases)
        if m is None:
            m = Membership(id=gid("ArtifactCollectionMembership", self._next()), collection_id=coll.id,
                           artifact_id=art.id, version_index=coll.next_index, created_at=now_iso())
            coll.next_index += 1
            self.memberships[m.id] = m
            self._set_aliases(coll, m, ["latest"])
            coll.updated_at = now_iso()
        self._set_aliases(coll, m, aliases)
        return m

    def create_artifact(self, *, entity: str, project: str, collection: str, type_name: str,
                        digest: str, description: str | None = None, metadata: str | None = None,
                        aliases: list[str] | None = None, run: str | None = None,
                        client_id: str | None = None, history_step: int | None = None) -> Artifact:
        """W&B dedups by digest: the same contents in one sequence return the existing version."""
        with self.lock:
            if entity not in self.entities:
                self.add_entity(entity, "user")
            if self.project(entity, project) is None:
                self.upsert_project(entity, project)
            seq = self._collection(entity, project, collection, "sequence", type_name)
            for m in self.memberships_of(seq.id):
                a = self.artifacts[m.artifact_id]
                if a.digest == digest and a.state == "COMMITTED":
                    self._set_aliases(seq, m, list(aliases or []))
                    self.save()
                    return a
            n = self._next()
            art = Artifact(id=gid("Artifact", n), num=n, seq_id=seq.id, type_name=type_name,
                           digest=digest, description=description, metadata=metadata or "{}",
                           created_at=now_iso(), updated_at=now_iso(),
                           created_by=[entity, project, run] if run else None,
                           client_id=client_id, pending_aliases=list(aliases or []),
                           history_step=history_step)
            self.artifacts[art.id] = art
            self.save()
            return art

    def set_manifest(self, art_id: str, manifest_bytes: bytes) -> None:
        with self.lock:
            art = self.artifacts[art_id]
            art.manifest_md5 = self.blobs.put(manifest_bytes)
            self.save()

    def manifest(self, art: Artifact) -> dict[str, Any]:
        if not art.manifest_md5:
            return {"version": 1, "storagePolicy": "wandb-storage-policy-v1",
                    "storagePolicyConfig": {"storageLayout": "V2"}, "contents": {}}
        self.manifest_parses += 1
        return json.loads(self.blobs.get(art.manifest_md5))

    def contents(self, art: Artifact) -> "Contents":
        """A manifest's entries sorted by path, with an index by path: parsed once per
        manifest (they are stored by md5, so never change), not once per page of files.
        The last few are kept (a version of 100,000 files costs seconds to parse)."""
        key = art.manifest_md5 or ""
        with self.lock:
            hit = self._contents.get(key)
            if hit is not None:
                self._contents.move_to_end(key)
                return hit
        items = sorted(self.manifest(art).get("contents", {}).items())
        parsed = Contents(items, dict(items))
        with self.lock:
            self._contents[key] = parsed
            while len(self._contents) > 4:
                self._contents.popitem(last=False)
        return parsed

    def commit_artifact(self, art_id: str) -> Artifact:
        with self.lock:
            art = self.artifacts.get(art_id)
            if art is None:
                raise StoreError(f"artifact {art_id} not found")
            if art.state == "COMMITTED":
                return art
            if art.state == "DELETED":
                raise StoreError(f"artifact {art_id} was deleted")
            self._check_aliases(self.collections[art.seq_id], ["latest", *art.pending_aliases])
            contents = self.contents(art).by_path   # parsed once: the file pages that follow reuse it
            art.size = sum(int(e.get("size") or 0) for e in contents.values())
            art.file_count = len(contents)
            art.state = "COMMITTED"
            art.updated_at = now_iso()
            seq = self.collections[art.seq_id]
            m = self._add_membership(seq, art, art.pending_aliases)
            art.version_index = m.version_index
            art.pending_aliases = []
            self.save()
            return art

    def link(self, art_id: str, entity: str, project: str, portfolio: str,
             aliases: list[str] | None = None) -> Membership:
        """Link into a registry collection; the registry (project) must already exist."""
        with self.lock:
            art = self.artifacts.get(art_id)
            if art is None:
                raise StoreError(f"artifact {art_id} not found")
            if art.state != "COMMITTED":
                raise StoreError("artifact must be committed before linking")
            proj = self.project(entity, project)
            if proj is None:
                if project.startswith(REGISTRY_PREFIX):
                    raise StoreError(f"registry {project} not found in {entity}")
                proj = self.upsert_project(entity, project)
            if not proj.allow_all_types and art.type_name not in proj.artifact_types:
                raise StoreError(f"artifact type {art.type_name} is not allowed in {project}")
            coll = self._collection(entity, project, portfolio, "portfolio", art.type_name)
            m = self._add_membership(coll, art, list(aliases or []))
            self.save()
            return m

    def add_aliases(self, coll_id: str, art_id: str, aliases: list[str]) -> None:
        with self.lock:
            coll = self.collections[coll_id]
            m = self.membership_of_artifact(coll_id, art_id)
            if m is None:
                raise StoreError("artifact is not in that collection")
            self._set_aliases(coll, m, aliases)
            self.save()

    def delete_aliases(self, coll_id: str, art_id: str, aliases: list[str]) -> None:
        with self.lock:
            m = self.membership_of_artifact(coll_id, art_id)
            if m is None:
                raise StoreError("artifact is not in that collection")
            m.aliases = [a for a in m.aliases if a not in aliases]
            self.save()

    def unlink(self, coll_id: str, art_id: str) -> None:
        with self.lock:
            m = self.membership_of_artifact(coll_id, art_id)
            if m is not None:
                self._drop_membership(m)
                self.save()

    # ---- deletions and renames ---------------------------------------------------------
    def collection_by_id(self, coll_id: str) -> Collection | None:
        """A live or deleted collection: a deleted version still names its sequence."""
        return self.collections.get(coll_id) or self.deleted_collections.get(coll_id)

    def _drop_membership(self, m: Membership) -> None:
        """Remove a version from a collection. Its number is not reused (W&B leaves gaps:
        v0, v2) and ``latest`` passes to the newest version left (W&B keeps ``latest`` on
        the most recent version of a collection)."""
        del self.memberships[m.id]
        coll = self.collections.get(m.collection_id)
        if coll is None:
            return
        coll.updated_at = now_iso()
        rest = self.memberships_of(coll.id)
        if "latest" in m.aliases and rest and "latest" not in rest[-1].aliases:
            rest[-1].aliases.append("latest")

    def delete_artifact(self, art_id: str, delete_aliases: bool = False) -> Artifact:
        """``artifact.delete()``: the version becomes DELETED and leaves every collection
        it is in, its source sequence and the registry collections it was linked into (on
        W&B the links go with the source). W&B refuses while the version still has aliases
        (in any of those collections) unless ``deleteAliases`` is set."""
        with self.lock:
            art = self.artifacts.get(art_id)
            if art is None or art.state == "DELETED":
                raise StoreError(f"artifact {art_id} not found")
            ms = [m for m in self.memberships.values() if m.artifact_id == art_id]
            held = sorted({a for m in ms for a in m.aliases})
            if held and not delete_aliases:
                raise StoreError(f"cannot delete artifact {art_id}: it has aliases {held}; "
                                 "delete them first or set deleteAliases")
            for m in ms:
                self._drop_membership(m)
            art.state = "DELETED"
            art.updated_at = now_iso()
            self.save()
            return art

    def _live_collection(self, coll_id: str, kind: str) -> Collection:
        c = self.collections.get(coll_id)
        if c is None or c.kind != kind:
            raise StoreError(f"artifact {kind} {coll_id} not found")
        return c

    def _bury_collection(self, c: Collection) -> None:
        """Empty a collection and keep it only as a tombstone (state DELETED)."""
        for m in self.memberships_of(c.id):
            del self.memberships[m.id]
        del self.collections[c.id]
        c.state = "DELETED"
        c.updated_at = now_iso()
        self.deleted_collections[c.id] = c

    def delete_collection(self, coll_id: str, kind: str) -> Collection:
        """``collection.delete()``. A sequence takes its versions with it (each DELETED, its
        registry links removed); a portfolio only its links (the sources stay)."""
        with self.lock:
            c = self._live_collection(coll_id, kind)
            if kind == "sequence":
                for a in self.artifacts.values():
                    if a.seq_id == c.id and a.state != "DELETED":
                        for m in [m for m in self.memberships.values() if m.artifact_id == a.id]:
                            if m.collection_id != c.id:
                                self._drop_membership(m)
                        a.state, a.updated_at = "DELETED", now_iso()
            self._bury_collection(c)
            self.save()
            return c

    def update_collection(self, coll_id: str, kind: str, *, name: str | None = None,
                          description: str | None = None) -> Collection:
        """Rename / describe a collection; the old name then finds nothing."""
        with self.lock:
            c = self._live_collection(coll_id, kind)
            if name is not None and name != c.name:
                if not name:
                    raise StoreError("artifact collection name must not be empty")
                if self.collection(c.entity, c.project, name) is not None:
                    raise StoreError(f"an artifact collection named {name!r} already exists "
                                     f"in {c.entity}/{c.project}")
                c.name = name
            if description is not None:
                c.description = description
            c.updated_at = now_iso()
            self.save()
            return c

    def move_sequence(self, coll_id: str, type_name: str) -> Collection:
        """``collection.type = ...; save()``: a sequence and its versions change type.

        Refused while a version is linked into a collection of another type (W&B's
        behaviour here is not documented; a collection holds versions of one type, and a
        registry collection's versions are looked up by its type)."""
        with self.lock:
            c = self._live_collection(coll_id, "sequence")
            arts = {a.id for a in self.artifacts.values() if a.seq_id == c.id}
            linked = sorted({self.collections[m.collection_id].name for m in self.memberships.values()
                             if m.artifact_id in arts and m.collection_id != c.id
                             and self.collections[m.collection_id].type_name != type_name})
            if linked:
                raise StoreError(f"cannot change the type of {c.name!r} to {type_name!r}: its versions "
                                 f"are linked into {linked}, which hold another type")
            c.type_name = type_name
            for a in self.artifacts.values():
                if a.seq_id == c.id:
                    a.type_name = type_name
            c.updated_at = now_iso()
            self.save()
            return c

    def tag_collection(self, entity: str, project: str, name: str, add: list[str],
                       remove: list[str]) -> list[str]:
        """Add and remove a collection's tags; returns the tags added."""
        with self.lock:
            c = self.collection(entity, project, name)
            if c is None:
                raise StoreError(f"artifact collection {entity}/{project}/{name} not found")
            added = [t for t in dict.fromkeys(add) if t not in c.tags]
            c.tags = [t for t in c.tags if t not in remove] + added
            c.updated_at = now_iso()
            self.save()
            return added

    def rename_project(self, entity: str, old: str, new: str) -> Project:
        """``renameProject`` (a registry's ``name = ...; save()``): the project, its
        collections and its runs answer to the new name only."""
        with self.lock:
            p = self.project(entity, old)
            if p is None:
                raise StoreError(f"project {entity}/{old} not found")
            if old == new:
                return p
            if self.project(entity, new) is not None:
                raise StoreError(f"project {entity}/{new} already exists")
            del self.projects[f"{entity}/{old}"]
            p.name, p.updated_at = new, now_iso()
            self.projects[f"{entity}/{new}"] = p
            for c in [*self.collections.values(), *self.deleted_collections.values()]:
                if c.entity == entity and c.project == old:
                    c.project = new
            for key, r in list(self.runs.items()):
                if r.entity == entity and r.project == old:
                    del self.runs[key]
                    r.project = new
                    self.runs[f"{entity}/{new}/{r.name}"] = r
            for a in self.artifacts.values():
                if a.created_by and a.created_by[:2] == [entity, old]:
                    a.created_by = [entity, new, a.created_by[2]]
            self.save()
            return p

    def delete_project(self, project_id: str) -> Project:
        """``deleteModel`` (``registry.delete()``): the registry and its collections go; a
        version linked into it keeps its source."""
        with self.lock:
            p = next((q for q in self.projects.values() if q.id == project_id), None)
            if p is None:
                raise StoreError(f"project {project_id} not found")
            for c in self.collections_in(p.entity, p.name):
                if c.kind == "sequence":
                    self.delete_collection(c.id, "sequence")
                else:
                    self._bury_collection(c)
            del self.projects[f"{p.entity}/{p.name}"]
            self.save()
            return p

    def upsert_run(self, entity: str, project: str, name: str, **fields: Any) -> tuple[Run, bool]:
        with self.lock:
            if entity not in self.entities:
                self.add_entity(entity, "user")
            if self.project(entity, project) is None:
                self.upsert_project(entity, project)
            key = f"{entity}/{project}/{name}"
            r = self.runs.get(key)
            inserted = r is None
            if r is None:
                r = Run(id=gid("Run", self._next()), entity=entity, project=project, name=name,
                        display_name=name, created_at=now_iso(), heartbeat_at=now_iso())
                self.runs[key] = r
            for k, v in fields.items():
                if v is not None:
                    setattr(r, k, v)
            r.heartbeat_at = now_iso()
            self.save()
            return r, inserted

    def run(self, entity: str, project: str, name: str) -> Run | None:
        return self.runs.get(f"{entity}/{project}/{name}")

    def run_by_id(self, rid: str) -> Run | None:
        return next((r for r in self.runs.values() if r.id == rid), None)

    def runs_in(self, entity: str, project: str) -> list[Run]:
        """A project's runs in creation order (``runs`` keeps insertion order, also across a
        restart: created_at has one-second resolution, so it cannot break ties itself)."""
        return [r for r in self.runs.values() if r.entity == entity and r.project == project]

    def stream_run(self, entity: str, project: str, name: str, payload: dict[str, Any]) -> Run | None:
        """Apply one file_stream POST as W&B does: ``files`` chunks of ``wandb-history.jsonl``,
        ``wandb-events.jsonl`` and ``output.log`` land at their line ``offset`` (a retried
        chunk rewrites the same lines), the last ``wandb-summary.json`` line is the whole
        summary, and ``complete`` ends the run with its ``exitcode``. None: no such run.
        Raises ValueError (nothing changed) for a summary that is not a JSON object."""
        files = payload.get("files") or {}
        check_stream_files(files)
        with self.lock:
            r = self.run(entity, project, name)
            if r is None:
                return None
            for fname, chunk in files.items():
                stream_file(r, fname, chunk.get("offset") or 0, chunk["content"])
            if payload.get("complete"):
                r.exitcode = payload.get("exitcode")
                r.state = "finished" if not r.exitcode else "failed"
            r.heartbeat_at = now_iso()
            self.save()
            return r

    def record_use(self, run: Run, art_id: str, used_as: str | None, art_entity: str | None,
                   art_project: str | None) -> Artifact:
        with self.lock:
            art = self.artifacts.get(art_id)
            if art is None:
                raise StoreError(f"artifact {art_id} not found")
            self.uses.append(Use(run_id=run.id, artifact_id=art_id, used_as=used_as,
                                 artifact_entity=art_entity, artifact_project=art_project,
                                 at=now_iso()))
            self.save()
            return art

    def uses_by_run(self, run: Run) -> list[Use]:
        return [u for u in self.uses if u.run_id == run.id]
