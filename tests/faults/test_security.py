"""Owner-only by default, private directories, no key in sight, no listening socket."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from wandbfs.daemon.mounttab import mount_entry


def _tcp_listen_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A":  # LISTEN
                inodes.add(f[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _children(pid: int) -> list[int]:
    kids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if int(Path(f"/proc/{p}/stat").read_text().rsplit(") ", 1)[1].split()[1]) == pid:
                    kids.append(int(p))
            except (OSError, IndexError):
                continue
    return kids


def test_key_never_shown_and_no_listening_socket(mount, mount_env, fresh_cache):
    m = mount("--cache-dir", str(fresh_cache), "--debug")
    (m.path / "acme/model/bert-base/production/config.json").read_bytes()
    key = mount_env["WANDB_API_KEY"]
    pids = [m.pid] + _children(m.pid)
    for pid in pids:
        assert key.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert key not in Path(f"/proc/{pid}/comm").read_text()
    assert key not in m.log
    listening = _tcp_listen_inodes()
    for pid in pids:
        assert not (_socket_inodes(pid) & listening), f"process {pid} listens on a TCP port"


def test_private_directories_and_owner_only_mount(mount, mount_env, fresh_cache):
    m = mount("--cache-dir", str(fresh_cache))
    (m.path / "acme/model/bert-base/v1/config.json").read_bytes()
    for d in [fresh_cache / "artifacts/obj", fresh_cache / "artifacts/tmp", fresh_cache / "wandbfs-meta",
              Path(mount_env["WANDBFS_STATE_DIR"])]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    entry = mount_entry(m.path)
    assert entry is not None and "allow_other" not in entry.options and "ro" in entry.options
