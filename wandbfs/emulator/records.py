"""The emulator's records: W&B's organizations, entities, projects, collections, artifacts,
memberships, runs and uses, as plain dataclasses (``Store`` keeps and persists them), and
the two facts every part names them with: W&B's id format and its timestamp format."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
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
    # Users in the organization. The viewer is in every org unless a test says otherwise, so
    # state saved before the permission model existed loads with her in all of them.
    members: list[str] = field(default_factory=lambda: [VIEWER])


@dataclass
class Entity:
    name: str
    id: str
    kind: str  # "user" | "team" | "organization"
    org: str | None = None
    members: list[str] = field(default_factory=list)  # a team's users


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
    members: list[str] = field(default_factory=list)  # users and teams invited to a RESTRICTED one


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
    state: str = "READY"  # "DELETED" once in Store.deleted_collections


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
    # What file_stream sent: wandb-history.jsonl / wandb-events.jsonl lines as JSON text, and
    # how many output.log lines (the console itself is not kept).
    history: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    log_line_count: int = 0


@dataclass
class Use:
    run_id: str
    artifact_id: str
    used_as: str | None
    artifact_entity: str | None
    artifact_project: str | None
    at: str


TABLES = {"orgs": Org, "entities": Entity, "projects": Project, "collections": Collection,
           "deleted_collections": Collection,
           "artifacts": Artifact, "memberships": Membership, "runs": Run}


@dataclass(frozen=True)
class Contents:
    """A manifest's ``contents``: ``(path, entry)`` sorted by path, and by path."""

    items: list[tuple[str, dict[str, Any]]]
    by_path: dict[str, dict[str, Any]]
