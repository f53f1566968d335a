"""Runs as the public API reads them: wandb.init/log/summary/save/finish through the real SDK,
then ``Api().runs`` (filters, order, paging, len), ``run.summary``, ``run.history()``,
``run.files()`` + download and ``api.projects(entity)``."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import wandb

from tests.conftest import API_KEY

PROJECT = "runs-suite"
PATH = f"alice/{PROJECT}"
EXTRA = b"bytes the run saved\n" * 50


def _make_run(tmp: Path, display: str, lr: float, tags: list[str], acc: float, exit_code: int = 0,
              save: bool = False) -> str:
    run = wandb.init(entity="alice", project=PROJECT, name=display, config={"lr": lr, "opt": {"name": "adam"}},
                     tags=tags, job_type="train")
    for i in range(3):
        run.log({"loss": 1.0 / (i + 1), "epoch": i})
    run.summary["acc"] = acc
    if save:
        f = Path(run.dir) / "extra.txt"
        f.write_bytes(EXTRA)
        run.save(str(f), base_path=run.dir, policy="now")
    run.finish(exit_code=exit_code)
    return run.id


@pytest.fixture(scope="module")
def runs(emulator, tmp_path_factory) -> dict[str, str]:
    """Three runs of alice/runs-suite, created in this order: display name -> run id."""
    tmp = tmp_path_factory.mktemp("runs")
    made = {"alpha": _make_run(tmp, "alpha", 0.1, ["a", "shared"], 0.9, save=True),
            "beta": _make_run(tmp, "beta", 0.01, ["b", "shared"], 0.5),
            "gamma": _make_run(tmp, "gamma", 0.1, ["c"], 0.7, exit_code=1)}
    wandb.teardown()
    return made


def _names(found) -> list[str]:
    return [r.name for r in found]


@pytest.mark.timeout(300)
def test_all_runs_page_by_page_with_len(emu, runs):
    found = wandb.Api().runs(PATH, per_page=2)
    assert len(found) == 3
    assert _names(found) == ["alpha", "beta", "gamma"]  # +created_at, the SDK's default
    pages = [e for e in emu.log.entries("graphql") if e.operation == "Runs"]
    assert len(pages) == 2 and pages[1].variables["cursor"]
    assert {r.id for r in found} == set(runs.values())


@pytest.mark.timeout(300)
@pytest.mark.parametrize("order,expected", [
    ("+created_at", ["alpha", "beta", "gamma"]),
    ("-created_at", ["gamma", "beta", "alpha"]),
    ("+summary_metrics.acc", ["beta", "gamma", "alpha"]),
    ("-summary_metrics.acc", ["alpha", "gamma", "beta"]),
    ("+config.lr.value", ["beta", "alpha", "gamma"]),
])
def test_order(emu, runs, order, expected):
    assert _names(wandb.Api().runs(PATH, order=order, per_page=1)) == expected


@pytest.mark.timeout(300)
@pytest.mark.parametrize("filters,expected", [
    ({"state": "finished"}, {"alpha", "beta"}),
    ({"state": "failed"}, {"gamma"}),
    ({"config.lr": 0.1}, {"alpha", "gamma"}),
    ({"config.lr.value": 0.01}, {"beta"}),
    ({"config.opt.name": "adam"}, {"alpha", "beta", "gamma"}),
    ({"tags": {"$in": ["a", "b"]}}, {"alpha", "beta"}),
    ({"tags": "shared"}, {"alpha", "beta"}),
    ({"display_name": "beta"}, {"beta"}),
    ({"displayName": {"$regex": "^g"}}, {"gamma"}),
    ({"summary_metrics.acc": {"$gte": 0.7}}, {"alpha", "gamma"}),
    ({"$and": [{"config.lr": 0.1}, {"state": "finished"}]}, {"alpha"}),
    ({"$or": [{"display_name": "alpha"}, {"state": "failed"}]}, {"alpha", "gamma"}),
    ({"jobType": "train", "state": "crashed"}, set()),
])
def test_filters_and_their_count(emu, runs, filters, expected):
    found = wandb.Api().runs(PATH, filters=filters)
    assert set(_names(found)) == expected
    assert len(found) == len(expected)  # runCount honours the same filters


@pytest.mark.timeout(300)
def test_an_unknown_operator_is_an_error_not_a_match(emu, runs):
    with pytest.raises(Exception, match="bogus"):
        list(wandb.Api().runs(PATH, filters={"state": {"$bogus": 1}}))


@pytest.mark.timeout(300)
def test_summary_is_what_the_run_streamed(emu, runs):
    run = wandb.Api().run(f"{PATH}/{runs['alpha']}")
    assert run.summary["acc"] == 0.9
    assert run.summary["loss"] == pytest.approx(1 / 3)  # the last logged value
    assert run.summary["_step"] == 2
    assert run.state == "finished"
    assert run.config == {"lr": 0.1, "opt": {"name": "adam"}}
    assert isinstance(run._attrs["projectId"], str)  # the schema says ID
    assert run._project_internal_id == emu.store.project("alice", PROJECT).num
    # A listing carries summaries too: lazily (loaded on first use) and in full.
    assert [r.summary["acc"] for r in wandb.Api().runs(PATH)] == [0.9, 0.5, 0.7]
    assert [r.summary_metrics["acc"] for r in wandb.Api().runs(PATH, lazy=False)] == [0.9, 0.5, 0.7]


@pytest.mark.timeout(300)
def test_summary_written_through_the_public_api_is_kept(emu, runs):
    api = wandb.Api()
    run = api.run(f"{PATH}/{runs['beta']}")
    run.summary["note"] = "checked"
    run.summary.update()
    assert wandb.Api().run(f"{PATH}/{runs['beta']}").summary["note"] == "checked"


@pytest.mark.timeout(300)
def test_history_rows(emu, runs):
    run = wandb.Api().run(f"{PATH}/{runs['alpha']}")
    rows = run.history(pandas=False)
    assert [r["_step"] for r in rows] == [0, 1, 2]
    assert [r["loss"] for r in rows] == pytest.approx([1.0, 0.5, 1 / 3])
    assert run.historyLineCount == 3 and run.lastHistoryStep == 2
    keyed = run.history(keys=["loss"], pandas=False)
    assert [sorted(r) for r in keyed] == [["_step", "loss"]] * 3
    assert [r["_step"] for r in run.history(samples=2, pandas=False)] == [0, 2]
    assert run.history(keys=["no-such-key"], pandas=False) == []


@pytest.mark.timeout(300)
def test_history_default_form(emu, runs):
    """``run.history()`` is a DataFrame with pandas, and the same rows as dicts without it."""
    run = wandb.Api().run(f"{PATH}/{runs['beta']}")
    got = run.history()
    try:
        import pandas
    except ImportError:
        assert [r["epoch"] for r in got] == [0, 1, 2]
    else:
        assert isinstance(got, pandas.DataFrame) and list(got["epoch"]) == [0, 1, 2]


@pytest.mark.timeout(300)
def test_scan_history(emu, runs):
    run = wandb.Api().run(f"{PATH}/{runs['gamma']}")
    assert [r["epoch"] for r in run.scan_history()] == [0, 1, 2]
    rows = list(run.scan_history(keys=["loss"], use_cache=False))
    assert [sorted(r) for r in rows] == [["_step", "loss"]] * 3
    assert [r["_step"] for r in run.scan_history(min_step=1)] == [1, 2]


@pytest.mark.timeout(300)
def test_files_list_and_download(emu, runs, tmp_path):
    run = wandb.Api().run(f"{PATH}/{runs['alpha']}")
    files = {f.name: f for f in run.files()}
    assert {"extra.txt", "config.yaml", "wandb-summary.json"} <= set(files)
    extra = files["extra.txt"]
    assert extra.size == len(EXTRA)
    assert extra.md5 == base64.b64encode(hashlib.md5(EXTRA).digest()).decode()
    assert extra.mimetype == "text/plain" and extra.updated_at
    extra.download(root=str(tmp_path))
    assert (tmp_path / "extra.txt").read_bytes() == EXTRA
    assert [f.name for f in run.files(pattern="%.txt")] == ["extra.txt"]
    assert json.loads(Path(run.file("wandb-summary.json").download(root=str(tmp_path / "s")).name).read_text())["acc"] == 0.9


@pytest.mark.timeout(300)
def test_projects_of_an_entity(emu, runs):
    found = wandb.Api().projects("alice", per_page=1)
    names = [p.name for p in found]
    assert PROJECT in names
    want = sorted(p.name for p in emu.store.projects.values() if p.entity == "alice")
    assert sorted(names) == want and len(names) == len(set(names))
    assert len([e for e in emu.log.entries("graphql") if e.operation == "GetProjects"]) == len(want)


def _stream(emu, path: str, body: dict) -> int:
    """One file_stream POST, as wandb-core sends it (Basic auth with the API key)."""
    auth = base64.b64encode(f"api:{API_KEY}".encode()).decode()
    req = urllib.request.Request(f"{emu.url}/files/{path}/file_stream", data=json.dumps(body).encode(),
                                 method="POST", headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


@pytest.mark.timeout(300)
def test_file_stream_offsets_rewrite_lines_and_bad_bodies_change_nothing(emu, runs):
    """A retried chunk lands on the same lines (no duplicate rows); a malformed one is dropped."""
    wandb.init(entity="alice", project=PROJECT + "-stream", name="streamed").finish()
    rid = next(r.name for r in emu.store.runs.values() if r.project == PROJECT + "-stream")
    path = f"alice/{PROJECT}-stream/{rid}"
    rows = ['{"_step": 0, "x": 1}', '{"_step": 1, "x": 2}']

    def post(body: dict) -> None:
        assert _stream(emu, path, body) == 200

    post({"files": {"wandb-history.jsonl": {"offset": 0, "content": rows}}})
    post({"files": {"wandb-history.jsonl": {"offset": 1, "content": rows[1:]}}})   # a retry
    post({"files": {"wandb-history.jsonl": {"offset": 2, "content": ['{"_step": 2, "x": 3}']},
                    "wandb-summary.json": {"offset": 0, "content": ['{"x": 3}']}}})
    post({"files": {"wandb-history.jsonl": {"offset": 3, "content": ['{"_step": 3}']},
                    "wandb-summary.json": {"offset": 0, "content": ["not json"]}}})
    run = wandb.Api().run(path)
    assert [r["x"] for r in run.history(pandas=False)] == [1, 2, 3]
    assert run.summary["x"] == 3
    wandb.teardown()


def test_file_stream_needs_a_key(emu):
    req = urllib.request.Request(f"{emu.url}/files/{PATH}/nope/file_stream", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401
