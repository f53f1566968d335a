"""The W&B client: every call wandbfs makes to W&B, through the official SDK.

All functions here are blocking (the SDK is synchronous) and return plain data, so the
filesystem calls them through ``trio.to_thread.run_sync`` with a capacity limiter and never
holds SDK objects. SDK exceptions are mapped to three kinds the FUSE layer turns into
errnos: ``NotFound`` (ENOENT), ``AuthError`` (EACCES), ``BackendError`` (EIO).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, TypeVar

import urllib3

from wandbfs.model.manifest import Manifest, parse_manifest
from wandbfs.model.retry_after import next_wait, retry_after_s
from wandbfs.model.names import home_entity, is_artifact_project, qualified_name, registry_project, version_index

log = logging.getLogger(__name__)
T = TypeVar("T")


MAX_RETRY_AFTER_S = 10.0
"""The longest a manifest GET waits in all for what storage's ``Retry-After`` asks."""


class WandbError(Exception):
    """Base of the errors this module raises."""


class NotFound(WandbError):
    pass


class AuthError(WandbError):
    pass


class BackendError(WandbError):
    pass


class Denied(AuthError):
    """W&B refuses this key the thing asked for ("permission denied"): a restricted registry
    it was not invited to. EACCES, like refused credentials, with its own log line."""


class Unreachable(BackendError):
    """W&B gave no answer (a refused or dropped connection, a timeout, a deadline passed):
    unlike an error W&B sent, this says nothing about the thing asked for."""


def parse_time(s: str | None) -> float:
    """W&B timestamps are UTC without a zone ("2026-11-27T05:38:19")."""
    if not s:
        return 0.0
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


@dataclass(frozen=True)
class RegistryInfo:
    name: str        # display name, without the wandb-registry- prefix
    created_at: float


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    type: str
    created_at: float


@dataclass(frozen=True)
class VersionSummary:
    index: int
    aliases: tuple[str, ...]
    created_at: float
    artifact_id: str


@dataclass(frozen=True)
class CollectionVersions:
    """A collection's versions and where each alias points, as of one listing."""

    versions: dict[int, VersionSummary]
    aliases: dict[str, int]


@dataclass(frozen=True)
class VersionsPage:
    """The first page of a collection's versions: what a lookup of the collection gets.

    ``complete``: there are no more pages, so a name missing here is missing from W&B too;
    otherwise it says only what is there."""

    versions: CollectionVersions
    complete: bool
    type: str | None      # the versions' artifact type (None: no versions)


@dataclass(frozen=True)
class ResolvedName:
    """Where a registry name points now, as W&B resolves it."""

    index: int            # the collection's own vN (never the source sequence's)
    type: str | None      # the artifact type


@dataclass(frozen=True)
class VersionDetail:
    """One immutable version: its identity and its manifest."""

    org: str
    registry: str
    collection: str
    index: int
    artifact_id: str
    entity: str
    project: str
    created_at: float
    aliases: tuple[str, ...]
    manifest: Manifest
    metadata: dict[str, Any]
    raw_manifest: bytes = field(default=b"", compare=False, repr=False)
    """The manifest's JSON as W&B sent it, until the metastore has saved it (then dropped:
    for a version of 200,000 files it is 30 MB, and 100 MB as a dict)."""

    @property
    def name(self) -> str:
        return qualified_name(self.org, self.registry, self.collection, f"v{self.index}")


@dataclass(frozen=True)
class VersionRef:
    """A registry version named without its manifest: what the membership queries need
    (``file_urls_for`` takes this or a ``VersionDetail``)."""

    entity: str
    project: str
    collection: str
    index: int
    name: str


@dataclass(frozen=True)
class FileUrl:
    """One file's signed URL as W&B answered a request for named files."""

    name: str             # the name W&B gives the file (its path, or only its last part)
    digest: str | None    # the manifest digest W&B has for it (base64 md5)
    url: str


_TRANSPORT_WORDS = ("connection refused", "connection reset", "connection aborted", "timed out", "timeout",
                    "max retries exceeded", "giving up after", "unreachable", "name or service not known",
                    "remote end closed", "service process is busy")


