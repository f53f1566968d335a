"""Lineage on real mounts: the reading process's run, the mount's run, the durable journal
(outages, a killed daemon), `wandbfs lineage`, and the access log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.fs.conftest import run_cli
from tests.helpers import wait_for

VERSION = "acme/model/bert-base/production"
NAME = "acme/wandb-registry-model/bert-base"

READER = """
import os, sys, wandb
run = wandb.init(settings=wandb.Settings(console="off", silent=True))   # takes WANDB_RUN_ID from the env
assert run.id == os.environ["WANDB_RUN_ID"]
data = open(sys.argv[1], "rb").read()
print(len(data))
run.finish()
"""


def _uses_on(emu, run_path: str) -> list[dict]:
    return [u for u in emu.uses() if u["run"] == run_path]


def _artifact_id(emu_store, collection: str, index: int) -> str:
    coll = next(c for c in emu_store.collections.values() if c.name == collection and c.kind == "portfolio")
    return next(m.artifact_id for m in emu_store.memberships_of(coll.id) if m.version_index == index)


def test_each_reader_gets_the_use_on_its_own_run_and_others_on_the_mount_run(emu, mount, mount_env, tmp_path):
    m = mount("--project", "mount-runs", "--access-log", str(tmp_path / "access.jsonl"))
    f = m.path / VERSION / "config.json"
    runs = {}
    for rid, project in [("reader-a", "train-a"), ("reader-b", "eval-b")]:
        env = dict(mount_env, WANDB_RUN_ID=rid, WANDB_PROJECT=project, WANDB_ENTITY="alice")
        r = subprocess.run([sys.executable, "-c", READER, str(f)], env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[rid] = f"alice/{project}/{rid}"
    plain = subprocess.run(["cat", str(f)], capture_output=True, check=True).stdout  # no run of its own
    assert plain == f.read_bytes()
    v0 = _artifact_id(emu.store, "bert-base", 0)
    for path in runs.values():
        wait_for(lambda: _uses_on(emu, path), timeout=30, what=f"the use on {path}")
        uses = _uses_on(emu, path)
        assert [(u["artifact_id"], u["used_as"]) for u in uses] == [(v0, f"{NAME}:production")]
    assert m.unmount().returncode == 0
    mount_runs = [r for r in emu.store.runs.values() if r.project == "mount-runs"]
    assert len(mount_runs) == 1
    mount_path = f"{mount_runs[0].entity}/mount-runs/{mount_runs[0].name}"
    assert [u["artifact_id"] for u in _uses_on(emu, mount_path)] == [v0]   # cat's use, once
    # the access log has every open, with who and what
    lines = [json.loads(x) for x in (tmp_path / "access.jsonl").read_text().splitlines()]
    cats = [x for x in lines if x["process"] == "cat"]
    assert cats and cats[0]["path"] == "acme/model/bert-base/production/config.json"
    assert cats[0]["name"] == f"{NAME}:v0" and cats[0]["used_as"] == f"{NAME}:production"
    assert cats[0]["uid"] == os.getuid() and cats[0]["run"] == "mount"
    assert {x["run"] for x in lines if x["process"] != "cat"} >= set(runs.values())
    assert all(x["artifact_id"] == v0 and x["pid"] > 0 for x in lines)


def _prepare_offline_version(env, m) -> None:
    """bert-base v2: bytes in the cache and manifest known, but never opened (no use yet)."""
    r = run_cli(["prefetch", f"{NAME}:v2", "-q"], env)
    assert r.returncode == 0, r.stderr
    assert "config.json" in os.listdir(m.path / "acme/model/bert-base/v2")


def _mount_run(emu, project: str) -> str:
    run = wait_for(lambda: next((r for r in emu.store.runs.values() if r.project == project), None),
                   timeout=30, what="the mount's run")
    return f"{run.entity}/{project}/{run.name}"


def _use_during_outage(outage, env, mount, project: str):
    """A mount whose run exists; W&B goes down; bert-base v2 (cached) is opened: one pending use."""
    m = mount("--project", project, env=env)
    run_path = _mount_run(outage.emu, project)
    _prepare_offline_version(env, m)
    v2 = _artifact_id(outage.emu.store, "bert-base", 2)
    outage.down()
    assert (m.path / "acme/model/bert-base/v2/config.json").read_bytes()   # served from the cache
    pend = wait_for(lambda: _pending(env, m.path), timeout=30, what="the journal to list the use")
    assert [(p["version"], p["run"]) for p in pend] == [(f"{NAME}:v2", run_path)]
    return m, run_path, v2


def test_uses_during_an_outage_are_journaled_then_recorded_once(outage, outage_env, mount):
    m, run_path, v2 = _use_during_outage(outage, outage_env, mount, "outage-lineage")
    emu = outage.up()
    wait_for(lambda: not _pending(outage_env, m.path), timeout=90, what="the pending use to be recorded")
    assert _counts(emu, run_path) == {v2: 1}
    recorded = [json.loads(x) for x in run_cli(["lineage", str(m.path), "--json"], outage_env).stdout.splitlines()]
    assert [(r["state"], r["version"]) for r in recorded] == [("recorded", f"{NAME}:v2")]


def test_a_killed_daemon_loses_no_pending_use_and_none_is_sent_twice(outage, outage_env, mount):
    m, run_path, v2 = _use_during_outage(outage, outage_env, mount, "restart-lineage")
    pid = m.pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(pid), timeout=30, what="the daemon to die")
    emu = outage.up()
    assert _counts(emu, run_path) == {}
    again = mount("--project", "restart-lineage", env=outage_env, mountpoint=m.path)   # clears the dead mount
    wait_for(lambda: _counts(emu, run_path) == {v2: 1}, timeout=90,
             what="the use journaled by the killed daemon to be recorded on its run")
    wait_for(lambda: not _pending(outage_env, m.path), timeout=30, what="the journal to mark it recorded")
    assert "pending from before" in again.log
    # a third daemon finds nothing pending and sends nothing again
    seen = len(again.log)   # the log file is per mount point: look at the third daemon's part only
    assert again.unmount().returncode == 0
    third = mount("--project", "restart-lineage", env=outage_env, mountpoint=m.path)
    assert (third.path / "acme/model/bert-base/v0").is_dir()
    assert "mounted at" in third.log[seen:] and "pending from before" not in third.log[seen:]
    assert _counts(emu, run_path) == {v2: 1}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def _pending(env, mp: Path) -> list[dict]:
    r = run_cli(["lineage", str(mp), "--pending", "--json"], env)
    assert r.returncode == 0, r.stderr
    return [json.loads(x) for x in r.stdout.splitlines()]


def _counts(emu, run_path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for u in _uses_on(emu, run_path):
        out[u["artifact_id"]] = out.get(u["artifact_id"], 0) + 1
    return out


def test_a_run_that_never_appears_gets_the_use_on_the_mount_run(emu, mount, mount_env):
    m = mount("--project", "fallback-runs", "--missing-run-grace", "1")
    env = dict(mount_env, WANDB_RUN_ID="never-started", WANDB_PROJECT="ghost", WANDB_ENTITY="alice")
    f = m.path / "acme/model/bert-base/v1/config.json"
    subprocess.run(["cat", str(f)], env=env, capture_output=True, check=True)
    mount_run = _mount_run(emu, "fallback-runs")
    v1 = _artifact_id(emu.store, "bert-base", 1)
    wait_for(lambda: _counts(emu, mount_run) == {v1: 1}, timeout=60, what="the use to fall back to the mount's run")
    assert not _uses_on(emu, "alice/ghost/never-started")
    assert "run alice/ghost/never-started not found; recording" in m.log
