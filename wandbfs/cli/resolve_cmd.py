"""``wandbfs resolve PATH|NAME`` and ``wandbfs path NAME``: between mount paths and registry names.

``resolve`` answers "what exactly am I reading?": the full registry name of the version
behind a mount path (``acme/wandb-registry-model/resnet50:v3``), the alias the path came
through (``via production``), and the usage snippets the W&B Registry UI's Usage tab shows,
with that name filled in. ``path`` is the reverse: where a registry name lives in a mount.

The first half of this module is pure (names, snippets, mount-table parsing, name -> path)
so it is unit-tested without a mount or a server; the second half does the I/O: reading
``/proc/self/mounts``, following an alias symlink with ``os.path.realpath`` and asking the
SDK (``wandb.Api().artifact(name)``) for the version and the artifact type.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import PurePosixPath
from typing import Any, Callable, Sequence

import click

from wandbfs.model.names import (
    Level,
    ParsedPath,
    is_safe_name,
    parse_mount_path,
    parse_qualified_name,
    parse_version_token,
    qualified_name,
    registry_project,
)

FSTYPE = "fuse.wandbfs"


class ResolveError(Exception):
    """A user-facing reason a path or name cannot be resolved (one line)."""


# ---- pure: names, snippets, paths -------------------------------------------------------

@dataclass(frozen=True)
class Resolution:
    """One artifact version as the user reached it, and what it is."""

    org: str
    registry: str                      # display name, no wandb-registry- prefix
    collection: str
    version: str                       # always vN
    alias: str | None = None           # the alias the user went through, if any
    type: str | None = None            # artifact type, from the SDK
    inner_path: str | None = None      # file or folder inside the version
    mount_path: str | None = None      # the path in a mount, when known

    @property
    def name(self) -> str:
        """The pinned name: ``org/wandb-registry-R/coll:vN``."""
        return qualified_name(self.org, self.registry, self.collection, self.version)

    @property
    def requested(self) -> str:
        """The name as the user addressed it (the alias when there was one)."""
        return qualified_name(self.org, self.registry, self.collection, self.alias or self.version)

    def headline(self) -> str:
        return f"{self.name} via {self.alias}" if self.alias else self.name


def py_str(s: str) -> str:
    """A Python string literal for ``s``, single-quoted like the W&B UI's snippets."""
    if "'" not in s and "\\" not in s and s.isprintable():
        return f"'{s}'"
    return repr(s)


def usage_snippet(name: str, type_name: str | None, entity: str | None = None,
                  project: str | None = None) -> str:
    """The Registry UI's Usage-tab snippet: a run that uses (and so records) the version."""
    init_args = ", ".join(f"{k}={py_str(v)}" for k, v in (("entity", entity), ("project", project)) if v)
    use_args = py_str(name) + (f", type={py_str(type_name)}" if type_name else "")
    return ("import wandb\n\n"
            f"run = wandb.init({init_args})\n\n"
            f"artifact = run.use_artifact({use_args})\n"
            "artifact_dir = artifact.download()\n")


def api_snippet(name: str, type_name: str | None) -> str:
    """The same download without a run (nothing is recorded as the run's input)."""
    args = py_str(name) + (f", type={py_str(type_name)}" if type_name else "")
    return ("import wandb\n\n"
            f"artifact = wandb.Api().artifact({args})\n"
            "artifact_dir = artifact.download()\n")


def unescape_mount_field(s: str) -> str:
    """``/proc/self/mounts`` writes space, tab, newline and backslash as ``\\ooo``."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def parse_mounts(text: str, fstype: str = FSTYPE) -> list[str]:
    """Mount points of ``fstype`` in a ``/proc/self/mounts`` text, in order."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] == fstype:
            out.append(unescape_mount_field(parts[1]))
    return out


def pick_mount(mounts: Sequence[str], explicit: str | None = None) -> str:
    """The mount to use: ``explicit``, or the only wandbfs mount there is."""
    if explicit:
        return explicit
    unique = list(dict.fromkeys(mounts))
    if not unique:
        raise ResolveError("no wandbfs mount found in /proc/self/mounts (mount one, or pass --mount)")
    if len(unique) > 1:
        raise ResolveError(f"several wandbfs mounts ({', '.join(unique)}); pick one with --mount")
    return unique[0]


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
    return tuple(parts[:3] if parsed.via_qualified else parts[:4])


def name_to_path(name: str, mountpoint: str, inner: str | None = None) -> str:
    """``acme/wandb-registry-model/resnet50:production`` -> ``<mp>/acme/model/resnet50/production``.

    A name without ``:version`` means ``latest``, as for the SDK. ``inner`` is a file or
    folder inside the version.
    """
    try:
        q = parse_qualified_name(name)
    except ValueError as e:
        raise ResolveError(str(e)) from None
    for part in (q.org, q.registry, q.collection, q.version):
        if not is_safe_name(part):
            raise ResolveError(f"{name!r} cannot be a path in the mount ({part!r} is not a file name)")
    p = PurePosixPath(mountpoint, q.org, q.registry, q.collection, q.version)
    if inner:
        rel = PurePosixPath(inner.lstrip("/"))
        if any(c in ("..", ".") for c in rel.parts):
            raise ResolveError(f"{inner!r}: '.' and '..' are not allowed in a path inside a version")
        p = p / rel
    return str(p)