def _no_answer(e: BaseException) -> bool:
    """Did W&B fail to answer at all (transport), as opposed to answering with an error?"""
    import requests
    from wandb.sdk.lib.service.service_connection import WandbApiFailedError

    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 6:
        if isinstance(cur, (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError,
                            ConnectionError, TimeoutError)):
            return True
        if isinstance(cur, WandbApiFailedError):
            resp = cur.response
            status = resp.http_status if resp is not None else 0
            if not status or status in (408, 504):
                return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    low = str(e).lower()
    return any(w in low for w in _TRANSPORT_WORDS)


def _texts(e: BaseException) -> Iterator[str]:
    """The messages of ``e`` and what it was raised from (the SDK wraps W&B's answer:
    "Failed to load registry" from "permission denied"). Local OS errors in the chain are
    skipped: a file this host may not open (PermissionError) is not W&B refusing the key."""
    cur: BaseException | None = e
    for _ in range(6):
        if cur is None:
            return
        if not isinstance(cur, OSError):
            yield str(cur)
        cur = cur.__cause__ or cur.__context__


def _classify(e: BaseException) -> WandbError:
    from wandb.errors import AuthenticationError, CommError

    text = str(e)
    if isinstance(e, AuthenticationError):
        if _no_answer(e):
            return Unreachable(f"W&B unreachable: {text}")
        return AuthError(text)
    if any("permission denied" in t.lower() or "PERMISSION_ERROR" in t for t in _texts(e)):
        return Denied(text)
    if "401" in text or "403" in text and "Forbidden" in text or "not logged in" in text:
        return AuthError(text)
    if isinstance(e, (CommError, ValueError)) and (
            "not found" in text.lower() or "cannot be linked/fetched" in text or "Failed to load" in text):
        return NotFound(text)
    if _no_answer(e):
        return Unreachable(f"W&B unreachable: {type(e).__name__}: {text}")
    return BackendError(f"{type(e).__name__}: {text}")


