"""``mount.fuse.wandbfs``: option translation (pure), then real ``mount -t fuse.wandbfs`` / fstab mounts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import click
import pytest
import wandb

from tests.helpers import wait_for
from tests.ops.conftest import _mounted, daemon_env, force_unmount, run_cli
from wandbfs.cli.mount_helper import (
    GENERIC_FLAGS,
    HelperError,
    daemon_env as helper_env,
    install_links,
    load_env_file,
    option_table,
    parse_argv,
    parse_env_file,
    remove_links,
    translate,
)
from wandbfs.daemon.mounttab import mount_entry
from wandbfs.procfs import process_alive
from wandbfs.daemon.state import runtime_file

TABLE = option_table()


# ---- pure ---------------------------------------------------------------------------------

def test_argv_as_mount8_passes_it():
    a = parse_argv(["none", "/mnt/wandb", "-o", "rw,org=acme,allow_other"])
    assert (a.source, a.mountpoint, a.options) == ("none", "/mnt/wandb", ["rw", "org=acme", "allow_other"])
    a = parse_argv(["acme", "/mnt/w", "-sfnv", "-o", "ro", "-t", "fuse.wandbfs", "-oalias_ttl=5"])
    assert a.fake and a.verbose and a.sloppy and a.options == ["ro", "alias_ttl=5"]
    for bad in (["/mnt/w"], ["a", "b", "c"], ["none", "/m", "-o"], ["none", "/m", "--frobnicate"]):
        with pytest.raises(HelperError):
            parse_argv(bad)
    with pytest.raises(HelperError, match="-N"):
        parse_argv(["none", "/m", "-N", "/proc/1/ns/mnt"])


def test_every_mount_option_is_an_o_key():
    from wandbfs.cli.main import mount as mount_command

    longs = {f for p in mount_command.params if isinstance(p, click.Option)
             for f in [*p.opts, *p.secondary_opts] if f.startswith("--")}
    keys = {f[2:].replace("-", "_") for f in longs} - {"foreground", "help"}
    assert keys <= set(TABLE), keys - set(TABLE)
    assert "foreground" not in TABLE  # mount(8) needs the helper to return once mounted


def test_translate_options():
    p = translate("none", ["rw", "nosuid", "nodev", "noexec", "org=acme", "cache_dir=/var/cache/wandbfs",
                           "alias_ttl=5", "allow_other", "verify=strict", "no_lineage", "no-warm", "_netdev",
                           "nofail", "x-systemd.automount", "user", "user=bob", "env_file=/etc/wandbfs/env",
                           "log_file=/var/log/wandbfs.log", "entity=team", "project=p", "debug"], TABLE)
    assert p.mount_args == ["--cache-dir", "/var/cache/wandbfs", "--alias-ttl", "5", "--allow-other",
                            "--verify", "strict", "--no-lineage", "--no-warm", "--log-file", "/var/log/wandbfs.log",
                            "--entity", "team", "--project", "p", "--debug", "--org", "acme"]
    assert p.env_file == "/etc/wandbfs/env"
    assert {"rw", "_netdev", "nofail", "x-systemd.automount", "user", "user=bob"} <= set(p.ignored)
    # SOURCE is an organization unless it is none/wandbfs; org= takes several with ':'.
    assert translate("acme", ["org=beta:gamma", "org=acme"], TABLE).mount_args == [
        "--org", "acme", "--org", "beta", "--org", "gamma"]
    # extended attributes are off by default; fstab turns them on (or says no) by name
    assert translate("none", ["xattrs"], TABLE).mount_args == ["--xattrs"]
    assert translate("none", ["no_xattrs"], TABLE).mount_args == ["--no-xattrs"]
    assert translate("wandbfs", ["defaults"], TABLE).mount_args == []
    # the cluster's shared cache tier, a bucket or a shared directory
    assert translate("none", ["shared_cache=s3://tier/wandbfs", "shared_lease_ttl=20"], TABLE).mount_args == [
        "--shared-cache", "s3://tier/wandbfs", "--shared-lease-ttl", "20"]
    assert translate("none", ["shared_cache=/shared/wandbfs"], TABLE).mount_args == ["--shared-cache", "/shared/wandbfs"]
    assert all(translate("none", [g], TABLE).mount_args == [] for g in GENERIC_FLAGS)


@pytest.mark.parametrize("opts,words", [
    (["bogus=1"], "unknown option 'bogus=1'"),
    (["uid=1000"], "unknown option"),
    (["foreground"], "unknown option"),
    (["alias_ttl=soon"], "not a valid float"),
    (["verify=lax"], "'lax' is not one of"),
    (["cache_dir=relative/dir"], "absolute path"),
    (["env_file=x.env"], "absolute path"),
    (["allow_other=yes"], "takes no value"),
    (["cache_dir"], "needs a value"),
    (["org=a b"], "not an organization"),
])
def test_translate_refuses_with_one_line(opts, words):
    with pytest.raises(HelperError, match=words) as e:
        translate("none", opts, TABLE)
    assert "\n" not in str(e.value)


def test_sloppy_ignores_unknown_options():
    p = translate("none", ["bogus=1", "allow_other"], TABLE, sloppy=True)
    assert p.mount_args == ["--allow-other"] and "bogus=1" in p.ignored
    with pytest.raises(HelperError):
        translate("bad source!", [], TABLE)


def test_env_file(tmp_path):
    text = ("# credentials\n\nWANDB_API_KEY=abc123\nexport WANDB_BASE_URL='https://w.example'\n"
            'WANDBFS_STATE_DIR="/var/lib/wandbfs"\n; also a comment\nEMPTY=\n')
    assert parse_env_file(text) == {"WANDB_API_KEY": "abc123", "WANDB_BASE_URL": "https://w.example",
                                    "WANDBFS_STATE_DIR": "/var/lib/wandbfs", "EMPTY": ""}
    with pytest.raises(HelperError, match="2: expected KEY=VALUE"):
        parse_env_file("A=1\nnot an assignment\n", "f")
    f = tmp_path / "env"
    f.write_text("WANDB_API_KEY=k\n")
    f.chmod(0o644)
    with pytest.raises(HelperError, match="chmod 600"):
        load_env_file(str(f))
    f.chmod(0o640)
    assert load_env_file(str(f)) == {"WANDB_API_KEY": "k"}
    with pytest.raises(HelperError, match="No such file"):
        load_env_file(str(tmp_path / "missing"))


def test_daemon_env_restores_home_and_path():
    env = helper_env({"FOO": "1"}, {"WANDB_API_KEY": "k"})
    assert env["FOO"] == "1" and env["WANDB_API_KEY"] == "k"
    assert env["HOME"] and env["PATH"]
    assert helper_env({"HOME": "/h", "PATH": "/p"}, {})["HOME"] == "/h"
    assert helper_env({"WANDB_API_KEY": "old"}, {"WANDB_API_KEY": "new"})["WANDB_API_KEY"] == "new"


def test_install_links(tmp_path):
    target = tmp_path / "bin/mount.wandbfs"
    target.parent.mkdir()
    target.write_text("#!/bin/sh\n")
    target.chmod(0o755)
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    done = install_links(sbin, target)
    assert os.readlink(sbin / "mount.fuse.wandbfs") == str(target) and os.readlink(sbin / "mount.wandbfs") == str(target)
    assert all("already" in d for d in install_links(sbin, target))
    (sbin / "mount.wandbfs").unlink()
    (sbin / "mount.wandbfs").symlink_to("/elsewhere")
    with pytest.raises(HelperError, match="--force"):
        install_links(sbin, target)
    install_links(sbin, target, force=True)
    assert os.readlink(sbin / "mount.wandbfs") == str(target)
    assert len(remove_links(sbin)) == 2 and not any(sbin.iterdir())
    with pytest.raises(HelperError, match="not an executable"):
        install_links(sbin, tmp_path / "nope")
    assert len(done) == 2


def test_install_helper_command(tmp_path):
    env = dict(os.environ)
    r = run_cli(["install-helper", "--dir", str(tmp_path)], env)
    assert r.returncode == 0, r.stderr
    link = tmp_path / "mount.fuse.wandbfs"
    assert link.is_symlink() and os.access(link, os.X_OK)
    # The linked script is this installation's helper: -f (fake) -v shows the translation.
    fake = subprocess.run([str(link), "none", str(tmp_path), "-f", "-v", "-o", "rw,org=acme,allow_other"],
                          capture_output=True, text=True, timeout=60)
    assert fake.returncode == 0, fake.stderr
    assert f"wandbfs mount {tmp_path} --allow-other --org acme" in fake.stderr
    r = run_cli(["install-helper", "--dir", str(tmp_path), "--uninstall"], env)
    assert r.returncode == 0 and not link.exists()


# ---- real mount(8) -------------------------------------------------------------------------

def _env_file(tmp_path: Path, base_url: str) -> tuple[Path, dict[str, str]]:
    """All the daemon's settings in an env_file: mount(8) gets an empty environment, as at boot."""
    env = daemon_env(tmp_path, base_url)
    keep = {k: v for k, v in env.items() if k.startswith(("WANDB", "WANDBFS")) or k in ("HOME", "TMPDIR")}
    f = tmp_path / "wandbfs.env"
    f.write_text("".join(f"{k}={v}\n" for k, v in sorted(keep.items())))
    f.chmod(0o600)
    return f, keep


