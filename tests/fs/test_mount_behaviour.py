"""Sharing downloads, aliases that move, lineage, shutdown and CLI mistakes, on real mounts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import wandb

from tests.fs.conftest import _mounted, blob_gets, run_cli, wait_unmounted
from tests.helpers import move_alias, publish_two_versions, wait_for

BIG = "acme/model/resnet50/v3/model.safetensors"  # 64 MiB demo file


def test_eight_concurrent_readers_cause_one_download(emu, mount, fresh_cache):
    m = mount("--cache-dir", str(fresh_cache))
    path = m.path / BIG
    procs = [subprocess.Popen(["sha256sum", str(path)], stdout=subprocess.PIPE, text=True) for _ in range(8)]
    outs = {p.communicate(timeout=120)[0].split()[0] for p in procs}
    assert all(p.returncode == 0 for p in procs)
    art = wandb.Api().artifact("acme/wandb-registry-model/resnet50:v3")
    import base64
    import hashlib

    md5hex = base64.b64decode(art.manifest.entries["model.safetensors"].digest).hex()
    expected = hashlib.sha256(emu.store.blobs.get(md5hex)).hexdigest()
    assert outs == {expected}
    gets = [g for g in blob_gets(emu) if md5hex in g.path]
    wait_for(lambda: all(g.done for g in gets), timeout=10, what="the server to finish logging")
    # One download: every byte fetched exactly once (the first reads' ranges, a growing
    # read-ahead, then the rest in parallel ranged parts of at most 8 MiB).
    assert sum(g.bytes_out for g in gets) == 64 * 1024 * 1024 and 64 // 8 <= len(gets) <= 64 // 8 + 8


def test_second_mount_on_the_same_cache_fetches_nothing(emu, mount, fresh_cache):
    first = mount("--cache-dir", str(fresh_cache))
    tree = first.path / "acme/model/bert-base/v1"
    contents = {p.name: p.read_bytes() for p in tree.iterdir()}
    assert blob_gets(emu)
    assert first.unmount().returncode == 0
    emu.log.clear()
    second = mount("--cache-dir", str(fresh_cache))
    assert {p.name: p.read_bytes() for p in (second.path / "acme/model/bert-base/v1").iterdir()} == contents
    assert blob_gets(emu) == []


def test_sdk_download_and_mount_share_one_cache(emu, mount, fresh_cache, tmp_path):
    wandb.Api().artifact("acme/wandb-registry-dataset/squad:v0").download(str(tmp_path / "dl"))
    emu.log.clear()
    m = mount()  # the default cache dir is the SDK's ($WANDB_CACHE_DIR)
    assert m.env["WANDB_CACHE_DIR"] != str(fresh_cache)
    m2 = mount("--cache-dir", str(fresh_cache), "--no-lineage")
    got = (m2.path / "acme/dataset/squad/v0/train.jsonl").read_bytes()
    assert got == (tmp_path / "dl/train.jsonl").read_bytes()
    assert blob_gets(emu) == []


def test_alias_move_is_picked_up_while_an_open_file_keeps_its_version(emu, mount, tmp_path):
    publish_two_versions(tmp_path, "mover", b"version zero\n", b"version one!\n")
    m = mount("--alias-ttl", "1", "--list-ttl", "1")
    prod = m.path / "acme/model/mover/production"
    assert os.path.basename(os.readlink(prod)) == "v0"
    with open(prod / "w.txt", "rb") as held:
        assert held.read(7) == b"version"
        move_alias("acme/wandb-registry-model/mover:v1", "production")
        wait_for(lambda: os.path.basename(os.readlink(prod)) == "v1", timeout=15, what="the alias symlink to move to v1")
        assert held.read() == b" zero\n"
    assert (prod / "w.txt").read_bytes() == b"version one!\n"
    listing = subprocess.run(["ls", "-l", str(m.path / "acme/model/mover")], capture_output=True, text=True).stdout
    assert f"production -> {prod.parent}/v1" in listing


def test_lineage_records_each_version_once_on_the_mount_run(emu, mount):
    m = mount("--project", "lineage-test", "--job-type", "eval")
    coll = m.path / "acme/model/bert-base"
    for _ in range(3):
        (coll / "production/config.json").read_bytes()   # v0 via alias
        (coll / "v1/config.json").read_bytes()           # v1 by index
        (coll / "production/pytorch_model.bin").read_bytes()
    assert m.unmount().returncode == 0
    runs = [r for r in emu.store.runs.values() if r.project == "lineage-test"]
    assert len(runs) == 1 and runs[0].job_type == "eval" and runs[0].state == "finished"
    run_path = f"{runs[0].entity}/lineage-test/{runs[0].name}"
    used = wandb.Api().run(run_path).used_artifacts()
    assert sorted(a.id for a in used) == sorted({
        wandb.Api().artifact(f"acme/wandb-registry-model/bert-base:{v}").id for v in ("v0", "v1")})
    uses = [u for u in emu.uses() if u["run"] == run_path]
    assert len(uses) == 2
    assert {u["used_as"] for u in uses} == {"acme/wandb-registry-model/bert-base:production",
                                            "acme/wandb-registry-model/bert-base:v1"}


def test_no_lineage_flag_and_existing_run(emu, mount):
    runs_before = set(emu.store.runs)   # the session's emulator: other tests' runs stay in it
    m = mount("--no-lineage")
    (m.path / "acme/dataset/squad/v1/dev.jsonl").read_bytes()
    assert m.unmount().returncode == 0
    assert not [r for k, r in emu.store.runs.items() if k not in runs_before and r.project == "wandbfs"]
    emu.store.upsert_run("alice", "existing-proj", "myrun123")
    before = len(emu.uses())
    m2 = mount("--project", "existing-proj", "--run-id", "myrun123")
    (m2.path / "acme/dataset/squad/v1/dev.jsonl").read_bytes()
    wait_for(lambda: len(emu.uses()) > before, timeout=20, what="the use on the existing run")
    assert emu.uses()[-1]["run"] == "alice/existing-proj/myrun123"


def test_sigterm_unmounts_cleanly(emu, mount):
    m = mount()
    (m.path / "acme/dataset/squad/v0/dev.jsonl").read_bytes()
    pid = m.pid
    os.kill(pid, signal.SIGTERM)
    wait_unmounted(m.path)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z",
             timeout=30, what="the daemon to exit")
    assert not _mounted(m.path)


def test_revoked_key_gives_eacces_then_recovers(emu, mount, mount_env):
    m = mount("--list-ttl", "0.2", "--alias-ttl", "0.2", "--negative-ttl", "0.2")
    key = mount_env["WANDB_API_KEY"]
    emu.store.revoked.add(key)
    try:
        def refused() -> bool:
            try:
                os.listdir(m.path / "acme/model/resnet50")
            except PermissionError:
                return True
            return False
        wait_for(refused, timeout=15, what="EACCES from a refused key")
    finally:
        emu.store.revoked.discard(key)
    wait_for(lambda: "v0" in os.listdir(m.path / "acme/model/resnet50"), timeout=15, what="recovery")


@pytest.mark.parametrize("case", ["missing", "not-empty", "already-mounted", "no-key", "unreachable", "bad-org"])
def test_cli_mistakes_get_one_clear_line(case, emu, mount, mount_env, tmp_path):
    env = dict(mount_env)
    mp = tmp_path / "mp"
    mp.mkdir()
    args: list[str] = []
    if case == "missing":
        mp = tmp_path / "does-not-exist"
    elif case == "not-empty":
        (mp / "file").write_text("x")
    elif case == "already-mounted":
        mount(mountpoint=mp)
    elif case == "no-key":
        env.pop("WANDB_API_KEY")
    elif case == "unreachable":
        env["WANDB_BASE_URL"] = "http://127.0.0.1:9"
    elif case == "bad-org":
        args = ["--org", "no-such-org"]
    r = run_cli(["mount", str(mp), *args], env, timeout=120)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("wandbfs: "), r.stderr
    expect = {"missing": "does not exist", "not-empty": "not empty", "already-mounted": "already mounted",
              "no-key": "API key", "unreachable": "cannot reach", "bad-org": "unknown organization"}[case]
    assert expect in lines[0]
    if case != "already-mounted":
        assert not _mounted(mp)


def test_unmount_of_something_not_mounted_fails_clearly(mount_env, tmp_path):
    r = run_cli(["unmount", str(tmp_path)], mount_env)
    assert r.returncode == 1 and "not mounted" in r.stderr


def test_foreground_mount_logs_to_stderr_and_stops_on_sigterm(emu, mount_env, tmp_path):
    mp = tmp_path / "fg"
    mp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "wandbfs.cli", "mount", "--foreground", "--no-lineage", str(mp)],
                            env=mount_env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _mounted(mp), timeout=60, what="the foreground mount")
        assert (mp / "acme/dataset/squad/v2/dev.jsonl").read_bytes()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not _mounted(mp)
        assert "mounted at" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        if _mounted(mp):
            subprocess.run(["fusermount3", "-u", "-z", str(mp)])
