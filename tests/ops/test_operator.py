"""Operator commands against a real mount and the emulator's truth: `wandbfs info` and `status`
(over the daemon's control socket; extended attributes with --xattrs), `refresh`, `lock` +
`mount --lock`, Prometheus metrics, JSON logs."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import stat
import urllib.request
from pathlib import Path

import pytest
import wandb

from tests.fs.conftest import run_cli
from tests.helpers import move_alias, publish_two_versions, publish_with_sdk, wait_for
from wandbfs.daemon.state import mount_id

NAME = "acme/wandb-registry-model/bert-base"


def _info(path, env) -> dict:
    r = run_cli(["info", str(path), "--json"], env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _no_xattrs(path) -> None:
    """The kernel was told once that this mount has none: every call fails without asking."""
    for call in [lambda: os.getxattr(path, "user.wandb.name"), lambda: os.getxattr(path, "security.selinux"),
                 lambda: os.listxattr(path)]:
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EOPNOTSUPP


def test_info_matches_the_registry_without_xattrs(emu, mount, mount_env, tmp_path):
    """The default mount serves no xattrs; `wandbfs info` gets every field from the daemon's
    control socket, by path: through an alias, a qualified name, the registry's project name,
    a folder, a name with a space, and a symlink from outside the mount."""
    m = mount()
    f = m.path / "acme/model/resnet50/production/config.json"
    art = wandb.Api().artifact("acme/wandb-registry-model/resnet50:production")
    data = f.read_bytes()
    _no_xattrs(f)
    _no_xattrs(m.path)
    info = _info(f, mount_env)
    assert info["name"] == f"acme/wandb-registry-model/resnet50:{art.version}" and info["version"] == art.version
    assert set(info["aliases"]) == {a for a in art.aliases if a}
    assert info["md5"] == hashlib.md5(data).hexdigest() and int(info["size"]) == len(data)
    assert info["metadata"] == art.metadata and info["artifact_id"] == art.id and info["path"] == "config.json"
    assert info["digest"] == art.manifest.entries["config.json"].digest
    # the same entry by every name the mount has for it
    outside = tmp_path / "link-to-config"
    outside.symlink_to(f)
    for other in [m.path / "acme/model/resnet50" / art.version / "config.json",
                  m.path / "acme/model/resnet50:production/config.json",
                  m.path / "acme/wandb-registry-model/resnet50/production/config.json",
                  m.path / "acme/model/resnet50/production/tokenizer/../config.json", outside]:
        assert _info(other, mount_env) == info, other
    # a version directory: the artifact's digest and total size; a folder: its own total
    vdir = m.path / "acme/model/resnet50" / art.version
    text = run_cli(["info", str(vdir)], mount_env)
    assert text.returncode == 0 and re.search(rf"^version\s+{art.version}$", text.stdout, re.M)
    assert re.search(rf"^digest\s+{art.digest}$", text.stdout, re.M)
    assert int(_info(vdir, mount_env)["size"]) == art.size
    folder = _info(vdir / "checkpoints", mount_env)
    assert folder["path"] == "checkpoints" and int(folder["size"]) == len((vdir / "checkpoints/epoch-1/notes.md").read_bytes())
    spaced = _info(m.path / "acme/Fine-tuned Models/llama-ft/v0/adapter/adapter_config.json", mount_env)
    assert spaced["name"] == "acme/wandb-registry-Fine-tuned Models/llama-ft:v0"
    # what is not an entry of a version says so
    bad = run_cli(["info", str(m.path / "acme/model")], mount_env)
    assert bad.returncode == 1 and "not a file or folder inside a version" in bad.stderr
    missing = run_cli(["info", str(vdir / "nope.txt")], mount_env)
    assert missing.returncode == 1 and "no such file or directory" in missing.stderr
    elsewhere = run_cli(["info", str(tmp_path)], mount_env)
    assert elsewhere.returncode == 1 and "not inside a wandbfs mount" in elsewhere.stderr
    # the socket is the owner's only
    sock = Path(mount_env["WANDBFS_STATE_DIR"]) / f"control-{mount_id(m.path)}.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600


def test_xattrs_mount_serves_the_same_info_as_attributes(emu, mount, mount_env, tmp_path):
    """--xattrs: getfattr sees user.wandb.*, the very values `wandbfs info` prints; a CLI that
    cannot reach the daemon's socket (another state directory) reads them from the mount."""
    plain = mount()
    m = mount("--xattrs")
    rel = "acme/model/resnet50/production/config.json"
    f = m.path / rel
    names = [n for n in os.listxattr(f) if n.startswith("user.wandb.")]
    assert {"user.wandb.name", "user.wandb.version", "user.wandb.aliases", "user.wandb.digest",
            "user.wandb.md5", "user.wandb.size", "user.wandb.created_at", "user.wandb.metadata",
            "user.wandb.artifact_id", "user.wandb.path"} == set(names)
    x = {n[len("user.wandb."):]: os.getxattr(f, n).decode() for n in names}
    info = _info(f, mount_env)
    assert info == {**x, "aliases": x["aliases"].split(","), "metadata": json.loads(x["metadata"])}
    assert _info(plain.path / rel, mount_env) == info          # the default mount, over its socket
    status = json.loads(os.getxattr(m.path, "user.wandbfs.status"))
    r = run_cli(["status", str(m.path), "--json"], mount_env)
    assert r.returncode == 0 and set(json.loads(r.stdout)) == {"mountpoint", *status}
    # no socket of ours: the attributes, when the mount serves them; else a clear reason
    blind = dict(mount_env, WANDBFS_STATE_DIR=str(tmp_path / "other-state"))
    assert _info(f, blind) == info
    r = run_cli(["status", str(m.path), "--json"], blind)
    assert r.returncode == 0 and json.loads(r.stdout)["pid"] == m.pid
    for args in (["info", str(plain.path / rel)], ["status", str(plain.path)]):
        r = run_cli(args, blind)
        assert r.returncode == 1 and "no control socket" in r.stderr and "--xattrs" in r.stderr, r.stderr


