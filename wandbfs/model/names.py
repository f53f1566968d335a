"""Registry naming rules and mount-path parsing.

Everything here is pure string logic so that the FUSE layer, the CLI and the
tests all agree on one definition of "what does this path mean".  Nothing in
this module talks to the network: a parsed path only says what the user
*asked* for; whether that org/registry/collection exists is decided later by
whoever resolves it against the server.

Layout of the mount (relative to the mount root)::

    <org>/<registry>/<collection>/<vN | alias>/<artifact files...>

plus two unlisted spellings that ``readdir`` never shows but ``lookup``
accepts, so that names copied from the W&B UI or SDK work verbatim:

* ``<org>/wandb-registry-<R>/...`` - the registry's project name instead of
  its display name;
* ``<org>/<registry>/<collection>:<vN | alias>/...`` - the SDK's
  ``name:version`` form collapsed into a single path component.

Project artifacts (never linked into a registry) live beside the orgs, under their
entity marked with ``@`` (no W&B org or entity name holds an ``@``, so the two never
collide)::

    @<entity>/<project>/<type>/<collection>/<vN | alias>/<artifact files...>
    @<entity>/<project>/<collection>:<vN | alias>      (unlisted: the pasted name)

Such a version is held in the same (org, registry) slots as a registry's: ``org`` is the
``@<entity>`` home and ``registry`` the project, so the cache, the catalog, lineage and
the commands key both alike; only the W&B names differ (:func:`qualified_name`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

__all__ = [
    "DEFAULT_VERSION",
    "ENTITY_MARK",
    "REGISTRY_PREFIX",
    "entity_home",
    "home_entity",
    "Level",
    "ParsedPath",
    "QualifiedName",
    "VersionRef",
    "is_artifact_project",
    "listing_scope",
    "is_safe_name",
    "parse_mount_path",
    "parse_qualified_name",
    "parse_version_token",
    "qualified_name",
    "registry_display",
    "registry_project",
    "split_qualified",
    "version_index",
]

REGISTRY_PREFIX = "wandb-registry-"
"""Every registry is stored server-side as a project named with this prefix.

Same constant as ``wandb.sdk.artifacts._validators.REGISTRY_PREFIX``.
"""

DEFAULT_VERSION = "latest"
"""Version used when a qualified name has no ``:version`` part.

The SDK's ``Api.artifact("org/proj/name")`` resolves a bare name to the
``latest`` alias, so we do the same rather than rejecting the name.
"""

NAME_MAX_BYTES = 255
"""Linux ``NAME_MAX``: the kernel rejects longer components with ENAMETOOLONG,
so a longer name from the server could never be looked up through the mount."""

# Only the canonical spelling is a version index: "v0", "v7", "v12".  "v03",
# "V3" or "v٣" (Arabic-Indic digit; \d would match it) are aliases, because
# W&B only resolves the canonical form as a version number.
_VERSION_RE = re.compile(r"v(0|[1-9][0-9]*)")

# Aliases may not contain these (wandb.sdk.artifacts._validators.ARTIFACT_SEP_CHARS).
_ALIAS_FORBIDDEN = frozenset("/:")


ENTITY_MARK = "@"
"""Marks an entity's home at the mount's root (``@alice``): project artifacts live there.
W&B entity and organization names cannot contain ``@``, so it never shadows an org."""


def entity_home(entity: str) -> str:
    """The root component of an entity's projects: ``"alice"`` -> ``"@alice"``."""
    if not entity or ENTITY_MARK in entity or "/" in entity:
        raise ValueError(f"invalid entity name {entity!r}")
    return ENTITY_MARK + entity


def home_entity(org: str | None) -> str | None:
    """The entity of an ``@<entity>`` home, or ``None`` for an organization."""
    if org and org.startswith(ENTITY_MARK) and len(org) > 1:
        return org[1:]
    return None


def registry_project(name: str) -> str:
    """Return the project name that stores the registry called ``name``.

    ``"model"`` -> ``"wandb-registry-model"``.  Deliberately *not* idempotent:
    a registry whose display name happens to start with the prefix still maps
    to ``prefix + name``, so the function is a bijection with
    :func:`registry_display`.

    Raises:
        ValueError: if ``name`` is empty (``"wandb-registry-"`` alone is not a
            registry project for the SDK either).
    """
    if not name:
        raise ValueError("registry name must not be empty")
    return REGISTRY_PREFIX + name