def render_text(r: Resolution, entity: str | None = None, project: str | None = None,
                pin: bool = False) -> str:
    """What ``wandbfs resolve`` prints: the name first, then ready-to-paste snippets."""
    use = r.name if pin else r.requested
    lines = [r.headline()]
    if r.inner_path:
        lines.append(f"path in version: {r.inner_path}")
    lines.append(f"type: {r.type or 'unknown (W&B not asked)'}")
    if r.mount_path:
        lines.append(f"mount path: {r.mount_path}")
    lines += ["", "# Python: use it in a run (as the W&B Registry UI's Usage tab shows)",
              usage_snippet(use, r.type, entity, project).rstrip("\n"),
              "", "# Python: download without a run",
              api_snippet(use, r.type).rstrip("\n")]
    if r.mount_path:
        lines += ["", "# Through the mount", f"open({py_str(r.mount_path)}, 'rb')"]
    return "\n".join(lines) + "\n"


def render_json(r: Resolution, entity: str | None = None, project: str | None = None,
                pin: bool = False) -> str:
    use = r.name if pin else r.requested
    d = asdict(r)
    d.update(name=r.name, requested=r.requested, registry_project=registry_project(r.registry),
             snippets={"python_run": usage_snippet(use, r.type, entity, project),
                       "python_api": api_snippet(use, r.type)})
    return json.dumps(d, indent=2, sort_keys=True) + "\n"


# ---- I/O ---------------------------------------------------------------------------------

def read_mounts() -> list[str]:
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as f:
        return parse_mounts(f.read())


def logical_cwd() -> str:
    """The shell's ``$PWD`` when it is this directory: it keeps alias names that getcwd() resolves."""
    pwd = os.environ.get("PWD")
    try:
        if pwd and os.path.isabs(pwd) and os.path.samefile(pwd, "."):
            return pwd
    except OSError:
        pass
    return os.getcwd()


def is_name(spec: str) -> bool:
    try:
        parse_qualified_name(spec)
    except ValueError:
        return False
    return True


def looks_like_path(spec: str) -> bool:
    """A path: absolute, ``./``-relative or existing; or, if it is no registry name, one whose folder exists."""
    if spec.startswith(("/", "./", "../")) or spec in (".", "..") or os.path.lexists(spec):
        return True
    return not is_name(spec) and os.path.isdir(os.path.dirname(spec) or ".")


def find_in_mounts(abs_path: str, mounts: Sequence[str]) -> tuple[str, tuple[str, ...]] | None:
    """Like :func:`locate`, also when the mount point was reached through a symlink."""
    hit = locate(abs_path, mounts)
    if hit:
        return hit
    real_mounts = {os.path.realpath(m): m for m in mounts}
    p = PurePosixPath(abs_path)
    for anc in [p, *p.parents]:
        mp = real_mounts.get(os.path.realpath(str(anc)))
        if mp is not None:
            return mp, p.relative_to(anc).parts
    return None


def resolve_mount_path(spec: str, mounts: Sequence[str] | None = None, cwd: str | None = None) -> Resolution:
    """A path in a mount -> its version; an alias is followed with ``os.path.realpath``."""
    abs_path = os.path.normpath(os.path.join(cwd or logical_cwd(), spec))
    mounts = read_mounts() if mounts is None else mounts
    hit = find_in_mounts(abs_path, mounts)
    if hit is None:
        raise ResolveError(f"{spec} is not inside a wandbfs mount")
    mp, parts = hit
    try:
        parsed = parse_mount_path(parts)
    except ValueError as e:
        raise ResolveError(f"{spec}: {e}") from None
    if parsed.level not in (Level.VERSION, Level.FILE) or parsed.version is None:
        raise ResolveError(f"{spec} is not a version directory or a file in one "
                           "(expected <mount>/<org>/<registry>/<collection>/<vN or alias>/...)")
    vdir = os.path.join(mp, *version_parts(parsed, parts))
    if not os.path.isdir(vdir):
        raise ResolveError(f"{spec}: no such version ({vdir} does not exist)")
    if not os.path.lexists(abs_path):
        raise ResolveError(f"{spec}: no such file in {parsed.qualified_name}")
    real_mp = os.path.realpath(mp)
    real_vdir = os.path.realpath(vdir)
    hit_real = locate(real_vdir, [real_mp])
    try:
        real = parse_mount_path(hit_real[1]) if hit_real else None
    except ValueError:
        real = None
    if real is None or real.version is None or not real.version.is_index:
        raise ResolveError(f"{spec}: the mount did not resolve {parsed.version} to a vN directory")
    assert parsed.org and parsed.registry and parsed.collection
    return Resolution(org=parsed.org, registry=parsed.registry, collection=parsed.collection,
                      version=real.version.token,
                      alias=None if parsed.version.is_index else parsed.version.token,
                      inner_path="/".join(parsed.inner_path) or None, mount_path=abs_path)


