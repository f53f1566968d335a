"""What a ``NAME|PATH`` argument names: the one reading of a command-line target.

``prefetch``, ``pin``/``unpin``, ``resolve`` and ``lock`` take a registry name
(``acme/wandb-registry-model/resnet50:production``) or a path in a wandbfs mount
(``/mnt/wandb/acme/model/resnet50/production/weights``); :func:`resolve_target` turns either
into a :class:`Target` (org, registry, collection, version token, path inside the version),
so every command reads a target the same way. ``path`` goes the other way
(:func:`name_to_path`).

No W&B call here. A path is read from the mount: its alias directory is followed with
``os.path.realpath`` to the ``vN`` the mount shows, and the shell's ``$PWD`` keeps the alias
a relative path came through. A name's alias is left for the caller to resolve (W&B for
``resolve``, the catalog for ``prefetch`` and ``pin``). The mount points come from the caller
(``/proc/self/mounts``, read once per command).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Callable, Sequence, TypeVar

from wandbfs.model.names import (
    ENTITY_MARK,
    Level,
    ParsedPath,
    home_entity,
    is_safe_name,
    parse_mount_path,
    parse_qualified_name,
    qualified_name,
    version_index,
)

__all__ = ["ResolveError", "Target", "find_in_mounts", "is_collection_path", "is_name", "locate",
           "logical_cwd", "looks_like_path", "name_to_path", "parse_name", "resolve_path", "resolve_target"]

T = TypeVar("T")


class ResolveError(ValueError):
    """A user-facing reason a path or name cannot be resolved (one line)."""


@dataclass(frozen=True)
class Target:
    """One version (or a file or folder in it) as the user addressed it."""

    org: str
    registry: str                      # display name, no wandb-registry- prefix
    collection: str
    version: str                       # vN or alias, as addressed (for a path: the directory's name)
    inner: tuple[str, ...] = ()        # a file or folder inside the version
    mount_path: str | None = None      # for a path: the absolute path in the mount, aliases kept
    mount_index: int | None = None     # for a path: the vN the mount resolved its directory to

    @property
    def alias(self) -> str | None:
        """The alias the user went through, or None for a ``vN``."""
        return None if version_index(self.version) is not None else self.version

    @property
    def token(self) -> str:
        """The token to look the version up by: the mount's ``vN`` for a path (the version the
        user sees there, even if W&B has moved the alias since), the name's own for a name."""
        return self.version if self.mount_index is None else f"v{self.mount_index}"

    @property
    def requested(self) -> str:
        """The name as addressed: ``org/wandb-registry-R/coll:alias-or-vN``."""
        return qualified_name(self.org, self.registry, self.collection, self.version)


# ---- pure: names and mount-relative paths ------------------------------------------------

def is_name(spec: str) -> bool:
    """Is ``spec`` a registry name (``<org>/wandb-registry-<R>/<collection>[:<version>]``)?"""
    try:
        parse_qualified_name(spec)
    except ValueError:
        return False
    return True


def parse_name(spec: str) -> Target:
    """A registry name -> its target; a name without ``:version`` means ``latest``, as for the SDK."""
    try:
        q = parse_qualified_name(spec)
    except ValueError as e:
        raise ResolveError(str(e)) from None
    return Target(q.org, q.registry, q.collection, q.version)


def locate(path: str, mounts: Sequence[str]) -> tuple[str, tuple[str, ...]] | None:
    """The deepest mount that lexically contains the absolute ``path``, and the rest of it."""
    p = PurePosixPath(path)
    best: tuple[str, tuple[str, ...]] | None = None
    for mp in mounts:
        m = PurePosixPath(mp)
        if p == m or m in p.parents:
            rel = p.relative_to(m).parts
            if best is None or len(mp) > len(best[0]):
                best = (mp, rel)
    return best


def version_parts(parsed: ParsedPath, parts: Sequence[str]) -> tuple[str, ...]:
    """The leading components of ``parts`` that name the version directory (or its alias)."""
    return tuple(parts[:parsed.version_depth])


