"""``mount.fuse.wandbfs``: the helper mount(8) runs for ``-t fuse.wandbfs`` (and fstab entries).

For ``mount -t fuse.wandbfs SOURCE DIR -o OPTS`` util-linux looks for ``/sbin/mount.fuse.wandbfs``
(``-t wandbfs``: ``/sbin/mount.wandbfs``) and runs it as::

    /sbin/mount.fuse.wandbfs SOURCE DIR [-sfnv] [-N NAMESPACE] [-o OPTIONS]

with HOME and PATH removed from the environment, ``x-*``/``noauto``/``defaults``/``comment=``
already stripped, and ``rw`` (or ``ro``) plus any ``user``-implied ``nosuid,nodev,noexec``
added to OPTIONS. Without this helper it would fall back to fuse3's ``/sbin/mount.fuse``,
which runs ``wandbfs SOURCE DIR -o OPTS``: not a command wandbfs has.

This helper turns OPTIONS into ``wandbfs mount`` arguments (``cache_dir=/x`` ->
``--cache-dir /x``; the table is read from the options the ``mount`` command is built from,
``wandbfs.cli.mount_options``, so every option it has works here), ignores the generic
mount options, refuses unknown ones in one line, loads ``env_file=`` (fstab has no
environment: WANDB_API_KEY, WANDB_BASE_URL, ...) and then execs ``wandbfs mount``, which
returns once the mount answers and leaves the daemon running. SOURCE is ``none`` (or
``wandbfs``/``wandb``) for every organization, or an organization name, like ``org=``.

``wandbfs install-helper`` links ``/sbin/mount.fuse.wandbfs`` and ``/sbin/mount.wandbfs`` to
the ``mount.wandbfs`` console script of this installation.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import click

from wandbfs.cli.mount_options import mount_params

HELPER_NAMES = ("mount.fuse.wandbfs", "mount.wandbfs")
SCRIPT_NAME = "mount.wandbfs"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Options mount(8) (or an fstab line) may hand any helper; none changes what wandbfs does.
# rw: mount(8) adds it when ro is not given; the mount is read-only regardless (writes get
# EROFS). nosuid/nodev/noexec: wandbfs serves only regular files of mode 0444 and
# directories, so they hold anyway (libfuse also mounts nosuid,nodev).
GENERIC_FLAGS = frozenset({
    "defaults", "ro", "rw", "auto", "noauto", "user", "users", "nouser", "owner", "group", "nofail",
    "_netdev", "sync", "async", "dirsync", "atime", "noatime", "relatime", "norelatime", "strictatime",
    "nostrictatime", "lazytime", "nolazytime", "diratime", "nodiratime", "iversion", "noiversion",
    "silent", "loud", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "nosymfollow", "symfollow",
})
GENERIC_PREFIXES = ("x-", "X-", "comment=", "user=", "helper=")

# wandbfs mount options the helper must not pass: it always daemonizes (mount(8) waits for it).
NOT_FOR_FSTAB = frozenset({"foreground", "help"})

SOURCES_MEANING_ALL = frozenset({"", "none", "wandbfs", "wandb"})
_ORG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class HelperError(Exception):
    """A one-line reason the helper refuses (mount(8) shows it as is)."""


@dataclass
class HelperArgs:
    source: str
    mountpoint: str
    options: list[str] = field(default_factory=list)
    fake: bool = False
    verbose: bool = False
    sloppy: bool = False


@dataclass
class Plan:
    """What the helper will run."""

    mount_args: list[str]           # after ``wandbfs mount``
    env_file: str | None = None
    ignored: list[str] = field(default_factory=list)


def split_options(s: str) -> list[str]:
    return [o.strip() for o in s.split(",") if o.strip()]


def parse_argv(argv: Sequence[str]) -> HelperArgs:
    """``SOURCE DIR [-sfnv] [-N NS] [-o OPTS] [-t TYPE]``; options may come first too."""
    positional: list[str] = []
    opts: list[str] = []
    fake = verbose = sloppy = False
    it = iter(argv)
    for a in it:
        if a == "-o" or a == "-t" or a == "-N":
            try:
                value = next(it)
            except StopIteration:
                raise HelperError(f"{a} needs a value") from None
            if a == "-o":
                opts += split_options(value)
            elif a == "-N":
                raise HelperError("-N (mount namespace) is not supported; run mount inside the namespace")
        elif a.startswith("-o") and len(a) > 2:
            opts += split_options(a[2:])
        elif a.startswith("-t") and len(a) > 2:
            pass
        elif a.startswith("-") and len(a) > 1 and set(a[1:]) <= set("sfnvrw"):
            fake |= "f" in a
            verbose |= "v" in a
            sloppy |= "s" in a
            if "w" in a:
                opts.append("rw")
            if "r" in a:
                opts.append("ro")
        elif a.startswith("-") and len(a) > 1:
            raise HelperError(f"unknown argument {a!r} (usage: mount.fuse.wandbfs SOURCE DIR [-sfnv] [-o OPTIONS])")
        else:
            positional.append(a)
    if len(positional) != 2:
        raise HelperError("usage: mount.fuse.wandbfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]")
    return HelperArgs(positional[0], positional[1], opts, fake, verbose, sloppy)


@dataclass(frozen=True)
class OptSpec:
    """One ``-o key[=value]`` the ``wandbfs mount`` command accepts."""

    key: str
    flag: str                     # the command-line flag it becomes
    takes_value: bool
    param: Any = None             # the click parameter, to check values


def option_table(params: Iterable[Any] | None = None) -> dict[str, OptSpec]:
    """``-o`` keys from the ``wandbfs mount`` command's own options: ``--cache-dir`` -> ``cache_dir``."""
    if params is None:
        params = mount_params()
    table: dict[str, OptSpec] = {}
    for p in params:
        if not isinstance(p, click.Option) or p.name in NOT_FOR_FSTAB:
            continue
        for flag in [*p.opts, *p.secondary_opts]:
            if flag.startswith("--"):
                key = flag[2:].replace("-", "_")
                table[key] = OptSpec(key, flag, takes_value=not p.is_flag, param=p)
    return table


