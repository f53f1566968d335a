"""Extended attributes: what the Registry knows about an entry, and the mount's status.

Everything inside a version answers ``user.wandb.*`` (name, version, aliases, artifact id,
created_at, metadata; a file's path, digest, size, md5 and reference; a folder's path and
total size), so ``getfattr`` and ``wandbfs info`` need no W&B login of their own. The root
answers ``user.wandbfs.status``, the JSON behind ``wandbfs status``. Other entries have none.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from wandbfs.catalog.catalog import Catalog
from wandbfs.fuse.inodes import Node
from wandbfs.fuse.nodes import File, InVersion, Root
from wandbfs.fuse.tree import Tree
from wandbfs.sdk.client import BackendError, NotFound, VersionDetail

__all__ = ["PREFIXES", "STATUS_XATTR", "XATTR", "Xattrs"]

XATTR = "user.wandb."
STATUS_XATTR = "user.wandbfs.status"
PREFIXES = ("user.wandb.", "user.wandbfs.")
"""Names this mount can have; anything else is refused before any work (``ls -l`` asks for
security and ACL names on every file)."""


class Xattrs:
    """The attributes of a node, computed when asked (versions are cached, so this is cheap)."""

    def __init__(self, catalog: Catalog, tree: Tree, status: Callable[[], dict[str, Any]]) -> None:
        self.catalog = catalog
        self.tree = tree
        self.status = status

    async def of(self, node: Node) -> dict[str, bytes]:
        """Every attribute ``node`` has, name -> value."""
        p = node.place
        if isinstance(p, Root):
            return {STATUS_XATTR: json.dumps(self.status()).encode()}
        if not isinstance(p, InVersion):
            return {}
        detail = await self.tree.detail(node)
        out = {**await self._version(p, detail), **self._entry(p, detail)}
        return {k: v.encode() for k, v in out.items()}

    async def _version(self, p: InVersion, detail: VersionDetail) -> dict[str, str]:
        try:
            vers = await self.catalog.versions(p.org, p.reg, p.coll)
            aliases = sorted(a for a, i in vers.aliases.items() if i == detail.index)
        except (NotFound, BackendError):
            aliases = sorted(detail.aliases)
        x = XATTR
        return {x + "name": detail.name, x + "version": f"v{detail.index}", x + "aliases": ",".join(aliases),
                x + "artifact_id": detail.artifact_id,
                x + "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(detail.created_at)),
                x + "metadata": json.dumps(detail.metadata, sort_keys=True)}

    @staticmethod
    def _entry(p: InVersion, detail: VersionDetail) -> dict[str, str]:
        x = XATTR
        if isinstance(p, File):
            e = p.entry
            out = {x + "path": e.path, x + "digest": e.digest, x + "size": str(e.size)}
            if e.md5_hex:
                out[x + "md5"] = e.md5_hex
            if e.ref:
                out[x + "ref"] = e.ref
            return out
        prefix = "/".join(p.parts)
        return {x + "path": prefix, x + "digest": detail.manifest.digest(),
                x + "size": str(sum(e.size for path, e in detail.manifest.entries.items()
                                    if not prefix or path.startswith(prefix + "/")))}