def _sdk_artifact(name: str) -> Any:
    from wandbfs.sdk.client import WandbClient

    client = WandbClient()
    return client._call(lambda: client.api().artifact(name))  # maps SDK errors to ours


def resolve_name(name: str, lookup: Callable[[str], Any] = _sdk_artifact) -> Resolution:
    """A registry name -> its version, through the SDK (``Api().artifact(name).version``)."""
    try:
        q = parse_qualified_name(name)
    except ValueError as e:
        raise ResolveError(str(e)) from None
    requested = qualified_name(q.org, q.registry, q.collection, q.version)
    art = lookup(requested)
    version = str(art.version)
    parse_version_token(version)
    ref = parse_version_token(q.version)
    return Resolution(org=q.org, registry=q.registry, collection=q.collection, version=version,
                      alias=None if ref.is_index else q.version, type=str(art.type) if art.type else None)


def artifact_type(r: Resolution, lookup: Callable[[str], Any] = _sdk_artifact) -> str | None:
    art = lookup(r.name)  # vN: immutable, so this is the type of exactly what was resolved
    return str(art.type) if art.type else None


def resolve(spec: str, ask_wandb: bool = True) -> Resolution:
    """A mount path or a registry name; the type (and a name's version) come from the SDK."""
    if looks_like_path(spec):
        r = resolve_mount_path(spec)
        if ask_wandb:
            r = replace(r, type=artifact_type(r))
        return r
    if not is_name(spec):
        raise ResolveError(f"{spec!r} is neither a path in a wandbfs mount nor a registry name "
                           "(<org>/wandb-registry-<registry>/<collection>[:<version>])")
    if not ask_wandb:
        raise ResolveError("resolving a registry name needs W&B; --offline works for mount paths only")
    r = resolve_name(spec)
    mounts = list(dict.fromkeys(read_mounts()))
    if len(mounts) == 1:
        r = replace(r, mount_path=name_to_path(r.requested, mounts[0]))
    return r


# ---- the commands -----------------------------------------------------------------------

def _fail(msg: str) -> None:
    lines = [ln.strip() for ln in str(msg).splitlines() if ln.strip()]
    click.echo(f"wandbfs: {lines[0] if lines else 'failed'}", err=True)
    sys.exit(1)


@click.command("resolve")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--pin", is_flag=True, help="Put the vN name (not the alias) in the snippets.")
@click.option("--entity", help="Fill wandb.init(entity=...) in the snippet.")
@click.option("--project", help="Fill wandb.init(project=...) in the snippet.")
@click.option("--offline", is_flag=True,
              help="Do not ask W&B (mount paths only): the snippets go without type=.")
def resolve_command(target: str, as_json: bool, pin: bool, entity: str | None, project: str | None,
                    offline: bool) -> None:
    """Print the registry name behind TARGET and ready-to-paste usage snippets.

    TARGET is a path in a wandbfs mount (/mnt/wandb/acme/model/resnet50/production/model.pt)
    or a registry name (acme/wandb-registry-model/resnet50:production). The first line is the
    pinned name, with the alias it came through: acme/wandb-registry-model/resnet50:v3 via
    production.
    """
    from wandbfs.sdk.client import WandbError

    try:
        r = resolve(target, ask_wandb=not offline)
    except (ResolveError, WandbError) as e:
        _fail(str(e))
        return
    render = render_json if as_json else render_text
    click.echo(render(r, entity, project, pin), nl=False)


@click.command("path")
@click.argument("name")
@click.argument("inner", required=False)
@click.option("--mount", "mountpoint", help="The wandbfs mount point (default: the only one mounted).")
def path_command(name: str, inner: str | None, mountpoint: str | None) -> None:
    """Print the mount path of a registry NAME (and of INNER, a file or folder in it).

    acme/wandb-registry-model/resnet50:production -> /mnt/wandb/acme/model/resnet50/production
    """
    try:
        mp = pick_mount(read_mounts(), os.path.abspath(mountpoint) if mountpoint else None)
        click.echo(name_to_path(name, mp, inner))
    except ResolveError as e:
        _fail(str(e))


__all__ = ["Resolution", "ResolveError", "api_snippet", "locate", "name_to_path", "parse_mounts",
           "path_command", "pick_mount", "render_json", "render_text", "resolve", "resolve_command",
           "resolve_mount_path", "resolve_name", "usage_snippet"]