def _daemon_pid(state_dir: str, mp: Path) -> int:
    import json

    return int(json.loads(runtime_file(mp, Path(state_dir)).read_text())["pid"])


BARE = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def test_mount_t_fuse_wandbfs_reads_then_umount_stops_the_daemon(emu, helper_installed, tmp_path, fresh_cache):
    env_file, env = _env_file(tmp_path, emu.url)
    mp = tmp_path / "mnt"
    mp.mkdir()
    pid = None
    try:
        r = subprocess.run(["mount", "-t", "fuse.wandbfs", "none", str(mp), "-o",
                            f"org=acme,env_file={env_file},cache_dir={fresh_cache},project=helper-test,"
                            "allow_other,_netdev,nofail,noauto,x-systemd.automount"],
                           env=BARE, capture_output=True, text=True, timeout=200)
        assert r.returncode == 0, r.stderr
        assert _mounted(mp)
        entry = mount_entry(mp)
        assert entry is not None and entry.fstype == "fuse.wandbfs"
        assert "allow_other" in entry.options and "ro" in entry.options
        pid = _daemon_pid(env["WANDBFS_STATE_DIR"], mp)
        assert env["WANDB_API_KEY"] not in open(f"/proc/{pid}/cmdline").read()  # the key came by env_file

        name = "acme/wandb-registry-model/bert-base:production"
        sdk = wandb.Api().artifact(name).download(root=str(tmp_path / "sdk"))
        got = (mp / "acme/model/bert-base/production/config.json").read_bytes()
        assert got == (Path(sdk) / "config.json").read_bytes()
        assert [n for n in os.listdir(mp) if not n.startswith("@")] == ["acme"]   # orgs, beside @entity homes

        r = subprocess.run(["umount", str(mp)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert not _mounted(mp)
        wait_for(lambda: not process_alive(pid), timeout=60, what="the daemon to exit after umount")
        with pytest.raises(FileNotFoundError):   # and took its runtime file with it
            _daemon_pid(env["WANDBFS_STATE_DIR"], mp)
        # It left cleanly: the lineage it had queued was sent and its run finished.
        runs = [run for run in emu.store.runs.values() if run.project == "helper-test"]
        assert len(runs) == 1 and runs[0].state == "finished"
        assert any(u["used_as"] == name for u in emu.uses() if u["run"].endswith(f"/helper-test/{runs[0].name}"))
    finally:
        force_unmount(mp, pid if pid and process_alive(pid) else None)


def test_fstab_entry_then_wandbfs_unmount(emu, helper_installed, tmp_path, fresh_cache):
    env_file, env = _env_file(tmp_path, emu.url)
    mp = tmp_path / "registry"
    mp.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# test fstab\nacme {mp} fuse.wandbfs env_file={env_file},cache_dir={fresh_cache},"
                     "no_lineage,verify=strict,alias_ttl=5,_netdev,nofail,noauto,user,"
                     "x-systemd.requires=network-online.target 0 0\n")
    pid = None
    try:
        r = subprocess.run(["mount", "-T", str(fstab), str(mp)], env=BARE, capture_output=True, text=True, timeout=200)
        assert r.returncode == 0, r.stderr
        assert _mounted(mp)
        pid = _daemon_pid(env["WANDBFS_STATE_DIR"], mp)
        version = wandb.Api().artifact("acme/wandb-registry-dataset/squad:staging").version
        assert os.path.basename(os.readlink(mp / "acme/dataset/squad/staging")) == version
        assert (mp / "acme/dataset/squad/staging/dev.jsonl").read_bytes() == \
            (mp / f"acme/dataset/squad/{version}/dev.jsonl").read_bytes()
        # `wandbfs unmount` works on a mount made by mount(8), and waits for the daemon.
        u = run_cli(["unmount", str(mp)], dict(os.environ, **env))
        assert u.returncode == 0, u.stderr
        assert not _mounted(mp) and not process_alive(pid)
    finally:
        force_unmount(mp, pid if pid and process_alive(pid) else None)


def test_bad_option_is_one_line_and_nothing_mounts(emu, helper_installed, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = subprocess.run(["mount", "-t", "fuse.wandbfs", "none", str(mp), "-o", "org=acme,uid=1000"],
                       env=BARE, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert r.stderr.strip() == ("mount.wandbfs: unknown option 'uid=1000' "
                                "(see wandbfs mount --help; -o keys are its long options with _ for -)")
    assert not _mounted(mp)
    # No API key in the env_file (nor a netrc in its HOME): the mount command's own check, one line.
    (tmp_path / "home").mkdir()
    nokey = tmp_path / "nokey.env"
    nokey.write_text(f"HOME={tmp_path / 'home'}\nWANDB_BASE_URL={emu.url}\n")
    nokey.chmod(0o600)
    r = subprocess.run(["mount", "-t", "wandbfs", "none", str(mp), "-o", f"env_file={nokey}"], env=BARE,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and not _mounted(mp)
    assert r.stderr.strip().splitlines() == ["wandbfs: no W&B API key: set WANDB_API_KEY or run `wandb login`"]
