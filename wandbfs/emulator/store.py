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
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REGISTRY_PREFIX = "wandb-registry-"
VIEWER = "alice"


def gid(kind: str, n: int | str) -> str:
    """W&B ids are base64 of ``Type:number``; the SDK treats them as opaque strings."""
    return base64.b64encode(f"{kind}:{n}".encode()).decode()


def now_iso(ts: float | None = None) -> str:
    t = datetime.fromtimestamp(ts if ts is not None else time.time(), tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S")


class StoreError(Exception):
    """A client mistake; becomes a GraphQL error message, like W&B's own."""


@dataclass
class Org:
    name: str
    entity: str
    id: str


@dataclass
class Entity:
    name: str
    id: str
    kind: str  # "user" | "team" | "organization"
    org: str | None = None


@dataclass
class Project:
    id: str
    num: int
    entity: str
    name: str
    description: str = ""
    created_at: str = ""
    updated_at: str = ""
    access: str = "PRIVATE"
    allow_all_types: bool = True
    artifact_types: list[str] = field(default_factory=list)


@dataclass
class Collection:
    id: str
    entity: str
    project: str
    name: str
    kind: str  # "sequence" | "portfolio"
    type_name: str
    description: str = ""
    created_at: str = ""
    updated_at: str = ""
    tags: list[str] = field(default_factory=list)
    next_index: int = 0


@dataclass
class Artifact:
    id: str
    num: int
    seq_id: str
    type_name: str
    digest: str
    state: str = "PENDING"
    version_index: int | None = None
    description: str | None = None
    metadata: str = "{}"
    size: int = 0
    file_count: int = 0
    manifest_md5: str | None = None
    created_at: str = ""
    updated_at: str = ""
    created_by: list[str] | None = None  # [entity, project, run]
    client_id: str | None = None
    pending_aliases: list[str] = field(default_factory=list)
    history_step: int | None = None


@dataclass
class Membership:
    id: str
    collection_id: str
    artifact_id: str
    version_index: int
    aliases: list[str] = field(default_factory=list)
    created_at: str = ""


@dataclass
class Run:
    id: str
    entity: str
    project: str
    name: str
    display_name: str = ""
    config: str = "{}"
    job_type: str | None = None
    state: str = "running"
    created_at: str = ""
    heartbeat_at: str = ""
    summary: str = "{}"
    files: dict[str, str] = field(default_factory=dict)  # name -> md5 of uploaded content
    exitcode: int | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Use:
    run_id: str
    artifact_id: str
    used_as: str | None
    artifact_entity: str | None
    artifact_project: str | None
    at: str


_TABLES = {"orgs": Org, "entities": Entity, "projects": Project, "collections": Collection,
           "artifacts": Artifact, "memberships": Membership, "runs": Run}


@dataclass(frozen=True)
class Contents:
    """A manifest's ``contents``: ``(path, entry)`` sorted by path, and by path."""

    items: list[tuple[str, dict[str, Any]]]
    by_path: dict[str, dict[str, Any]]


class BlobStore:
    """Bytes by md5 hex, as W&B stores artifact files (content-addressed, so dedup is free)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, md5_hex: str) -> Path:
        if len(md5_hex) != 32 or any(c not in "0123456789abcdef" for c in md5_hex):
            raise KeyError(md5_hex)
        return self.root / md5_hex[:2] / md5_hex[2:]

    def has(self, md5_hex: str) -> bool:
        try:
            return self.path(md5_hex).is_file()
        except KeyError:
            return False

    def put(self, data: bytes) -> str:
        h = hashlib.md5(data).hexdigest()
        p = self.path(h)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + f".tmp{os.getpid()}.{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, p)
        return h

    def put_file(self, src: Path) -> str:
        """Store a file by streaming it (demo data has a 64 MiB file)."""
        h = hashlib.md5()
        with open(src, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        hexd = h.hexdigest()
        p = self.path(hexd)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".tmp")
            with open(src, "rb") as fi, open(tmp, "wb") as fo:
                for chunk in iter(lambda: fi.read(1 << 20), b""):
                    fo.write(chunk)
            os.replace(tmp, p)
        return hexd

    def get(self, md5_hex: str) -> bytes:
        return self.path(md5_hex).read_bytes()


class Store:
    """All emulator state. Methods take ``self.lock`` themselves; callers never need to."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.state_dir / "blobs")
        self.lock = threading.RLock()
        self._contents: OrderedDict[str, Contents] = OrderedDict()   # parsed manifests, by md5
        self.counter = 0
        self.orgs: dict[str, Org] = {}
        self.entities: dict[str, Entity] = {}
        self.projects: dict[str, Project] = {}
        self.collections: dict[str, Collection] = {}
        self.artifacts: dict[str, Artifact] = {}
        self.memberships: dict[str, Membership] = {}
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
        for table, cls in _TABLES.items():
            setattr(self, table, {k: cls(**v) for k, v in raw[table].items()})
        self.uses = [Use(**u) for u in raw["uses"]]

    def save(self) -> None:
        with self.lock:
            raw: dict[str, Any] = {"counter": self.counter, "uses": [dataclasses.asdict(u) for u in self.uses]}
            for table in _TABLES:
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
                p.access = access
            p.updated_at = now_iso()
            self.save()
            return p

    def create_registry(self, org: str, name: str, *, description: str = "",
                        artifact_types: list[str] | None = None) -> Project:
        """A seed-side shortcut for what ``api.create_registry`` does over GraphQL."""
        o = self.orgs.get(org) or self.add_org(org)
        return self.upsert_project(o.entity, REGISTRY_PREFIX + name, description=description,
                                   allow_all_types=not artifact_types,
                                   artifact_types=artifact_types or [], access="ORGANIZATION")

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

    def _set_aliases(self, coll: Collection, m: Membership, aliases: list[str]) -> None:
        """An alias names one membership per collection: adding it elsewhere moves it."""
        for alias in aliases:
            if not alias or alias.startswith("v") and alias[1:].isdigit():
                continue
            for other in self.memberships_of(coll.id):
                if other is not m and alias in other.aliases:
                    other.aliases.remove(alias)
            if alias not in m.aliases:
                m.aliases.append(alias)

    def _add_membership(self, coll: Collection, art: Artifact, aliases: list[str]) -> Membership:
        m = self.membership_of_artifact(coll.id, art.id)
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
            contents = self.manifest(art).get("contents", {})
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
                del self.memberships[m.id]
                self.save()

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
