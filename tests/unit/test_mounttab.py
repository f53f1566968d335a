"""The one mount-table reader: kernel escapes, odd bytes, non-ASCII, wandbfs mounts, the live table."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from wandbfs.daemon.mounttab import FSTYPE, is_mounted, mount_entry, mount_table, mounts_of, parse_mountinfo, unescape


def kernel_escape(path: bytes) -> bytes:
    """What the kernel's seq_file escaping does to a path in mountinfo: space, tab, newline
    and backslash as ``\\ooo``, every other byte as is."""
    return b"".join(b"\\%03o" % c if c in b" \t\n\\" else bytes([c]) for c in path)


def line(mountpoint: bytes, fstype: bytes = b"fuse.wandbfs", dev: bytes = b"0:52", optional: bytes = b"",
         mount_opts: bytes = b"ro,nosuid,nodev,relatime",
         super_opts: bytes = b"ro,user_id=0,group_id=0,default_permissions") -> bytes:
    opt = optional + b" " if optional else b""
    return (b"36 25 " + dev + b" / " + kernel_escape(mountpoint) + b" " + mount_opts + b" " + opt + b"- "
            + fstype + b" wandbfs " + super_opts + b"\n")


ODD = [b"/mnt/with space", b"/mnt/tab\there", b"/mnt/new\nline", b"/mnt/back\\slash", b"/mnt/\\040 literal",
       "/mnt/é ü".encode(), "/mnt/日本語 データ".encode(), b"/mnt/form\x0cfeed\rreturn\x0bvt",
       b"/mnt/latin1-\xe9\xfc", b"/mnt/ - dash", b"/mnt/trailing "]


@pytest.mark.parametrize("raw", ODD, ids=lambda b: repr(b)[2:-1])
def test_each_odd_mount_point_reads_back_as_the_path_this_process_would_use(raw):
    """The mount point equals ``os.fsdecode`` of its bytes: the same str the CLI gets from
    its arguments for that path, so lookups by path match (non-UTF-8 bytes included)."""
    [e] = parse_mountinfo(line(raw))
    assert e.mountpoint == os.fsdecode(raw)
    assert os.fsencode(e.mountpoint) == raw
    assert (e.fstype, e.source, e.major, e.minor) == ("fuse.wandbfs", "wandbfs", 0, 52)


def test_every_byte_but_slash_and_nul_survives():
    raw = b"/mnt/" + bytes(c for c in range(1, 256) if c != ord("/"))
    [e] = parse_mountinfo(line(raw))
    assert os.fsencode(e.mountpoint) == raw


def test_octal_escapes_decode_to_bytes_not_code_points():
    """``\\303\\251`` is é in UTF-8 (two bytes); read as code points it would be 'Ã©'."""
    assert unescape(b"/mnt/\\303\\251\\040x\\134") == "/mnt/é x\\".encode()
    [e] = parse_mountinfo(b"36 25 0:52 / /mnt/\\303\\251 ro - fuse.wandbfs wandbfs ro\n")
    assert e.mountpoint == "/mnt/é"


def test_a_whole_table_wandbfs_mounts_options_and_garbage():
    text = (b"22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
            + line(b"/mnt/wandb", dev=b"0:40", optional=b"shared:5 master:1")
            + b"garbage line\n\n"
            + b"37 25 0:33 / /mnt/x rw - fuse.sshfs host:/ rw,user_id=0\n"
            + line(b"/mnt/with space", dev=b"0:41", super_opts=b"ro,user_id=0,allow_other")
            + line(b"/mnt/wandb", dev=b"0:42"))
    table = parse_mountinfo(text)
    assert [(e.mountpoint, e.fstype, e.minor) for e in table] == [
        ("/proc", "proc", 21), ("/mnt/wandb", FSTYPE, 40), ("/mnt/x", "fuse.sshfs", 33),
        ("/mnt/with space", FSTYPE, 41), ("/mnt/wandb", FSTYPE, 42)]
    # stacked mounts repeat, in the kernel's order (the last is the one on top)
    assert mounts_of(FSTYPE, table) == ["/mnt/wandb", "/mnt/with space", "/mnt/wandb"]
    assert mounts_of("fuse.sshfs", table) == ["/mnt/x"]
    # the mount's options, then the superblock's, each once (what /proc/self/mounts shows)
    assert table[3].options == ("ro", "nosuid", "nodev", "relatime", "user_id=0", "allow_other")
    assert "allow_other" not in table[1].options


def test_a_str_text_is_read_like_its_bytes():
    text = "36 25 0:32 / /mnt/é\\040ü rw,nosuid - fuse.wandbfs wandbfs ro,user_id=0\n"
    assert parse_mountinfo(text) == parse_mountinfo(text.encode())


def test_the_live_table():
    table = mount_table()
    assert any(e.mountpoint == "/" for e in table)
    assert is_mounted("/proc") and mount_entry("/proc").fstype == "proc"   # type: ignore[union-attr]
    assert not is_mounted("/proc/self")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
@pytest.mark.timeout(60)
def test_a_real_mount_at_an_odd_path_is_found_and_stacking_shows_the_top(tmp_path: Path):
    mp = tmp_path / "odd é ü\ttab\\back\nline"
    mp.mkdir()
    mounted = 0
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "wandbfs-test-a", str(mp)], check=True)
        mounted += 1
        assert is_mounted(mp) and mount_entry(mp).fstype == "tmpfs"   # type: ignore[union-attr]
        assert mount_entry(mp).source == "wandbfs-test-a"             # type: ignore[union-attr]
        # reached through a symlinked parent: the same mount point
        (tmp_path / "link").symlink_to(tmp_path)
        assert is_mounted(tmp_path / "link" / mp.name)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "wandbfs-test-b", str(mp)], check=True)
        mounted += 1
        assert mount_entry(mp).source == "wandbfs-test-b"             # type: ignore[union-attr]
    finally:
        for _ in range(mounted):
            subprocess.run(["umount", str(mp)], check=True)
    assert not is_mounted(mp)


def test_each_mount_names_its_owner_and_status_lists_the_callers_own():
    """``wandbfs status`` without a mount point shows the caller's mounts (``user_id=``)."""
    from wandbfs.daemon.mounttab import mounts_of

    table = parse_mountinfo(line(b"/mnt/root-s") + line(b"/home/bob/w", super_opts=b"ro,user_id=1000,group_id=1000")
                            + line(b"/mnt/odd", super_opts=b"ro,user_id=x"))
    assert [e.owner for e in table] == [0, 1000, None]
    assert mounts_of(table=table, owner=1000) == ["/home/bob/w"]
    assert mounts_of(table=table, owner=0) == ["/mnt/root-s"]
    assert mounts_of(table=table) == ["/mnt/root-s", "/home/bob/w", "/mnt/odd"]