def registry_display(project: str) -> str | None:
    """Return the registry's display name for a project, or ``None``.

    ``None`` means "this project is not a registry", which lets callers filter
    a project listing down to registries without a second predicate.  Mirrors
    the SDK's ``is_artifact_registry_project``: the bare prefix is not a
    registry.
    """
    if project.startswith(REGISTRY_PREFIX) and len(project) > len(REGISTRY_PREFIX):
        return project[len(REGISTRY_PREFIX) :]
    return None


def listing_scope(parts: Sequence[str]) -> tuple[str, ...]:
    """The (org, registry, collection) a mount path lies under, as far as it goes: what
    ``wandbfs refresh PATH`` drops. In an ``@entity`` home the type folder is skipped
    (``@e/project/<type>/coll`` -> ``(@e, project, coll)``): a type holds no listing of its own."""
    parts = tuple(p for p in parts if p)
    if len(parts) >= 3 and (qual := split_qualified(parts[2])) is not None:   # coll:alias
        return parts[:2] + (qual[0],)
    if parts and home_entity(parts[0]) is not None and len(parts) >= 3:
        return parts[:2] + parts[3:4]
    return parts[:3]


def is_artifact_project(project: str) -> bool:
    """Is a project shown in an ``@entity`` home? Not a registry's (``wandb-registry-*``):
    that stays a registry, reached through its organization."""
    return not project.startswith(REGISTRY_PREFIX)


@dataclass(frozen=True)
class VersionRef:
    """A reference to one artifact version: by index (``v3``) or by alias.

    Kept as a tagged value (instead of a bare string) so that code resolving
    it against the server cannot confuse the alias ``"v03"`` with version 3.
    """

    kind: Literal["index", "alias"]
    index: int | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "index":
            if not isinstance(self.index, int) or self.index < 0 or self.alias is not None:
                raise ValueError("an index VersionRef needs index >= 0 and no alias")
        elif self.kind == "alias":
            if not self.alias or self.index is not None:
                raise ValueError("an alias VersionRef needs a non-empty alias and no index")
        else:
            raise ValueError(f"unknown VersionRef kind {self.kind!r}")

    @property
    def token(self) -> str:
        """The path/qualified-name spelling: ``"v3"`` or the alias itself."""
        if self.kind == "index":
            return f"v{self.index}"
        assert self.alias is not None
        return self.alias

    @property
    def is_index(self) -> bool:
        """True for ``vN`` references (immutable: safe to cache forever)."""
        return self.kind == "index"

    def __str__(self) -> str:
        return self.token


def version_index(token: str) -> int | None:
    """The index of a canonical ``vN`` token (``"v3"`` -> 3), else ``None`` (an alias).

    The one test of "is this a version number" in wandbfs: for server names and aliases
    that must not raise (``"coll:v3"`` suffixes, alias lists), where
    :func:`parse_version_token` would reject a malformed token.
    """
    return int(token[1:]) if _VERSION_RE.fullmatch(token) else None


def parse_version_token(s: str) -> VersionRef:
    """Classify a version token as an index (``v3``) or an alias.

    Only canonical ``vN`` (no leading zeros, ASCII digits, lower-case ``v``) is
    an index; anything else, including ``"v03"``, is an alias name, because
    that is how W&B resolves it.  The distinction matters for caching: an
    index always names the same immutable version, an alias can move.

    Raises:
        ValueError: for an empty token or one containing ``/`` or ``:``
            (W&B aliases may not contain either).
    """
    if not s:
        raise ValueError("version token must not be empty")
    if (index := version_index(s)) is not None:
        return VersionRef(kind="index", index=index)
    if bad := _ALIAS_FORBIDDEN.intersection(s):
        raise ValueError(
            f"invalid version/alias {s!r}: must not contain {''.join(sorted(bad))!r}"
        )
    return VersionRef(kind="alias", alias=s)


def split_qualified(segment: str) -> tuple[str, str] | None:
    """Split a ``collection:version`` path component, or return ``None``.

    Splits at the *first* ``:``, like the SDK's ``ArtifactPath.from_str``, so
    a name is interpreted identically here and by ``Api.artifact``.  Returns
    ``None`` when there is no ``:`` or either side is empty (``"resnet:"``,
    ``":prod"``) - such a component is simply not in qualified form.
    """
    collection, sep, version = segment.partition(":")
    if not sep or not collection or not version:
        return None
    return collection, version


class QualifiedName(NamedTuple):
    """``(org, registry, collection, version_token)``; registry has no prefix."""

    org: str
    registry: str
    collection: str
    version: str