class WandbClient:
    """One ``wandb.Api`` per mount (never shared across mounts)."""

    def __init__(self, api_factory: Callable[[], Any] | None = None) -> None:
        self._factory = api_factory or self._default_factory
        self._api: Any = None
        self._lock = threading.Lock()
        self._http = urllib3.PoolManager(num_pools=2, maxsize=8, retries=False)
        # Artifact objects from the last version listing or lookup, by (org, registry,
        # collection, index): loading a manifest through them costs one GraphQL request, not two.
        self._listed: dict[tuple[str, str, str, int], Any] = {}
        # An org's display name -> its org entity's name, from any answer that names it: with
        # it, a version is looked up by name in one request (the SDK's api.artifact() asks
        # for the default entity and the org's info first).
        self._org_entities: dict[str, str] = {}
        # A project collection's artifact type, by (entity, project, collection): the SDK's
        # project queries name a collection through its type (learnt from listings and lookups).
        self._types: dict[tuple[str, str, str], str] = {}

    @staticmethod
    def _default_factory() -> Any:
        import wandb

        api = wandb.Api(timeout=30)
        _import_lookup_modules()
        return api

    def api(self) -> Any:
        with self._lock:
            if self._api is None:
                self._api = self._call(self._factory)
            return self._api

    def reset(self) -> None:
        """Drop the Api so the next call re-authenticates (after a key change or outage)."""
        with self._lock:
            self._api = None

    @staticmethod
    def _call(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except WandbError:
            raise
        except Exception as e:  # noqa: BLE001 - the SDK raises many types; map them all
            raise _classify(e) from e

    def probe(self) -> None:
        """One real round trip to W&B (never an answer from the SDK's memory): the breaker's
        test of whether W&B answers again."""
        def run() -> None:
            from wandb.sdk.internal._generated.operations import SERVER_FEATURES_QUERY_GQL

            self.api()._service_api.execute_graphql(SERVER_FEATURES_QUERY_GQL)
        self._call(run)

    def prepare(self, org: str) -> None:
        """What the SDK asks W&B once per mount before its first registry query (the server's
        features, the org's search features), asked now, at mount start, so that a
        lookup's first query is its only one."""
        def run() -> None:
            from wandb.apis.public.registries._utils import advanced_search_enabled
            from wandb.sdk.artifacts._gqlutils import omit_artifact_fields

            service = self.api()._service_api
            omit_artifact_fields(service)
            advanced_search_enabled(service, org)
        self._call(run)

    # ---- identity ----------------------------------------------------------------------
    def viewer_orgs(self) -> list[str]:
        """The organizations the API key's user belongs to (display names)."""
        def run() -> list[str]:
            from wandb.apis.public.utils import org_info_from_entity

            api = self.api()
            info = org_info_from_entity(api._service_api, api.default_entity)
            orgs = []
            if info and info.organization:
                orgs.append(info.organization)
            if info and info.user:
                orgs.extend(info.user.organizations)
            for o in orgs:
                if getattr(o, "org_entity", None) is not None:
                    self._org_entities[o.name] = o.org_entity.name
            return sorted({o.name for o in orgs})
        return self._call(run)

    def viewer_entities(self) -> list[str]:
        """The entities whose projects the root lists (``@<entity>``): the API key's own
        and its teams, one request."""
        def run() -> list[str]:
            viewer = self.api().viewer
            return sorted({str(viewer.entity), *viewer.teams} - {"", "None"})
        return self._call(run)

    def entity_exists(self, entity: str) -> bool:
        """Does W&B know an entity (user or team) of this name? One request."""
        def run() -> bool:
            from wandb.sdk.artifacts._gqlutils import org_info_from_entity

            return org_info_from_entity(self.api()._service_api, entity) is not None
        return self._call(run)

    def org_of_entity(self, entity: str) -> str | None:
        """The organization whose org entity this is, if a listing named it."""
        return next((o for o, e in self._org_entities.items() if e == entity), None)

    def default_entity(self) -> str:
        """The API key's default entity (a run path's ``entity`` when none is given)."""
        return self._call(lambda: str(self.api().default_entity))

    def registries(self, org: str) -> list[RegistryInfo]:
        """The org's registries: one request per 100; for an ``@entity`` home, its projects
        (registries' projects left out: they are reached through their org)."""
        if (entity := home_entity(org)) is not None:
            return self.projects(entity)

        def run() -> list[RegistryInfo]:
            out = []
            for r in self.api().registries(organization=org):
                if getattr(r, "entity", None):
                    self._org_entities[org] = str(r.entity)
                out.append(RegistryInfo(r.name, parse_time(getattr(r, "created_at", None))))
            return out
        return self._call(run)

    def registry_access(self, org: str, registry: str) -> None:
        """Raises ``Denied`` when W&B refuses this key the registry (listings leave out what a
        key may not open, so a name missing from one may be that), ``NotFound`` when it is
        absent; nothing when it is open. One request once the org's entity is known (the
        SDK's ``Registry.load`` query, sent directly); ``api.registry`` (two) before."""
        def run() -> None:
            entity = self._org_entities.get(org)
            if entity is None:
                self.api().registry(registry, organization=org)
                return
            from wandb.sdk.artifacts._generated import FETCH_REGISTRY_GQL, FetchRegistry

            found = self.api()._service_api.execute_graphql(
                FETCH_REGISTRY_GQL, variables={"name": registry_project(registry), "entity": entity},
                parse=FetchRegistry.model_validate_json)
            if not (found.entity and found.entity.project):
                raise NotFound(f"registry {registry!r} not found in {org!r}")
        self._call(run)

    def projects(self, entity: str) -> list[RegistryInfo]:
        """An entity's projects that can hold artifacts: one request per 200."""
        def run() -> list[RegistryInfo]:
            return [RegistryInfo(str(p.name), parse_time(getattr(p, "created_at", None)))
                    for p in self.api().projects(entity, per_page=200) if is_artifact_project(str(p.name))]
        return self._call(run)

    def _project_collections(self, entity: str, project: str) -> list[CollectionInfo]:
        """A project's collections of every type: one request for the types, then one per
        type and 100 collections (a project has few types; nothing per collection)."""
        api, out = self.api(), []
        for t in api.artifact_types(project=f"{entity}/{project}"):
            for c in api.artifact_collections(f"{entity}/{project}", str(t.name), per_page=100):
                self._types[(entity, project, str(c.name))] = str(t.name)
                out.append(CollectionInfo(str(c.name), str(t.name), parse_time(getattr(c, "created_at", None))))
        return out

    def _project_versions(self, entity: str, project: str, collection: str, per_page: int) -> Any:
        """The SDK's version listing of a project collection (``api.artifacts``), which needs
        the collection's type: known from a listing, else from its ``latest`` (one request)."""
        key = (entity, project, collection)
        if key not in self._types:
            art = self._artifact(f"@{entity}", project, collection, "latest")
            self._types[key] = str(art.type)
        return self.api().artifacts(self._types[key], f"{entity}/{project}/{collection}", per_page=per_page)

    def _registry_search(self, org: str, registry: str) -> Any:
        """The SDK's registry search narrowed to one registry (it adds the name's prefix)."""
        return self.api().registries(organization=org, filter={"name": registry_project(registry)})

    def collections(self, org: str, registry: str) -> list[CollectionInfo]:
        """A registry's collections: one request per 100 (``api.registry(...).collections()``
        would first look the org and the registry up, two more)."""
        def run() -> list[CollectionInfo]:
            if (entity := home_entity(org)) is not None:
                return self._project_collections(entity, registry)
            return [CollectionInfo(c.name, c.type, parse_time(c.created_at))
                    for c in self._registry_search(org, registry).collections()]
        return self._call(run)

    def _version_search(self, org: str, registry: str, collection: str, per_page: int) -> Any:
        if (entity := home_entity(org)) is not None:
            return self._project_versions(entity, registry, collection, per_page)
        return self._registry_search(org, registry).collections(
            filter={"name": collection}).versions(per_page=per_page)

    def _summary(self, org: str, registry: str, collection: str, art: Any) -> VersionSummary:
        """One version as listed; its Artifact is kept for the manifest load that follows."""
        idx = registry_index(art)
        self._listed[(org, registry, collection, idx)] = art
        if getattr(art, "entity", None) and home_entity(org) is None:
            self._org_entities.setdefault(org, str(art.entity))
        if home_entity(org) is not None and getattr(art, "type", None):
            self._types.setdefault((str(home_entity(org)), registry, collection), str(art.type))
        al = tuple(x for x in art.aliases if version_index(x) is None)
        return VersionSummary(idx, al, parse_time(art.created_at), art.id)

    def _collect(self, org: str, registry: str, collection: str, arts: Any) -> CollectionVersions:
        versions: dict[int, VersionSummary] = {}
        aliases: dict[str, int] = {}
        for a in arts:
            v = self._summary(org, registry, collection, a)
            versions[v.index] = v
            for x in v.aliases:
                aliases[x] = v.index
        return CollectionVersions(versions, aliases)

    def versions(self, org: str, registry: str, collection: str) -> CollectionVersions:
        """Every version of a collection and where its aliases point: one request per 100
        (the registry's version search, which needs neither the collection's type nor its id)."""
        def run() -> CollectionVersions:
            return self._collect(org, registry, collection, self._version_search(org, registry, collection, 100))
        return self._call(run)

    def versions_head(self, org: str, registry: str, collection: str, per_page: int = 100) -> VersionsPage:
        """The first page of ``versions``, one request: it says the collection exists (it has
        versions), and for most collections it is the whole listing."""
        def run() -> VersionsPage:
            search = self._version_search(org, registry, collection, per_page)
            try:
                next(search)           # loads the first page (and skips pages left empty by access rules)
            except StopIteration:
                return VersionsPage(CollectionVersions({}, {}), True, None)
            arts = [a for a in search.objects if a is not None]
            page = search.last_response.page_info if search.last_response is not None else None
            return VersionsPage(self._collect(org, registry, collection, arts),
                                not (page and page.has_next_page), str(arts[0].type) if arts else None)
        return self._call(run)

    # ---- one version -------------------------------------------------------------------
    def _artifact(self, org: str, registry: str, collection: str, token: str) -> Any:
        """``org/wandb-registry-R/C:token`` from W&B: one request once the org's entity is
        known, else through ``api.artifact`` (which finds it first). A project artifact's
        ``entity/project/name:token`` is one request."""
        from wandb.sdk.artifacts._validators import FullArtifactPath
        from wandb.sdk.artifacts.artifact import Artifact

        if (home := home_entity(org)) is not None:
            path = FullArtifactPath(prefix=home, project=registry, name=f"{collection}:{token}")
            return Artifact._from_name(path=path, service_api=self.api()._service_api)
        entity = self._org_entities.get(org)
        if entity is None:
            return self.api().artifact(qualified_name(org, registry, collection, token))
        path = FullArtifactPath(prefix=entity, project=registry_project(registry), name=f"{collection}:{token}")
        return Artifact._from_name(path=path, service_api=self.api()._service_api)

    def resolve_name(self, org: str, registry: str, collection: str, token: str) -> ResolvedName:
        """W&B's answer for ``org/wandb-registry-R/C:token`` (vN or alias), without the manifest.

        The index is ``registry_index``'s, not ``Artifact.version`` (the source sequence's
        number when W&B sends the membership's none), so ``wandbfs resolve`` names the
        ``vN`` a mount shows for a collection fed by several source artifacts.
        """
        def run() -> ResolvedName:
            art = self._artifact(org, registry, collection, token)
            return ResolvedName(registry_index(art), str(art.type) if art.type else None)
        return self._call(run)

    def find_version(self, org: str, registry: str, collection: str, token: str) -> VersionSummary:
        """The version ``token`` (vN or alias) names now, looked up by name (one request),
        not by listing the collection; ``NotFound`` if W&B has no such name."""
        def run() -> VersionSummary:
            return self._summary(org, registry, collection, self._artifact(org, registry, collection, token))
        return self._call(run)

    def version(self, org: str, registry: str, collection: str, token: str) -> VersionDetail:
        """Resolve ``token`` (vN or alias) on the server and load the version's manifest."""
        def run() -> VersionDetail:
            art = None
            if (idx := version_index(token)) is not None:
                art = self._listed.pop((org, registry, collection, idx), None)
            if art is None:
                art = self._artifact(org, registry, collection, token)
            body = self._fetch_manifest(art)
            manifest = parse_manifest(body)  # from the bytes: duplicate paths are reported
            key = (org, registry, collection, registry_index(art))
            return VersionDetail(org=org, registry=registry, collection=collection,
                                 index=key[3], artifact_id=art.id, entity=art.entity,
                                 project=art.project, created_at=parse_time(art.created_at),
                                 aliases=tuple(art.aliases), manifest=manifest,
                                 metadata=dict(art.metadata or {}), raw_manifest=body)
        return self._call(run)

    def _fetch_manifest(self, art: Any) -> bytes:
        """The manifest's URL from GraphQL (through the SDK), its bytes with our HTTP client.

        ``artifact.manifest`` would GET the manifest with the SDK's hard-coded urllib3 retry
        (16 tries with backoff: about 20 minutes against a dead server), which would hang a
        lookup; we use the same GraphQL operation and a bounded GET instead.
        """
        from wandb.sdk.artifacts._generated import FETCH_ARTIFACT_MANIFEST_GQL, FetchArtifactManifest

        result = art._service_api.execute_graphql(
            FETCH_ARTIFACT_MANIFEST_GQL, variables={"id": art.id},
            parse=FetchArtifactManifest.model_validate_json)
        if not (result.artifact and result.artifact.current_manifest):
            raise NotFound(f"artifact {art.id} has no manifest")
        url = result.artifact.current_manifest.file.direct_url
        last: Exception | None = None
        asked_total = 0.0
        for attempt in range(3):
            asked = None
            try:
                r = self._http.request("GET", url, timeout=urllib3.Timeout(connect=10, read=30))
            except urllib3.exceptions.HTTPError as e:
                last = e
            else:
                if r.status == 200:
                    return bytes(r.data)
                last = BackendError(f"manifest GET: HTTP {r.status}")
                if r.status < 500 and r.status != 429:
                    break
                asked = retry_after_s(r.headers.get("Retry-After"))
            if attempt == 2:
                break
            # As long as storage asks, MAX_RETRY_AFTER_S in all (the lookup's own deadline bounds the rest).
            delay = next_wait(asked, 0.5 * (attempt + 1), asked_total, MAX_RETRY_AFTER_S)
            if delay is None:
                last = BackendError(f"manifest GET: storage asks to retry after {asked:g}s: {last}")
                break
            asked_total += delay if asked is not None else 0.0
            time.sleep(delay)
        raise BackendError(f"cannot fetch the manifest of {art.id}: {last}")

    def _membership_files(self, detail: VersionDetail | VersionRef, query: str, parse: Callable[[str], Any],
                          **variables: Any) -> Iterator[Any]:
        """The pages of a version's files, through the membership of the collection's
        ``vN`` (the SDK's own queries name the version by ``Artifact.version``, which can
        be the source sequence's number: see ``registry_index``). Blocking; the caller
        stops reading pages when it has what it wants."""
        service = self.api()._service_api
        cursor = None
        while True:
            result = service.execute_graphql(
                query, variables={"entity": detail.entity, "project": detail.project,
                                  "collection": detail.collection, "alias": f"v{detail.index}",
                                  "cursor": cursor, **variables}, parse=parse)
            project = result.project
            coll = project.artifact_collection if project else None
            membership = coll.artifact_membership if coll else None
            files = membership.files if membership else None
            if files is None:
                raise NotFound(f"no files for {detail.name}")
            yield files
            if not files.page_info.has_next_page:
                return
            cursor = files.page_info.end_cursor

    def file_urls(self, detail: VersionDetail) -> dict[str, str]:
        """Signed URLs for every file of a version (5,000 a page, like artifact.download()),
        with the SDK's ``GetArtifactMembershipFileUrls`` operation."""
        def run() -> dict[str, str]:
            from wandb.sdk.artifacts._generated import (GET_ARTIFACT_MEMBERSHIP_FILE_URLS_GQL,
                                                        GetArtifactMembershipFileUrls)

            urls: dict[str, str] = {}
            for files in self._membership_files(detail, GET_ARTIFACT_MEMBERSHIP_FILE_URLS_GQL,
                                                GetArtifactMembershipFileUrls.model_validate_json, perPage=5000):
                for edge in files.edges:
                    if edge.node and edge.node.direct_url:
                        urls[edge.node.name] = edge.node.direct_url
            return urls
        return self._call(run)

    def version_ref(self, org: str, registry: str, collection: str, index: int) -> VersionRef | None:
        """The version as the membership queries name it, without loading it; None while the
        org's entity is not known yet (it is once the org's registries are listed)."""
        if (home := home_entity(org)) is not None:
            return VersionRef(home, registry, collection, index, qualified_name(org, registry, collection, f"v{index}"))
        entity = self._org_entities.get(org)
        if entity is None:
            return None
        return VersionRef(entity, registry_project(registry), collection, index,
                          qualified_name(org, registry, collection, f"v{index}"))

    def file_urls_for(self, detail: VersionDetail | VersionRef, names: list[str]) -> list[FileUrl]:
        """Signed URLs of the named files of a version, in one request (for a version too big
        to list whole when one file is opened): the SDK's ``Artifact.files(names=...)``
        operation (``ArtifactMembershipFiles`` with ``fileNames``), through the membership of
        the collection's ``vN`` like ``file_urls``. What W&B sends back, as it sends it: the
        caller matches answers to the names it asked for."""
        def run() -> list[FileUrl]:
            from wandb.sdk.artifacts._generated import ARTIFACT_MEMBERSHIP_FILES_GQL, ArtifactMembershipFiles

            out: list[FileUrl] = []
            for files in self._membership_files(detail, ARTIFACT_MEMBERSHIP_FILES_GQL,
                                                ArtifactMembershipFiles.model_validate_json,
                                                fileNames=list(names), perPage=max(1, len(names))):
                for e in files.edges:
                    node = e.node
                    if node and node.direct_url:   # by either digest W&B sends (the same base64 md5)
                        for digest in [d for d in dict.fromkeys((node.digest, node.md_5)) if d] or [None]:
                            out.append(FileUrl(node.name, digest, node.direct_url))
                if len(out) >= 4 * len(names) or not files.edges:
                    break
            return out
        return self._call(run)


def _import_lookup_modules() -> None:
    """Import with the Api (at sign-in, before the mount answers) what a first lookup would
    otherwise import: the SDK's registry search, its page models (pydantic generics, built
    on first use: 0.3-0.7 s) and the artifact models, which a fresh mount's first path, or its
    start-up loads, would wait for; the file-URL models too (20-25 ms on the first open's
    URL request: the SDK's ``_generated`` package builds each operation's models lazily)."""
    import wandb.apis.public.registries.registries_search  # noqa: F401
    import wandb.sdk.artifacts._models.pagination  # noqa: F401
    import wandb.sdk.artifacts.artifact  # noqa: F401
    from wandb.sdk.artifacts._generated import (ArtifactMembershipByName, ArtifactMembershipFiles,  # noqa: F401
                                                FetchArtifactManifest, FetchRegistries,
                                                GetArtifactMembershipFileUrls, RegistryCollections,
                                                RegistryVersions)


def registry_index(art: Any) -> int:
    """The version number inside the collection the artifact was fetched through.

    ``Artifact.version`` falls back to the index in the *source* sequence when the server
    sends no ``vN`` alias, which is wrong for a registry collection that links artifacts
    from several sources; the name (``collection:vN``) carries the collection's own index.
    """
    index = version_index(str(art.name).rsplit(":", 1)[-1])
    if index is None:
        index = version_index(str(art.version))
    if index is None:
        raise BackendError(f"{art.name}: W&B sent no version number (version {art.version!r})")
    return index