def _check_abs(key: str, value: str) -> None:
    if not value.startswith("/"):
        raise HelperError(f"{key}={value}: needs an absolute path")


def translate(source: str, options: Sequence[str], table: dict[str, OptSpec],
              sloppy: bool = False) -> Plan:
    """Mount options -> ``wandbfs mount`` arguments (pure, so it is unit-tested)."""
    args: list[str] = []
    ignored: list[str] = []
    env_file: str | None = None
    orgs: list[str] = []
    if source not in SOURCES_MEANING_ALL:
        if not _ORG_RE.fullmatch(source):
            raise HelperError(f"source {source!r} is not an organization name (use 'none' for all)")
        orgs.append(source)
    for opt in options:
        key, eq, value = opt.partition("=")
        if opt in GENERIC_FLAGS or opt.startswith(GENERIC_PREFIXES):
            ignored.append(opt)
            continue
        norm = key.replace("-", "_")
        if norm == "env_file":
            if not value:
                raise HelperError("env_file= needs a path")
            _check_abs(norm, value)
            env_file = value
            continue
        if norm in ("org", "orgs") and eq:
            for org in value.split(":"):
                if not _ORG_RE.fullmatch(org):
                    raise HelperError(f"{opt}: {org!r} is not an organization name")
                orgs.append(org)
            continue
        spec = table.get(norm)
        if spec is None:
            if sloppy:
                ignored.append(opt)
                continue
            raise HelperError(f"unknown option {opt!r} (see wandbfs mount --help; "
                              "-o keys are its long options with _ for -)")
        if spec.takes_value:
            if not eq or value == "":
                raise HelperError(f"option {key} needs a value ({key}=...)")
            if norm in ("cache_dir", "log_file"):
                _check_abs(norm, value)
            if spec.param is not None:
                try:
                    spec.param.type.convert(value, spec.param, None)
                except click.BadParameter as e:
                    raise HelperError(f"{opt}: {e.message}") from None
            args += [spec.flag, value]
        else:
            if eq:
                raise HelperError(f"option {key} takes no value")
            args.append(spec.flag)
    for org in dict.fromkeys(orgs):
        args += ["--org", org]
    return Plan(args, env_file, ignored)