def name_to_path(name: str, mountpoint: str, inner: str | None = None) -> str:
    """``acme/wandb-registry-model/resnet50:production`` -> ``<mp>/acme/model/resnet50/production``.

    A name without ``:version`` means ``latest``, as for the SDK. ``inner`` is a file or
    folder inside the version.
    """
    t = parse_name(name)
    for part in (t.org, t.registry, t.collection, t.version):
        if not is_safe_name(part):
            raise ResolveError(f"{name!r} cannot be a path in the mount ({part!r} is not a file name)")
    if home_entity(t.org) is not None:   # a project artifact: the link its pasted name makes
        p = PurePosixPath(mountpoint, t.org, t.registry, f"{t.collection}:{t.version}")
    else:
        p = PurePosixPath(mountpoint, t.org, t.registry, t.collection, t.version)
    if inner:
        rel = PurePosixPath(inner.lstrip("/"))
        if any(c in ("..", ".") for c in rel.parts):
            raise ResolveError(f"{inner!r}: '.' and '..' are not allowed in a path inside a version")
        p = p / rel
    return str(p)


# ---- reading the filesystem --------------------------------------------------------------

def logical_cwd() -> str:
    """The shell's ``$PWD`` when it is this directory: it keeps alias names that getcwd() resolves."""
    pwd = os.environ.get("PWD")
    try:
        if pwd and os.path.isabs(pwd) and os.path.samefile(pwd, "."):
            return pwd
    except OSError:
        pass
    return os.getcwd()


def looks_like_path(spec: str) -> bool:
    """A path: absolute, ``./``-relative or existing; or, if it is no registry name, one whose folder exists."""
    if spec.startswith(("/", "./", "../")) or spec in (".", ".."):
        return True
    from wandbfs.daemon.procutil import NoAnswer, bounded

    try:   # the working directory may be inside a mount that does not answer
        return bounded(_exists_as_path, spec)
    except NoAnswer:
        return not is_name(spec)


def _exists_as_path(spec: str) -> bool:
    return os.path.lexists(spec) or (not is_name(spec) and os.path.isdir(os.path.dirname(spec) or "."))


def _bounded_cwd(mounts: Sequence[str]) -> str:
    """:func:`logical_cwd`, which stats the working directory: bounded when that is in a mount."""
    here = locate(os.getcwd(), mounts)   # getcwd() itself never reaches the filesystem
    if here is None:
        return logical_cwd()
    try:
        return on_mount(here[0], logical_cwd)
    except ResolveError:
        return os.getcwd()


