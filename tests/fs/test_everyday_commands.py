"""Everyday commands on a real mount: ``df`` shows the cache's disk, ``wandbfs status`` the
caller's own mounts (the alias-copy table is tested in test_project_artifacts.py)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.fs.conftest import run_cli


def test_df_and_disk_usage_show_the_cache_disk(mount, tmp_path):
    cache = tmp_path / "df-cache"
    m = mount("--cache-dir", str(cache))
    mine, disk = shutil.disk_usage(m.path), shutil.disk_usage(tmp_path)   # the cache dir is made later
    assert mine.total > 0 and abs(mine.total - disk.total) <= disk.total * 0.02
    assert abs(mine.free - disk.free) <= max(disk.total * 0.02, 64 << 20)
    df = subprocess.run(["df", "-P", str(m.path)], capture_output=True, text=True, timeout=30, check=True).stdout
    blocks = int(df.splitlines()[1].split()[1])
    assert blocks * 1024 == pytest.approx(disk.total, rel=0.02)


def test_status_shows_your_own_mounts(mount):
    m = mount()
    r = run_cli(["status"], m.env)
    assert r.returncode == 0, r.stderr
    assert str(m.path) in r.stdout
    r = run_cli(["status", "--all", "--json"], m.env)
    assert r.returncode == 0, r.stderr
    assert str(m.path) in [json.loads(x)["mountpoint"] for x in r.stdout.splitlines()]


def test_sqlite_in_wal_mode_reads_with_immutable(emu, mount, tmp_path):
    """A WAL-mode database in an artifact: ``?immutable=1`` reads it; a plain open cannot
    make its -wal/-shm files on the read-only mount (what the README says)."""
    import sqlite3

    from tests.helpers import publish_with_sdk

    db = tmp_path / "feats.db"
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    con.execute("CREATE TABLE t (k INTEGER, v TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"row{i}") for i in range(100)])
    con.commit()
    con.close()
    publish_with_sdk(tmp_path, "sqlite-wal", {"feats.db": db.read_bytes()}, registry="dataset", type_name="dataset")
    m = mount()
    path = m.path / "acme/dataset/sqlite-wal/v0/feats.db"
    ro = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    assert ro.execute("SELECT count(*), max(v) FROM t").fetchone() == (100, "row99")
    ro.close()
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(path).execute("SELECT count(*) FROM t").fetchone()


def test_realpath_of_an_alias_pins_a_job_to_its_version(emu, mount, tmp_path):
    import os

    from tests.helpers import move_alias, publish_two_versions

    publish_two_versions(tmp_path, "pinned-job", b"zero\n", b"one\n")
    m = mount("--alias-ttl", "1")
    pinned = os.path.realpath(m.path / "acme/model/pinned-job/production")
    assert pinned.endswith("/pinned-job/v0")
    move_alias("acme/wandb-registry-model/pinned-job:v1", "production")
    from tests.helpers import wait_for

    wait_for(lambda: os.path.realpath(m.path / "acme/model/pinned-job/production").endswith("/v1"), timeout=15,
             what="the alias to move")
    with open(os.path.join(pinned, "w.txt"), "rb") as f:     # the job's path still names v0
        assert f.read() == b"zero\n"