def parse_env_file(text: str, path: str = "env_file") -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` and quotes allowed, ``#`` comments), like systemd's EnvironmentFile."""
    env: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, eq, value = line.partition("=")
        key = key.strip()
        if not eq or not _ENV_KEY_RE.fullmatch(key):
            raise HelperError(f"{path}:{n}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


def load_env_file(path: str) -> dict[str, str]:
    """Read credentials; refuse a file other users can read or write (it holds the API key)."""
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise HelperError(f"env_file {path}: {e.strerror}") from None
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise HelperError(f"env_file {path} is readable or writable by other users (chmod 600 {path})")
    return parse_env_file(text, path)


def daemon_env(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """mount(8) drops HOME and PATH; put sane ones back (the SDK and netrc need HOME)."""
    env = dict(base)
    env.update(extra)
    if not env.get("HOME"):
        try:
            env["HOME"] = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:
            env["HOME"] = "/"
    if not env.get("PATH"):
        env["PATH"] = DEFAULT_PATH
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mount.wandbfs`` / ``mount.fuse.wandbfs``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_argv(argv)
        plan = translate(args.source, args.options, option_table(), sloppy=args.sloppy)
        extra = load_env_file(plan.env_file) if plan.env_file else {}
    except HelperError as e:
        print(f"mount.wandbfs: {e}", file=sys.stderr)
        return 1
    mountpoint = os.path.abspath(args.mountpoint)
    cmd = [sys.executable, "-m", "wandbfs.cli", "mount", mountpoint, *plan.mount_args]
    if args.verbose:
        shown = " ".join(["wandbfs", "mount", mountpoint, *plan.mount_args])
        print(f"mount.wandbfs: {shown}" + (f" (ignored: {','.join(plan.ignored)})" if plan.ignored else ""),
              file=sys.stderr)
    if args.fake:
        return 0
    env = daemon_env(dict(os.environ), extra)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(cmd[0], cmd, env)
    return 127  # not reached


# ---- installing the helper --------------------------------------------------------------

def default_script() -> Path:
    """The ``mount.wandbfs`` console script of the environment this wandbfs runs from."""
    return Path(sysconfig.get_path("scripts")) / SCRIPT_NAME


def install_links(directory: Path, target: Path, force: bool = False,
                  names: Sequence[str] = HELPER_NAMES) -> list[str]:
    """Symlink ``directory/<name>`` -> ``target`` for each helper name; returns what was done."""
    if not target.is_file() or not os.access(target, os.X_OK):
        raise HelperError(f"{target} is not an executable file (is wandbfs installed with pip?)")
    done = []
    for name in names:
        link = directory / name
        if link.is_symlink() and os.readlink(link) == str(target):
            done.append(f"{link} -> {target} (already)")
            continue
        if link.exists() or link.is_symlink():
            if not force:
                raise HelperError(f"{link} exists (points elsewhere); --force replaces it")
            link.unlink()
        link.symlink_to(target)
        done.append(f"{link} -> {target}")
    return done


def remove_links(directory: Path, names: Sequence[str] = HELPER_NAMES) -> list[str]:
    """Remove helper links (only symlinks: a real file there is someone else's)."""
    done = []
    for name in names:
        link = directory / name
        if link.is_symlink():
            link.unlink()
            done.append(f"removed {link}")
    return done


@click.command("install-helper")
@click.option("--dir", "directory", default="/sbin", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Where mount(8) looks for helpers.")
@click.option("--target", type=click.Path(dir_okay=False, path_type=Path),
              help="The helper to link to (default: this installation's mount.wandbfs script).")
@click.option("--force", is_flag=True, help="Replace existing links or files of the same name.")
@click.option("--uninstall", is_flag=True, help="Remove the links instead.")
def install_helper_command(directory: Path, target: Path | None, force: bool, uninstall: bool) -> None:
    """Link /sbin/mount.fuse.wandbfs and /sbin/mount.wandbfs, so `mount -t fuse.wandbfs` and
    fstab entries work:

      none /mnt/wandb fuse.wandbfs org=acme,cache_dir=/var/cache/wandbfs,env_file=/etc/wandbfs/env,allow_other,_netdev 0 0
    """
    try:
        done = remove_links(directory) if uninstall else install_links(directory, target or default_script(), force)
    except (HelperError, OSError) as e:
        click.echo(f"wandbfs: {e}", err=True)
        sys.exit(1)
    for line in done:
        click.echo(line)


if __name__ == "__main__":
    sys.exit(main())