def qualified_name(org: str, registry: str, collection: str, version_token: str) -> str:
    """Build the SDK-style registry name ``org/wandb-registry-R/coll:version``.

    This is the string ``wandb.Api().artifact(...)`` and ``use_artifact``
    accept, so it is what we log and what the CLI prints.

    Raises:
        ValueError: if any part is empty or contains a separator that would
            make the result ambiguous to parse back.
    """
    if (entity := home_entity(org)) is not None:   # a project artifact: entity/project/name:v
        org, registry_part = entity, registry
    else:
        registry_part = ""
    for label, value in (("org", org), ("registry", registry), ("collection", collection)):
        if not value:
            raise ValueError(f"{label} must not be empty")
        if "/" in value:
            raise ValueError(f"{label} {value!r} must not contain '/'")
        if label != "registry" and ":" in value:
            raise ValueError(f"{label} {value!r} must not contain ':'")
    parse_version_token(version_token)  # validates
    return f"{org}/{registry_part or registry_project(registry)}/{collection}:{version_token}"


def parse_qualified_name(name: str) -> QualifiedName:
    """Parse ``org/wandb-registry-R/collection[:version]``, or a project artifact's
    ``entity/project/name[:version]`` (returned with ``org`` = ``@entity``, ``registry`` =
    the project, see :func:`home_entity`).

    Inverse of :func:`qualified_name`.  The version may be omitted, in which
    case it defaults to :data:`DEFAULT_VERSION` (``"latest"``), matching what
    the SDK resolves for a bare artifact name.  The registry is returned as
    its display name (prefix stripped).

    The string is split at the first ``:`` like the SDK does, so a version
    token can never contain ``/``.

    Raises:
        ValueError: with a message naming the problem: wrong number of ``/``
            parts, empty parts, a project without the registry prefix, or an
            empty/invalid version.
    """
    path, sep, version = name.partition(":")
    if sep and not version:
        raise ValueError(f"invalid registry name {name!r}: empty version after ':'")
    if not sep:
        version = DEFAULT_VERSION
    parts = path.split("/")
    if len(parts) != 3:
        raise ValueError(
            f"invalid registry name {name!r}: expected "
            f"'<org>/{REGISTRY_PREFIX}<registry>/<collection>[:<version>]' or "
            f"'<entity>/<project>/<name>[:<version>]'"
        )
    org, project, collection = parts
    if not org or not project or not collection:
        raise ValueError(f"invalid registry name {name!r}: empty path component")
    registry = registry_display(project)
    if registry is None:
        if project == REGISTRY_PREFIX or ENTITY_MARK in org:
            raise ValueError(f"invalid artifact name {name!r}: no registry or entity {org!r}/{project!r}")
        org, registry = entity_home(org), project   # a project artifact
    try:
        parse_version_token(version)
    except ValueError as e:
        raise ValueError(f"invalid registry name {name!r}: {e}") from None
    return QualifiedName(org, registry, collection, version)


def is_safe_name(s: str) -> bool:
    """Can ``s`` be used as one directory entry name in the mount?

    Applied to every name that comes from the server (orgs, registries,
    collections, aliases, manifest path components) before it is shown to
    the kernel: ``"."``/``".."`` would alias other directories, ``/`` and NUL
    cannot appear in a POSIX name, and over 255 bytes the kernel refuses the
    lookup.  Strings that cannot be encoded as UTF-8 (lone surrogates) are
    rejected too, since they have no byte representation.
    """
    if not isinstance(s, str) or not s or s in (".", "..") or "/" in s or "\0" in s:
        return False
    try:
        encoded = s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return len(encoded) <= NAME_MAX_BYTES


class Level(str, enum.Enum):
    """How deep a mount path goes; decides which kind of inode it is."""

    ROOT = "root"
    ORG = "org"
    REGISTRY = "registry"
    TYPE = "type"
    """An artifact type inside a project (``@entity/project/<type>``)."""
    COLLECTION = "collection"
    VERSION = "version"
    FILE = "file"


