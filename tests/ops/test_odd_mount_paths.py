"""A mount point with spaces, a tab and non-ASCII letters: every command finds it (issue 12's bug).

The kernel writes such a path into the mount table with octal escapes and its other bytes as
they are; a reader that decodes it otherwise than the command decoded its own argument
(``unicode_escape``, code points for escapes, UTF-8 under a non-UTF-8 locale) says "is not
mounted" about a mount that is there, and lets a second ``mount`` on it fail with "not
empty". Each command runs twice: in the suite's UTF-8 environment and in a process whose
filesystem encoding is ASCII (``LC_ALL=C`` without UTF-8 mode), where the path's bytes reach
Python as surrogates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fs.conftest import Mounted, _mounted, run_cli
from tests.helpers import wait_for
from wandbfs.procfs import process_alive
from wandbfs.daemon.state import runtime_file

ODD = "mnt é ü\ttab"
CONFIG = "acme/model/resnet50/production/config.json"
LOCALES = {
    "utf8": {},
    "ascii": {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"},
}


def _env(base: dict[str, str], locale: str) -> dict[str, str]:
    return {**base, **LOCALES[locale]}


def _python(code: str, *args: str, locale: str) -> str:
    return subprocess.run([sys.executable, "-c", code, *args], env={**os.environ, **LOCALES[locale]},
                          capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def test_the_ascii_locale_really_has_an_ascii_filesystem_encoding():
    # else the "ascii" half of each test below proves nothing
    assert _python("import sys; print(sys.getfilesystemencoding())", locale="ascii") == "ascii"


def test_the_mount_id_is_the_same_under_either_encoding(tmp_path):
    """State files are named from the path's bytes, so every command finds the daemon's."""
    mp = str(tmp_path / ODD)
    code = "import sys; from wandbfs.daemon.state import mount_id; print(mount_id(sys.argv[1]))"
    ids = {loc: _python(code, mp, locale=loc) for loc in LOCALES}
    assert ids["utf8"] == ids["ascii"] and len(ids["utf8"]) == 16


@pytest.mark.timeout(240)
@pytest.mark.parametrize("locale", ["utf8", "ascii"])
def test_status_refusal_and_unmount_at_an_odd_path(locale, emu, mount, mount_env, tmp_path):
    mp = tmp_path / ODD
    m: Mounted = mount("--no-lineage", mountpoint=mp)
    pid = m.pid
    env = _env(mount_env, locale)
    assert (mp / CONFIG).read_bytes()

    r = run_cli(["status", str(mp), "--json"], env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pid"] == pid
    # every wandbfs mount on the machine (other tests' too): ours is among them, under its name
    r = run_cli(["status", "--json"], env, timeout=60)
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [os.fsencode(s["mountpoint"]) for s in rows if s["pid"] == pid] == [os.fsencode(mp)], r.stderr

    # a second mount there: refused as mounted, by the runtime file and by the mount table alone
    for state in (mount_env["WANDBFS_STATE_DIR"], str(tmp_path / "another-state-dir")):
        r = run_cli(["mount", str(mp), "--no-lineage"], {**env, "WANDBFS_STATE_DIR": state}, timeout=60)
        assert r.returncode == 1 and "already mounted" in r.stderr, r.stderr
        assert "not empty" not in r.stderr
    assert _mounted(mp) and process_alive(pid)

    r = run_cli(["unmount", str(mp)], env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not _mounted(mp)
    wait_for(lambda: not process_alive(pid), 30, what="the daemon to exit after the unmount")
    assert not runtime_file(mp, Path(mount_env["WANDBFS_STATE_DIR"])).exists()
    r = run_cli(["unmount", str(mp)], env, timeout=60)
    assert r.returncode == 1 and "is not mounted" in r.stderr


@pytest.mark.timeout(240)
def test_resolve_and_prefetch_find_the_odd_mount(emu, mount, mount_env, tmp_path):
    """(UTF-8 only: under an ASCII encoding the wandb SDK itself cannot sign in once a
    surrogate is in the process's arguments, which these commands' paths then are.)"""
    mp = tmp_path / ODD
    mount("--no-lineage", mountpoint=mp)
    env = mount_env
    r = run_cli(["resolve", str(mp / CONFIG)], env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("acme/wandb-registry-model/resnet50:v")
    r = run_cli(["prefetch", "-q", str(mp / "acme/model/resnet50/production")],
                {**env, "WANDB_CACHE_DIR": str(tmp_path / "prefetch-cache")}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "in the cache" in r.stdout
