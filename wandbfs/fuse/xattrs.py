"""What the Registry knows about an entry, and the mount's status: the one place they are computed.

Everything inside a version has info fields (name, version, aliases, artifact id,
created_at, metadata; a file's path, digest, size, md5 and reference; a folder's path and
total size), so ``wandbfs info`` needs no W&B login of its own; the root has the status
behind ``wandbfs status``. Two ways serve them, both from here: the daemon's control socket
(``daemon/control_socket.py``, always on; it names an entry by its path, :meth:`Xattrs.find`)
and, with ``--xattrs``, extended attributes (``user.wandb.<field>``, ``user.wandbfs.status``;
the names are ``model/entry_info.py``'s). Other entries have none.
"""

from __future__ import annotations

import errno
import json
import time
from typing import Any, Callable, Sequence

from wandbfs.catalog.catalog import Catalog
from wandbfs.fuse.inodes import ROOT_INODE, Node
from wandbfs.fuse.nodes import AliasLink, File, InVersion, Root
from wandbfs.fuse.tree import Tree
from wandbfs.model.entry_info import STATUS_XATTR, XATTR_PREFIX, XATTR_PREFIXES as PREFIXES
from wandbfs.sdk.client import BackendError, NotFound, VersionDetail

__all__ = ["PREFIXES", "Xattrs"]

MAX_LINKS = 8
"""Symlinks followed in one path (the tree's links point at directories, never at links)."""


class Xattrs:
    """The info of a node and the mount's status, computed when asked (versions are cached,
    so this is cheap)."""

    def __init__(self, catalog: Catalog, tree: Tree, status: Callable[[], dict[str, Any]]) -> None:
        self.catalog = catalog
        self.tree = tree
        self.status = status

    async def of(self, node: Node) -> dict[str, bytes]:
        """Every extended attribute ``node`` has, name -> value."""
        if isinstance(node.place, Root):
            return {STATUS_XATTR: json.dumps(self.status()).encode()}
        return {XATTR_PREFIX + k: v.encode() for k, v in (await self.info(node)).items()}

    async def info(self, node: Node) -> dict[str, str]:
        """The info fields of an entry inside a version ({} for anything else)."""
        p = node.place
        if not isinstance(p, InVersion):
            return {}
        detail = await self.tree.detail(node)
        return {**await self._version(p, detail), **self._entry(p, detail)}

    async def find(self, parts: Sequence[str]) -> Node | None:
        """The node a path relative to the mount root names, or None if there is none.

        Walked from the root as the kernel would for ``getxattr(2)``: each name looked up
        in its directory, ``.`` and ``..`` as usual, every symlink followed (the last one
        too), an alias re-resolved first as ``readlink`` does."""
        root = self.tree.table.get(ROOT_INODE)
        assert root is not None
        dirs, todo, links = [root], list(parts), 0
        while todo:
            name = todo.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if len(dirs) > 1:
                    dirs.pop()
                continue
            node = await self.tree.child(dirs[-1], name)
            if node is None:
                return None
            if node.kind == "symlink":
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many symbolic links")
                if isinstance(node.place, AliasLink):
                    await self.tree.refresh_alias(node)
                todo[:0] = node.target.split("/")   # relative to the link's own directory
                continue
            dirs.append(node)
        return dirs[-1]

    async def _version(self, p: InVersion, detail: VersionDetail) -> dict[str, str]:
        try:
            vers = await self.catalog.versions(p.org, p.reg, p.coll)
            aliases = sorted(a for a, i in vers.aliases.items() if i == detail.index)
        except (NotFound, BackendError):
            aliases = sorted(detail.aliases)
        return {"name": detail.name, "version": f"v{detail.index}", "aliases": ",".join(aliases),
                "artifact_id": detail.artifact_id,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(detail.created_at)),
                "metadata": json.dumps(detail.metadata, sort_keys=True)}

    @staticmethod
    def _entry(p: InVersion, detail: VersionDetail) -> dict[str, str]:
        if isinstance(p, File):
            e = p.entry
            out = {"path": e.path, "digest": e.digest, "size": str(e.size)}
            if e.md5_hex:
                out["md5"] = e.md5_hex
            if e.ref:
                out["ref"] = e.ref
            return out
        prefix = "/".join(p.parts)
        return {"path": prefix, "digest": detail.manifest.digest(),
                "size": str(sum(e.size for path, e in detail.manifest.entries.items()
                                if not prefix or path.startswith(prefix + "/")))}
