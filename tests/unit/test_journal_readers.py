"""The lineage journal (durable, compacted, torn lines survived) and reader identification."""

from __future__ import annotations

import os
import subprocess
import sys

from wandbfs.lineage.journal import MOUNT_RUN, JournalEntry, LineageJournal, read_journal, use_key
from wandbfs.lineage.readers import ReaderInfo, parse_environ, run_from_environ


def _entry(run: str, art: str, t: float = 1.0) -> JournalEntry:
    return JournalEntry(use_key(run, art), run, art, f"o/wandb-registry-r/c:{art}", "o/wandb-registry-r/c:prod", t)


def test_journal_keeps_pending_and_done_across_reopen_and_compacts(tmp_path):
    j = LineageJournal(tmp_path / "state" / "lineage-x.jsonl")
    a, b = _entry("e/p/r1", "v1"), _entry(MOUNT_RUN, "v2")
    j.add(a)
    j.add(b)
    j.done(a.key)
    j.add(a)  # noted again by a later daemon before it knew: still done
    got = read_journal(j.path)
    assert got[a.key].done is not None and got[b.key].pending
    with open(j.path, "ab") as f:
        f.write(b'{"op": "use", "key": "torn')   # a crash mid-append
    again = LineageJournal(j.path).load()
    assert set(again) == {a.key, b.key} and again[b.key].pending and not again[a.key].pending
    assert len(j.path.read_text().splitlines()) == 3   # compacted: use+done for a, use for b
    assert oct(os.stat(j.path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(j.path.parent).st_mode & 0o777) == "0o700"


def test_run_from_environ():
    assert run_from_environ({"WANDB_RUN_ID": "abc", "WANDB_PROJECT": "p", "WANDB_ENTITY": "e"}) == "e/p/abc"
    assert run_from_environ({"WANDB_RUN_ID": "abc"}) == "-/uncategorized/abc"
    assert run_from_environ({"WANDB_PROJECT": "p"}) is None
    assert run_from_environ({"WANDB_RUN_ID": "a/b"}) is None
    assert parse_environ(b"A=1\0B=x=y\0junk\0\0") == {"A": "1", "B": "x=y"}


def test_reader_info_reads_a_live_process_environment():
    env = dict(os.environ, WANDB_RUN_ID="r-123", WANDB_PROJECT="proj", WANDB_ENTITY="ent")
    p = subprocess.Popen([sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        # Until it has exec'd, the child's /proc/<pid>/environ is still ours (a race, seen in CI).
        assert p.stdout is not None and p.stdout.readline() == b"up\n"
        info = ReaderInfo()
        r = info.get(p.pid, os.getuid())
        assert r.run == "ent/proj/r-123" and r.comm.startswith("python") and r.pid == p.pid
        assert ReaderInfo(runs=False).get(p.pid, os.getuid()).run is None
    finally:
        p.communicate(b"")
    gone = ReaderInfo().get(p.pid, os.getuid())    # exited: no environment to read
    assert gone.run is None
