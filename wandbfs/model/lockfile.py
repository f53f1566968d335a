"""``wandbfs.lock``: the alias -> version map a job ran with, to run it again the same way.

``wandbfs lock PATH...`` writes it; ``wandbfs mount --lock FILE`` keeps those aliases on
those versions for the life of the mount (listings, symlinks, lineage names), whatever W&B
does with them meanwhile - pip's lock file, for model registries. JSON, one entry per
``org/wandb-registry-R/collection:alias``; pure parsing and rendering here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from wandbfs.model.names import parse_qualified_name, parse_version_token

__all__ = ["LockEntry", "parse_lock", "render_lock"]

FORMAT = 1


@dataclass(frozen=True)
class LockEntry:
    name: str          # org/wandb-registry-R/collection:alias
    version: str       # vN
    artifact_id: str | None = None


def render_lock(entries: list[LockEntry]) -> str:
    body: dict[str, Any] = {"wandbfs_lock": FORMAT,
                            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "aliases": {e.name: {"version": e.version, **({"artifact_id": e.artifact_id}
                                                                           if e.artifact_id else {})}
                                        for e in sorted(entries, key=lambda e: e.name)}}
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


def parse_lock(text: str) -> dict[tuple[str, str, str], dict[str, int]]:
    """(org, registry display name, collection) -> {alias: index}; ValueError on anything odd."""
    try:
        body = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not a wandbfs lock file (bad JSON: {e})") from None
    if not isinstance(body, dict) or body.get("wandbfs_lock") != FORMAT or not isinstance(body.get("aliases"), dict):
        raise ValueError("not a wandbfs lock file (expected {\"wandbfs_lock\": 1, \"aliases\": {...}})")
    out: dict[tuple[str, str, str], dict[str, int]] = {}
    for name, spec in body["aliases"].items():
        q = parse_qualified_name(name)
        alias = parse_version_token(q.version)
        version = parse_version_token(str(spec.get("version") if isinstance(spec, dict) else spec))
        if alias.is_index:
            raise ValueError(f"{name}: a lock pins aliases; {q.version} is already a fixed version")
        if not version.is_index:
            raise ValueError(f"{name}: version must be vN, not {version.token!r}")
        assert version.index is not None
        out.setdefault((q.org, q.registry, q.collection), {})[q.version] = version.index
    return out
