"""The names of what ``wandbfs info`` and ``wandbfs status`` show, in one place.

The daemon computes the values (``fuse/xattrs.py``) and serves them two ways: over its
control socket (``daemon/control_socket.py``, always) and as extended attributes (only with
``--xattrs``); the CLI reads either. Both sides take the names from here, so an attribute
and the field ``wandbfs info --json`` prints never drift apart.
"""

from __future__ import annotations

__all__ = ["INFO_FIELDS", "STATUS_XATTR", "XATTR_PREFIX", "XATTR_PREFIXES"]

XATTR_PREFIX = "user.wandb."
"""Every entry inside a version has ``user.wandb.<field>`` for each of its info fields."""

STATUS_XATTR = "user.wandbfs.status"
"""The mount's root: the JSON behind ``wandbfs status``."""

XATTR_PREFIXES = (XATTR_PREFIX, "user.wandbfs.")
"""Names a mount can have; anything else is refused before any work (``ls -l`` asks for
security and ACL names on every file)."""

INFO_FIELDS = ("name", "version", "aliases", "path", "size", "digest", "md5", "ref", "created_at",
               "artifact_id", "metadata")
"""An entry's info fields, in the order ``wandbfs info`` prints them (md5 and ref only when known)."""