def test_status_counters_move_with_reads(emu, mount, mount_env, tmp_path):
    cache = tmp_path / "cache"
    m = mount("--cache-dir", str(cache), "--no-warm")

    def status() -> dict:
        r = run_cli(["status", str(m.path), "--json"], mount_env)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    s0 = status()
    assert s0["cache_misses"] == 0 and s0["bytes_read"] == 0 and s0["pid"] == m.pid
    data = (m.path / "acme/model/bert-base/v1/pytorch_model.bin").read_bytes()
    s1 = status()
    assert s1["cache_misses"] == 1 and s1["downloads"] == 1, s1 and s1["bytes_downloaded"] == len(data)
    assert s1["bytes_read"] >= len(data) and s1["uptime_s"] >= s0["uptime_s"]
    assert s1["lineage_pending"] is not None and s1["downloads_in_flight"] == 0
    # a second mount on the same cache: a hit, bytes from the cache, nothing downloaded
    m2 = mount("--cache-dir", str(cache), "--no-warm")
    assert (m2.path / "acme/model/bert-base/v1/pytorch_model.bin").read_bytes() == data
    r = run_cli(["status", str(m2.path), "--json"], mount_env)
    s2 = json.loads(r.stdout)
    assert s2["cache_hits"] == 1 and s2["cache_misses"] == 0 and s2["bytes_from_cache"] >= len(data)
    assert s2["cache_hit_ratio"] == 1.0
    every = run_cli(["status"], mount_env)
    assert str(m.path) in every.stdout and str(m2.path) in every.stdout
    # every mount on the machine is asked: only others' (other tests', other users') may fail
    assert every.returncode == 0 or str(tmp_path) not in every.stderr, every.stderr


def test_refresh_picks_up_an_alias_move_at_once(emu, mount, mount_env, tmp_path):
    publish_two_versions(tmp_path, "refreshed", b"zero\n", b"one\n")
    m = mount("--alias-ttl", "3600", "--list-ttl", "3600", "--negative-ttl", "3600")
    link = m.path / "acme/model/refreshed/production"
    assert os.path.basename(os.readlink(link)) == "v0"
    move_alias("acme/wandb-registry-model/refreshed:v1", "production")
    assert os.path.basename(os.readlink(link)) == "v0"                       # cached for an hour
    r = run_cli(["refresh", str(m.path), "acme/model/refreshed"], mount_env)
    assert r.returncode == 0, r.stderr
    assert os.path.basename(os.readlink(link)) == "v1" and (link / "w.txt").read_bytes() == b"one\n"
    assert "refresh acme/model/refreshed" in m.log
    r = run_cli(["refresh", str(m.path)], mount_env)       # everything
    assert r.returncode == 0 and "refreshed everything" in r.stdout
    # a version asked for before it existed is cached as missing by the kernel (an hour here):
    # refresh un-caches it too
    with pytest.raises(FileNotFoundError):
        os.stat(m.path / "acme/model/refreshed/v2")
    publish_with_sdk(tmp_path, "refreshed", {"w.txt": b"two\n"})
    wandb.teardown()
    with pytest.raises(FileNotFoundError):
        os.stat(m.path / "acme/model/refreshed/v2")        # still the kernel's cached miss
    assert run_cli(["refresh", str(m.path), "acme/model/refreshed"], mount_env).returncode == 0
    assert (m.path / "acme/model/refreshed/v2/w.txt").read_bytes() == b"two\n"


