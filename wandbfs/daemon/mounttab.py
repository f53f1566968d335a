"""What is mounted where: the one reader of the kernel's mount table, and taking a mount off it.

Everything in wandbfs that asks "is this mounted?" or "which wandbfs mounts are there?"
asks here, never with a syscall on the mount point (whose daemon may not answer).

``/proc/self/mountinfo`` writes space, tab, newline and backslash in a path as octal
escapes (``\\040 \\011 \\012 \\134``) and every other byte as is, in whatever encoding
the path was created with. So fields are split on single spaces (a path may hold a form
feed or a carriage return), escapes are decoded to bytes, and the bytes to ``str`` with
``os.fsdecode``: the mount point then compares equal to the path the user typed, as the
same process decoded it from its arguments, non-ASCII (and non-UTF-8) names included.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from wandbfs.daemon.config import MountError
from wandbfs.daemon.procutil import run_command
from wandbfs.daemon.state import mount_path

MOUNTINFO = "/proc/self/mountinfo"
FSTYPE = "fuse.wandbfs"

_OCTAL = re.compile(rb"\\([0-7]{3})")


@dataclass(frozen=True)
class MountEntry:
    """One line of ``/proc/self/mountinfo``."""

    mountpoint: str
    fstype: str
    source: str
    options: tuple[str, ...]   # the mount's, then the superblock's (as /proc/self/mounts shows them)
    major: int
    minor: int                 # for FUSE: the connection's number in /sys/fs/fuse/connections

    @property
    def owner(self) -> int | None:
        """The uid that made a FUSE mount (its ``user_id=`` option), None if not given."""
        for o in self.options:
            if o.startswith("user_id="):
                try:
                    return int(o[len("user_id="):])
                except ValueError:
                    return None
        return None


def unescape(field: bytes) -> bytes:
    """The kernel's ``\\ooo`` escapes back to the bytes they stand for."""
    return _OCTAL.sub(lambda m: bytes([int(m.group(1), 8) & 0xFF]), field)


def decode_field(field: bytes) -> str:
    """One path field as the filesystem encoding decodes it (``os.fsdecode``)."""
    return os.fsdecode(unescape(field))


def _parse_line(line: bytes) -> MountEntry | None:
    # ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
    left, sep, right = line.partition(b" - ")
    fields, rest = left.split(b" "), right.split(b" ")
    if not sep or len(fields) < 6 or len(rest) < 3:
        return None
    major, colon, minor = fields[2].partition(b":")
    try:
        dev = (int(major), int(minor))
    except ValueError:
        return None
    if not colon:
        return None
    options = [decode_field(o) for o in fields[5].split(b",") + rest[2].split(b",") if o]
    return MountEntry(decode_field(fields[4]), decode_field(rest[0]), decode_field(rest[1]),
                      tuple(dict.fromkeys(options)), *dev)


def parse_mountinfo(text: bytes | str) -> list[MountEntry]:
    """Every well-formed line of a mountinfo text, in the kernel's order (later mounts last)."""
    data = os.fsencode(text) if isinstance(text, str) else text
    return [e for e in map(_parse_line, data.split(b"\n")) if e is not None]


def mount_table(path: str = MOUNTINFO) -> list[MountEntry]:
    """The mounts this process sees now."""
    with open(path, "rb") as f:
        return parse_mountinfo(f.read())


def mount_entry(mountpoint: str | os.PathLike[str]) -> MountEntry | None:
    """What is mounted at the mount point now (the topmost mount), from mountinfo alone."""
    target = str(mount_path(mountpoint))
    hits = [e for e in mount_table() if e.mountpoint == target]
    return hits[-1] if hits else None


def is_mounted(mountpoint: str | os.PathLike[str]) -> bool:
    """Whether anything is mounted at the mount point; no syscall on it."""
    return mount_entry(mountpoint) is not None


def mounts_of(fstype: str = FSTYPE, table: Sequence[MountEntry] | None = None, owner: int | None = None) -> list[str]:
    """The mount points of ``fstype`` (wandbfs by default) in ``table`` (now's), in order;
    repeats when stacked. ``owner``: only the mounts that uid made."""
    return [e.mountpoint for e in (mount_table() if table is None else table)
            if e.fstype == fstype and (owner is None or e.owner == owner)]


def fusermount_unmount(mountpoint: Path, lazy: bool = False) -> None:
    """fusermount3 -u (-z), else umount (-l); each bounded, so a hung mount cannot hold us."""
    r = run_command(["fusermount3", "-u"] + (["-z"] if lazy else []) + [str(mountpoint)])
    if r.returncode != 0:
        r2 = run_command(["umount"] + (["-l"] if lazy else []) + [str(mountpoint)])
        if r2.returncode != 0:
            hint = "" if lazy else f" (close what is open in it, or `wandbfs unmount --force {mountpoint}`)"
            raise MountError(f"cannot unmount {mountpoint}: {r.stderr.strip() or r2.stderr.strip()}{hint}")