def on_mount(mountpoint: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, a syscall that touches a mount: refused at once when its daemon is
    stopped, abandoned after a deadline when it does not answer (never a hung command)."""
    from wandbfs.cli.control import daemon_problem
    from wandbfs.daemon.procutil import NoAnswer, bounded
    from wandbfs.daemon.state import no_answer_message

    problem = daemon_problem(mountpoint)
    if problem:
        raise ResolveError(problem)
    try:
        return bounded(fn, *args)
    except NoAnswer as e:
        raise ResolveError(no_answer_message(mountpoint, e.timeout)) from None


def _real_mounts(mounts: Sequence[str]) -> dict[str, str]:
    return {os.path.realpath(m): m for m in mounts}


def find_in_mounts(abs_path: str, mounts: Sequence[str]) -> tuple[str, tuple[str, ...]] | None:
    """Like :func:`locate`, also when the mount point was reached through a symlink."""
    hit = locate(abs_path, mounts)
    if hit:
        return hit
    # realpath stats every mount point: one hung mount must not hang a lookup in another
    real_mounts = {}
    for m in mounts:
        try:
            real_mounts.update(on_mount(m, _real_mounts, [m]))
        except ResolveError:
            continue
    if not real_mounts:
        return None
    from wandbfs.daemon.procutil import NoAnswer, bounded

    try:   # the ancestors' realpaths may cross into a mount too
        return bounded(_through_symlinks, abs_path, real_mounts)
    except NoAnswer as e:
        raise ResolveError(f"{abs_path}: a mount on the way did not answer within {e.timeout:.0f}s") from None


def _through_symlinks(abs_path: str, real_mounts: dict[str, str]) -> tuple[str, tuple[str, ...]] | None:
    p = PurePosixPath(abs_path)
    for anc in [p, *p.parents]:
        mp = real_mounts.get(os.path.realpath(str(anc)))
        if mp is not None:
            return mp, p.relative_to(anc).parts
    return None


def _pasted_head(mp: str, parts: tuple[str, ...]) -> tuple[str, ...]:
    """A pasted project-artifact path (``<entity>/<project>/...``, links the mount makes to
    ``@<entity>/<project>``) in the spelling the mount lists; any other path as it is."""
    head = os.path.join(mp, *parts[:2])
    if not any(os.path.islink(os.path.join(mp, *parts[:i])) for i in (1, 2) if len(parts) >= i):
        return parts
    real = locate(os.path.realpath(head), [os.path.realpath(mp)])
    if real is None or not real[1] or not real[1][0].startswith(ENTITY_MARK):
        return parts
    return real[1] + tuple(parts[2:])


def _version_facts(vdir: str, abs_path: str, mp: str) -> tuple[bool, bool, str, str]:
    return os.path.isdir(vdir), os.path.lexists(abs_path), os.path.realpath(vdir), os.path.realpath(mp)


def is_collection_path(spec: str, mounts: Sequence[str]) -> bool:
    """Is ``spec`` a collection folder in a mount (``<mount>/<org>/<registry>/<collection>``)?"""
    hit = find_in_mounts(os.path.abspath(spec), mounts)
    if hit is None:
        return False
    try:
        return parse_mount_path(hit[1]).level == Level.COLLECTION
    except ValueError:
        return False


def resolve_path(spec: str, mounts: Sequence[str], cwd: str | None = None) -> Target:
    """A path in a mount -> its target; an alias directory is followed with ``os.path.realpath``."""
    abs_path = os.path.normpath(os.path.join(cwd or _bounded_cwd(mounts), spec))
    hit = find_in_mounts(abs_path, mounts)
    if hit is None:
        raise ResolveError(f"{spec} is not inside a wandbfs mount")
    mp, parts = hit
    if parts and not parts[0].startswith(ENTITY_MARK):
        parts = on_mount(mp, _pasted_head, mp, parts)
    try:
        parsed = parse_mount_path(parts)
    except ValueError as e:
        raise ResolveError(f"{spec}: {e}") from None
    if parsed.level not in (Level.VERSION, Level.FILE) or parsed.version is None:
        raise ResolveError(f"{spec} is not a version directory or a file in one "
                           "(expected <mount>/<org>/<registry>/<collection>/<vN or alias>/...)")
    vdir = os.path.join(mp, *version_parts(parsed, parts))
    is_dir, exists, real_vdir, real_mp = on_mount(mp, _version_facts, vdir, abs_path, mp)
    if not is_dir:
        raise ResolveError(f"{spec}: no such version ({vdir} does not exist)")
    if not exists:
        raise ResolveError(f"{spec}: no such file in {parsed.qualified_name}")
    hit_real = locate(real_vdir, [real_mp])
    try:
        real = parse_mount_path(hit_real[1]) if hit_real else None
    except ValueError:
        real = None
    if real is None or real.version is None or not real.version.is_index:
        raise ResolveError(f"{spec}: the mount did not resolve {parsed.version} to a vN directory")
    assert parsed.org and parsed.registry and parsed.collection and real.version.index is not None
    return Target(parsed.org, parsed.registry, parsed.collection, parsed.version.token,
                  tuple(parsed.inner_path), mount_path=abs_path, mount_index=real.version.index)


def resolve_target(spec: str, mounts: Sequence[str], cwd: str | None = None) -> Target:
    """``NAME|PATH`` -> its target: a path when it looks like one (:func:`looks_like_path`),
    else a registry name; ``mounts`` are the wandbfs mount points."""
    if looks_like_path(spec):
        return resolve_path(spec, mounts, cwd)
    if not is_name(spec):
        raise ResolveError(f"{spec!r} is neither a path in a wandbfs mount nor a registry name "
                           "(<org>/wandb-registry-<registry>/<collection>[:<version>])")
    return parse_name(spec)