def test_lock_file_keeps_aliases_where_they_were(emu, mount, mount_env, tmp_path):
    publish_two_versions(tmp_path, "locked", b"zero\n", b"one\n", aliases=["production", "staging"])
    m = mount()
    coll = m.path / "acme/model/locked"
    r = run_cli(["lock", str(coll)], mount_env)
    assert r.returncode == 0, r.stderr
    lock = json.loads(r.stdout)
    assert lock["aliases"] == {"acme/wandb-registry-model/locked:latest": {"version": "v1"},
                               "acme/wandb-registry-model/locked:production": {"version": "v0"},
                               "acme/wandb-registry-model/locked:staging": {"version": "v0"}}
    lockfile = tmp_path / "wandbfs.lock"
    lockfile.write_text(run_cli(["lock", str(coll / "production")], mount_env).stdout)
    # W&B moves production to v1; a mount with the lock keeps it on v0, another follows W&B
    move_alias("acme/wandb-registry-model/locked:v1", "production")
    pinned = mount("--lock", str(lockfile), "--alias-ttl", "0.2")
    free = mount("--alias-ttl", "0.2")
    assert os.path.basename(os.readlink(pinned.path / "acme/model/locked/production")) == "v0"
    assert (pinned.path / "acme/model/locked/production/w.txt").read_bytes() == b"zero\n"
    wait_for(lambda: os.path.basename(os.readlink(free.path / "acme/model/locked/production")) == "v1", timeout=10,
             what="the unlocked mount to follow the move")
    assert os.path.basename(os.readlink(pinned.path / "acme/model/locked/staging")) == "v0"   # not in the lock: W&B's
    bad = tmp_path / "bad.lock"
    bad.write_text('{"wandbfs_lock": 1, "aliases": {"acme/wandb-registry-model/locked:v1": "v0"}}')
    r = run_cli(["mount", str(tmp_path / "x"), "--lock", str(bad)], mount_env)
    assert r.returncode != 0 and "lock pins aliases" in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def test_metrics_endpoint_counters_move_with_reads_and_json_logs(emu, mount, mount_env, tmp_path):
    port = _free_port()
    m = mount("--metrics-addr", f"127.0.0.1:{port}", "--log-format", "json", "--no-warm",
              "--cache-dir", str(tmp_path / "cache"))
    before = _scrape(port)
    data = (m.path / "acme/model/bert-base/v2/pytorch_model.bin").read_bytes()
    after = _scrape(port)
    assert after['wandbfs_read_bytes_total{source="wandb"}'] - before['wandbfs_read_bytes_total{source="wandb"}'] >= len(data)
    assert after["wandbfs_cache_misses_total"] == before["wandbfs_cache_misses_total"] + 1
    assert after["wandbfs_downloaded_bytes_total"] - before["wandbfs_downloaded_bytes_total"] == len(data)
    assert after['wandbfs_requests_total{kind="graphql"}'] > 0
    assert after["wandbfs_read_seconds_count"] > before.get("wandbfs_read_seconds_count", 0)
    wait_for(lambda: _scrape(port)["wandbfs_download_first_byte_seconds_count"] == 1, timeout=10,
             what="the download's time to first byte")
    assert any(k.startswith("wandbfs_wandb_call_seconds_count") for k in after)
    try:
        (m.path / "acme/model/bert-base/v2/nope").read_bytes()
    except FileNotFoundError:
        pass
    wait_for(lambda: _scrape(port).get("wandbfs_lineage_recorded_total", 0) >= 1, timeout=30,
             what="the lineage counter")
    lines = [json.loads(x) for x in m.log.splitlines() if x.strip()]
    assert any(x["message"].startswith("mounted at") for x in lines) and all("level" in x for x in lines)
