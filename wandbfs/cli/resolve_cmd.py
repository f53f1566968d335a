"""``wandbfs resolve PATH|NAME`` and ``wandbfs path NAME``: between mount paths and registry names.

``resolve`` answers "what exactly am I reading?": the full registry name of the version
behind a mount path (``acme/wandb-registry-model/resnet50:v3``), the alias the path came
through (``via production``), and the usage snippets the W&B Registry UI's Usage tab shows,
with that name filled in. ``path`` is the reverse: where a registry name lives in a mount.

The first half of this module is pure (snippets, rendering, picking a mount) so it is
unit-tested without a mount or a server; the second half does the I/O: the mount table
(``wandbfs.daemon.mounttab``), reading the target (targets.py: a path is followed to the
mount's ``vN``) and asking W&B (``WandbClient.resolve_name``) for a name's version and the type.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Sequence

import click

from wandbfs.cli.targets import ResolveError, Target, name_to_path, parse_name, resolve_target
from wandbfs.daemon.mounttab import FSTYPE, mounts_of
from wandbfs.model.names import home_entity, qualified_name, registry_project

if TYPE_CHECKING:
    from wandbfs.sdk.client import WandbClient

# ---- pure: snippets, rendering, picking a mount -----------------------------------------

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
    """The wandbfs mount points, in order (from the one mount-table reader)."""
    return mounts_of(FSTYPE)


def path_resolution(t: Target) -> Resolution:
    """A path's target as a resolution: the mount showed its ``vN``; no W&B call."""
    assert t.mount_index is not None, "a path target"
    return Resolution(org=t.org, registry=t.registry, collection=t.collection, version=t.token,
                      alias=t.alias, inner_path="/".join(t.inner) or None, mount_path=t.mount_path)


def _client(client: WandbClient | None) -> WandbClient:
    from wandbfs.sdk.client import WandbClient

    return client or WandbClient()


def resolve_name(name: str | Target, client: WandbClient | None = None) -> Resolution:
    """A registry name -> the version W&B resolves it to now (the collection's ``vN``) and its type."""
    from wandbfs.sdk.client import NotFound

    t = parse_name(name) if isinstance(name, str) else name
    try:
        found = _client(client).resolve_name(t.org, t.registry, t.collection, t.version)
    except NotFound as e:
        if home_entity(t.org) is None:
            raise
        raise NotFound(f"{t.requested}: no such project artifact ({str(e).splitlines()[0]}); a registry name "
                       "is <org>/wandb-registry-<registry>/<collection>[:<version>]") from None
    return Resolution(org=t.org, registry=t.registry, collection=t.collection, version=f"v{found.index}",
                      alias=t.alias, type=found.type)


def artifact_type(r: Resolution, client: WandbClient | None = None) -> str | None:
    # vN: immutable, so this is the type of exactly what was resolved
    return _client(client).resolve_name(r.org, r.registry, r.collection, r.version).type


def resolve(spec: str, ask_wandb: bool = True) -> Resolution:
    """A mount path or a registry name; the type (and a name's version) come from W&B."""
    mounts = list(dict.fromkeys(read_mounts()))
    t = resolve_target(spec, mounts)
    if t.mount_path is not None:
        r = path_resolution(t)
        return replace(r, type=artifact_type(r)) if ask_wandb else r
    if not ask_wandb:
        raise ResolveError("resolving a registry name needs W&B; --offline works for mount paths only")
    r = resolve_name(t)
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


__all__ = ["Resolution", "ResolveError", "api_snippet", "artifact_type", "path_command",
           "path_resolution", "pick_mount", "render_json", "render_text", "resolve", "resolve_command",
           "resolve_name", "usage_snippet"]