@dataclass(frozen=True)
class ParsedPath:
    """A mount path classified by :func:`parse_mount_path`.

    Fields below ``level`` are ``None``/empty when the path doesn't reach
    them.  ``via_prefix`` / ``via_qualified`` record that an unlisted
    spelling was used, which the FUSE layer needs to know: such entries must
    resolve on lookup but never appear in ``readdir``.
    """

    level: Level
    org: str | None = None
    registry: str | None = None
    """Registry display name (never carries the ``wandb-registry-`` prefix); in an
    ``@entity`` home, the project."""
    type: str | None = None
    """The artifact type folder, in an ``@entity`` home only."""
    collection: str | None = None
    version: VersionRef | None = None
    inner_path: tuple[str, ...] = ()
    """Path inside the artifact, for ``Level.FILE`` (may be a directory)."""
    via_prefix: bool = False
    """The registry component was spelled ``wandb-registry-<R>``."""
    via_qualified: bool = False
    """The version was given as ``<collection>:<version>`` in one component."""

    @property
    def project(self) -> str | None:
        """Server-side project name of the registry, if the path reaches it."""
        if self.registry is None:
            return None
        return self.registry if home_entity(self.org) is not None else registry_project(self.registry)

    @property
    def version_depth(self) -> int:
        """How many leading components name the version directory (or its alias)."""
        if self.via_qualified:
            return 3
        return 5 if home_entity(self.org) is not None else 4

    @property
    def qualified_name(self) -> str | None:
        """SDK name of the artifact version, for version and file levels."""
        if self.version is None:
            return None
        assert self.org and self.registry and self.collection
        return qualified_name(self.org, self.registry, self.collection, self.version.token)


def parse_mount_path(parts: Sequence[str]) -> ParsedPath:
    """Classify path components relative to the mount root.

    ``parts`` is e.g. ``("acme", "model", "resnet50", "production",
    "weights", "model.safetensors")``.  Empty ``parts`` is the root.

    A registry component starting with ``wandb-registry-`` (and something
    after it) is taken as the unlisted project-name form.  Consequence: a
    registry whose *display* name itself starts with ``wandb-registry-`` is
    only reachable through its doubled project-name form; W&B is not known to
    allow such names, and preferring the SDK spelling keeps copy-pasted names
    working.

    A collection component containing ``:`` with both sides non-empty is the
    unlisted ``collection:version`` form.  Collections named with a ``:``
    cannot be addressed this way - nor through the SDK, which also splits at
    the first ``:``.

    Raises:
        ValueError: if a component is not a safe name (see
            :func:`is_safe_name`) or the version token is invalid.  The FUSE
            layer maps this to ENOENT.
    """
    parts = tuple(parts)
    for p in parts:
        if not is_safe_name(p):
            raise ValueError(f"invalid path component {p!r}")
    n = len(parts)
    if n == 0:
        return ParsedPath(Level.ROOT)
    org = parts[0]
    if n == 1:
        return ParsedPath(Level.ORG, org=org)

    if home_entity(org) is not None:
        return _parse_home_path(parts)
    reg_component = parts[1]
    display = registry_display(reg_component)
    via_prefix = display is not None
    registry = display if display is not None else reg_component
    if n == 2:
        return ParsedPath(Level.REGISTRY, org=org, registry=registry, via_prefix=via_prefix)

    qualified = split_qualified(parts[2])
    if qualified is not None:
        collection, token = qualified
        version = parse_version_token(token)
        rest = parts[3:]
        via_qualified = True
    elif n == 3:
        return ParsedPath(
            Level.COLLECTION,
            org=org,
            registry=registry,
            collection=parts[2],
            via_prefix=via_prefix,
        )
    else:
        collection = parts[2]
        version = parse_version_token(parts[3])
        rest = parts[4:]
        via_qualified = False

    level = Level.FILE if rest else Level.VERSION
    return ParsedPath(
        level,
        org=org,
        registry=registry,
        collection=collection,
        version=version,
        inner_path=rest,
        via_prefix=via_prefix,
        via_qualified=via_qualified,
    )


def _parse_home_path(parts: tuple[str, ...]) -> ParsedPath:
    """``@entity/project/<type>/<collection>/<version>/...`` (or ``.../project/<coll>:<v>/...``)."""
    org, project, n = parts[0], parts[1], len(parts)
    if n == 2:
        return ParsedPath(Level.REGISTRY, org=org, registry=project)
    qualified = split_qualified(parts[2])
    if qualified is not None:
        collection, token = qualified
        rest = parts[3:]
        return ParsedPath(Level.FILE if rest else Level.VERSION, org=org, registry=project,
                          collection=collection, version=parse_version_token(token), inner_path=rest,
                          via_qualified=True)
    type_name = parts[2]
    if n == 3:
        return ParsedPath(Level.TYPE, org=org, registry=project, type=type_name)
    if n == 4:
        return ParsedPath(Level.COLLECTION, org=org, registry=project, type=type_name, collection=parts[3])
    rest = parts[5:]
    return ParsedPath(Level.FILE if rest else Level.VERSION, org=org, registry=project, type=type_name,
                      collection=parts[3], version=parse_version_token(parts[4]), inner_path=rest)
