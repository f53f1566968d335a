"""Last known W&B metadata on disk: what lets a mount keep serving while W&B is down.

Version manifests never change, so they are kept for good; listings (organizations,
registries, collections, versions and where each alias pointed) are overwritten with each
successful refresh. Files live next to the object cache (``<cache>/wandbfs-meta/``, mode
0700) so every mount on that cache, and a mount restarted during an outage, can use them.
Writes are atomic (temp + rename); unreadable files are ignored, never fatal. A cache
directory that refuses writes (mounted read-only) is still read; writes are then skipped,
with one log line for the mount.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Hashable

from wandbfs.cache.store import UNWRITABLE
from wandbfs.model.manifest import parse_manifest
from wandbfs.sdk.client import CollectionInfo, CollectionVersions, RegistryInfo, VersionDetail, VersionSummary

log = logging.getLogger(__name__)

SAVED_KINDS = frozenset({"orgs", "regs", "colls", "vers", "ents", "ent"})
"""The listing kinds kept on disk (the catalog's keys start with the kind)."""


def _name(key: Hashable) -> str:
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:32]


class MetaStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.read_only = False   # a write failed with EROFS/EACCES: stop trying (said once)
        self._once = threading.Lock()

    def _mkdirs(self, d: Path) -> None:
        """Every level 0700 (``mkdir(parents=True, mode=...)`` only applies it to the last).
        The cache dir above the root may not exist yet: the first listings are saved before
        the first file is cached (the cache creates it then)."""
        if not self.root.exists():
            self.root.parent.mkdir(parents=True, exist_ok=True)
        for p in [self.root, *reversed([q for q in d.parents if self.root in q.parents]), d]:
            if not p.exists():
                p.mkdir(mode=0o700, exist_ok=True)
                os.chmod(p, 0o700)

    def _write(self, path: Path, obj: Any) -> bool:
        """Whether ``obj`` is now on disk at ``path``."""
        if self.read_only:
            return False
        try:
            self._mkdirs(path.parent)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:   # bytes as they are; anything else as JSON, encoded in C
                f.write(obj if isinstance(obj, bytes) else json.dumps(obj).encode())
            os.replace(tmp, path)
            return True
        except OSError as e:  # a full disk must not break a lookup that already succeeded
            if e.errno in UNWRITABLE:
                with self._once:   # writes run in threads: the first to fail says it, once
                    first, self.read_only = not self.read_only, True
                if first:
                    log.warning("metadata dir %s is not writable (%s): listings and manifests seen from now on "
                                "are not kept on disk for outages", self.root, e.strerror)
            else:
                log.warning("could not save metadata %s: %s", path.name, e)
            return False

    def _read(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable metadata %s: %s", path, e)
            return None

    # ---- versions (immutable) --------------------------------------------------------
    def _version_path(self, org: str, registry: str, collection: str, index: int) -> Path:
        return self.root / "versions" / _name((org, registry, collection)) / f"v{index}.json"

    def save_version(self, d: VersionDetail) -> None:
        obj = {"org": d.org, "registry": d.registry, "collection": d.collection, "index": d.index,
               "artifact_id": d.artifact_id, "entity": d.entity, "project": d.project,
               "created_at": d.created_at, "aliases": list(d.aliases), "metadata": d.metadata}
        path = self._version_path(d.org, d.registry, d.collection, d.index)
        if isinstance(d.raw_manifest, bytes):   # W&B's JSON as it came, beside (never parsed here)
            if not self._write(path.with_suffix(".manifest"), d.raw_manifest):
                return   # a record naming a manifest that is not there would be read as broken
            obj["manifest_file"] = path.with_suffix(".manifest").name
        else:
            obj["manifest"] = d.raw_manifest
        self._write(path, obj)

    def has_versions(self, org: str, registry: str, collection: str) -> bool:
        """Whether a manifest of this collection is kept: then the collection existed, as its
        versions (immutable) did, and a lookup of it needs no W&B."""
        try:
            with os.scandir(self._version_path(org, registry, collection, 0).parent) as it:
                return any(e.name.endswith(".json") and not e.name.startswith(".") for e in it)
        except OSError:
            return False

    def version_size(self, org: str, registry: str, collection: str, index: int) -> int | None:
        """Bytes a kept version takes on disk (its record and manifest), None if none is kept:
        two ``stat`` calls, so a caller knows whether reading it is worth a worker thread."""
        path = self._version_path(org, registry, collection, index)
        try:
            size = os.stat(path).st_size
        except OSError:
            return None
        try:
            size += os.stat(path.with_suffix(".manifest")).st_size
        except OSError:
            pass
        return size

    def load_version(self, org: str, registry: str, collection: str, index: int) -> VersionDetail | None:
        path = self._version_path(org, registry, collection, index)
        obj = self._read(path)
        if not obj or (obj.get("org"), obj.get("registry"), obj.get("collection")) != (org, registry, collection):
            return None
        try:
            return VersionDetail(org=org, registry=registry, collection=collection, index=obj["index"],
                                 artifact_id=obj["artifact_id"], entity=obj["entity"], project=obj["project"],
                                 created_at=obj["created_at"], aliases=tuple(obj["aliases"]),
                                 manifest=parse_manifest(obj["manifest"] if "manifest" in obj else
                                                         (path.parent / obj["manifest_file"]).read_bytes()),
                                 metadata=obj["metadata"])
        except (KeyError, TypeError, ValueError, OSError) as e:   # W&B is asked instead
            log.warning("ignoring unreadable metadata %s: %s", path, e)
            return None

    # ---- listings (last known) ---------------------------------------------------------
    def save_listing(self, key: tuple[Any, ...], value: Any) -> None:
        self._write(self.root / "listings" / f"{_name(key)}.json", {"key": list(key), "value": _encode(value)})

    def load_listing(self, key: tuple[Any, ...]) -> Any:
        obj = self._read(self.root / "listings" / f"{_name(key)}.json")
        if not obj or obj.get("key") != list(key):
            return None
        return _decode(key[0], obj["value"])


def _encode(value: Any) -> Any:
    if isinstance(value, CollectionVersions):
        return {"versions": [asdict(v) for v in value.versions.values()], "aliases": value.aliases}
    if isinstance(value, list):
        return [asdict(v) if hasattr(v, "__dataclass_fields__") else v for v in value]
    return value


def _decode(kind: str, raw: Any) -> Any:
    if kind == "vers":
        versions = {v["index"]: VersionSummary(v["index"], tuple(v["aliases"]), v["created_at"], v["artifact_id"])
                    for v in raw["versions"]}
        return CollectionVersions(versions, dict(raw["aliases"]))
    if kind == "regs":
        return [RegistryInfo(**r) for r in raw]
    if kind == "colls":
        return [CollectionInfo(**c) for c in raw]
    return raw
