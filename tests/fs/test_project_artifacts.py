"""Project artifacts (logged by runs, never linked into a registry) on a real mount: opened by
the name pasted from the W&B UI, browsed under ``@<entity>``, recorded as the run's input;
the registries beside them unchanged. Published and checked with the real SDK."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.fs.conftest import run_cli
from tests.helpers import tree_digest, wait_for, write_tree

ENTITY, PROJECT, NAME = "alice", "resnet-training", "checkpoint"
FILES_V0 = {"model.pt": os.urandom(300_000), "cfg/params.json": b'{"lr": 0.1}'}
FILES_V1 = {"model.pt": os.urandom(200_000), "cfg/params.json": b'{"lr": 0.01}'}


def _log_artifact(tmp: Path, name: str, files: dict[str, bytes], aliases: list[str], type_name: str) -> None:
    """wandb.init -> run.log_artifact (no link) -> finish, like a training run."""
    import wandb

    src = write_tree(tmp / f"src-{name}-{time.monotonic_ns()}", files)
    run = wandb.init(entity=ENTITY, project=PROJECT, job_type="train")
    art = wandb.Artifact(name, type=type_name)
    art.add_dir(str(src))
    run.log_artifact(art, aliases=aliases)
    run.finish()


@pytest.fixture(scope="module")
def project_artifacts(emulator, tmp_path_factory):
    """checkpoint v0 (alias ``best``) and v1 (``latest``), and a dataset in the same project."""
    import wandb

    tmp = tmp_path_factory.mktemp("proj")
    _log_artifact(tmp, NAME, FILES_V0, ["best"], "model")
    _log_artifact(tmp, NAME, FILES_V1, [], "model")
    _log_artifact(tmp, "eval-set", {"rows.csv": b"a,b\n1,2\n"}, [], "dataset")
    wandb.teardown()
    downloads = {}
    for token in ("v0", "latest", "best"):
        art = wandb.Api().artifact(f"{ENTITY}/{PROJECT}/{NAME}:{token}")
        downloads[token] = tree_digest(Path(art.download(root=str(tmp / f"dl-{token}"))))
    return downloads


def test_a_pasted_project_artifact_name_opens_like_download(project_artifacts, mount):
    m = mount()
    for token in ("v0", "latest", "best"):
        version = m.path / ENTITY / PROJECT / f"{NAME}:{token}"
        assert tree_digest(version) == project_artifacts[token], token
    assert project_artifacts["best"] == project_artifacts["v0"] != project_artifacts["latest"]
    # the pasted spelling is a link to the one folder the mount lists for it
    assert os.path.realpath(m.path / ENTITY / PROJECT / f"{NAME}:best") == \
        str(m.path / f"@{ENTITY}" / PROJECT / "model" / NAME / "v0")
    assert os.path.realpath(m.path / ENTITY) == str(m.path / f"@{ENTITY}")
    with pytest.raises(FileNotFoundError):
        os.stat(m.path / ENTITY / PROJECT / f"{NAME}:v9")
    with pytest.raises(FileNotFoundError):
        os.stat(m.path / ENTITY / "no-such-project" / f"{NAME}:v0")
    with pytest.raises(FileNotFoundError):
        os.stat(m.path / "no-such-entity-xyz" / PROJECT / f"{NAME}:v0")


def test_browsing_an_entitys_projects_by_type_beside_the_orgs(project_artifacts, mount):
    m = mount()
    root = os.listdir(m.path)
    assert "acme" in root and f"@{ENTITY}" in root
    home = m.path / f"@{ENTITY}"
    projects = os.listdir(home)
    assert PROJECT in projects and not any(p.startswith("wandb-registry-") for p in projects)
    assert sorted(os.listdir(home / PROJECT)) == ["dataset", "model"]
    assert NAME in os.listdir(home / PROJECT / "model")
    assert "eval-set" in os.listdir(home / PROJECT / "dataset")
    assert NAME not in os.listdir(home / PROJECT / "dataset")
    coll = home / PROJECT / "model" / NAME
    assert {"v0", "v1", "best", "latest"} <= set(os.listdir(coll))
    assert os.readlink(coll / "best") == str(coll / "v0")       # absolute: a copied link still works
    assert os.readlink(coll / "latest") == str(coll / "v1")
    assert tree_digest(coll / "v1") == project_artifacts["latest"]
    with pytest.raises(FileNotFoundError):
        os.stat(home / PROJECT / "dataset" / NAME)           # a collection is only under its own type
    # the registries are where they were
    assert "model" in os.listdir(m.path / "acme")
    assert (m.path / "acme/model/bert-base/production/config.json").read_bytes()


def test_a_project_artifacts_use_is_recorded_with_its_name(project_artifacts, emu, mount):
    import wandb

    m = mount("--project", "proj-reads")
    data = (m.path / ENTITY / PROJECT / f"{NAME}:best" / "model.pt").read_bytes()
    assert data == FILES_V0["model.pt"]
    art = wandb.Api().artifact(f"{ENTITY}/{PROJECT}/{NAME}:v0")
    uses = wait_for(lambda: [u for u in emu.uses() if u["artifact_id"] == art.id and "/proj-reads/" in u["run"]],
                    timeout=30, what="the use of the project artifact")
    assert [u["used_as"] for u in uses] == [f"{ENTITY}/{PROJECT}/{NAME}:best"]
    assert "proj-reads" in [r.project for r in art.used_by()]


def test_resolve_and_prefetch_take_project_artifact_names(project_artifacts, mount):
    m = mount()
    r = run_cli(["resolve", f"{ENTITY}/{PROJECT}/{NAME}:best"], m.env)
    assert r.returncode == 0, r.stderr
    assert f"{ENTITY}/{PROJECT}/{NAME}:v0" in r.stdout
    r = run_cli(["resolve", str(m.path / ENTITY / PROJECT / f"{NAME}:latest" / "model.pt")], m.env)
    assert r.returncode == 0, r.stderr
    assert f"{ENTITY}/{PROJECT}/{NAME}:v1" in r.stdout
    r = run_cli(["path", f"{ENTITY}/{PROJECT}/{NAME}:best"], m.env)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).resolve() == m.path / f"@{ENTITY}" / PROJECT / "model" / NAME / "v0"
    r = run_cli(["prefetch", f"{ENTITY}/{PROJECT}/{NAME}:v1", "-q"], m.env)
    assert r.returncode == 0, r.stderr
    r = run_cli(["info", "--json", str(m.path / ENTITY / PROJECT / f"{NAME}:best" / "model.pt")], m.env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == f"{ENTITY}/{PROJECT}/{NAME}:v0"
    r = run_cli(["pin", f"{ENTITY}/{PROJECT}/{NAME}:best", "-q"], m.env)
    assert r.returncode == 0, r.stderr
    r = run_cli(["pin"], m.env)
    assert f"{ENTITY}/{PROJECT}/{NAME}:v0" in r.stdout, r.stdout + r.stderr
    coll = m.path / f"@{ENTITY}" / PROJECT / "model" / NAME
    r = run_cli(["lock", str(coll)], m.env)                      # every alias of the collection folder
    assert r.returncode == 0, r.stderr
    assert f"{ENTITY}/{PROJECT}/{NAME}:best" in r.stdout and f"{ENTITY}/{PROJECT}/{NAME}:latest" in r.stdout
    lock = m.path.parent / "wandbfs.lock"
    lock.write_text(r.stdout)
    locked = mount("--lock", str(lock))
    assert tree_digest(locked.path / ENTITY / PROJECT / f"{NAME}:latest") == project_artifacts["latest"]


def test_cp_rsync_du_of_an_alias_folder(project_artifacts, mount, tmp_path):
    """What everyday tools do with an alias (a symlink to its vN), as docs/usage.md says."""
    m = mount()
    alias = m.path / f"@{ENTITY}" / PROJECT / "model" / NAME / "best"
    v0 = alias.parent / "v0"
    subprocess.run(["cp", "-r", str(alias), str(tmp_path / "linkcopy")], check=True, timeout=60)
    assert (tmp_path / "linkcopy").is_symlink()                  # cp -r copies the link itself ...
    assert tree_digest(tmp_path / "linkcopy") == project_artifacts["v0"]   # ... which still reaches v0
    subprocess.run(["cp", "-rL", str(alias), str(tmp_path / "deref")], check=True, timeout=60)
    assert not (tmp_path / "deref").is_symlink()
    assert tree_digest(tmp_path / "deref") == project_artifacts["v0"]
    subprocess.run(["cp", "-r", f"{alias}/.", str(tmp_path / "contents")], check=True, timeout=60)
    assert tree_digest(tmp_path / "contents") == project_artifacts["v0"]
    subprocess.run(["cp", "-a", str(alias), str(tmp_path / "archive")], check=True, timeout=60)
    assert (tmp_path / "archive").is_symlink() and tree_digest(tmp_path / "archive") == project_artifacts["v0"]
    subprocess.run(["tar", "-chf", str(tmp_path / "v.tar"), "-C", str(alias.parent), "best"], check=True, timeout=60)
    subprocess.run(["tar", "-xf", str(tmp_path / "v.tar"), "-C", str(tmp_path / "contents")], check=True, timeout=60)
    assert not (tmp_path / "contents/best").is_symlink()          # tar -h stored the files
    assert tree_digest(tmp_path / "contents/best") == project_artifacts["v0"]
    subprocess.run(["rsync", "-a", str(alias), str(tmp_path / "rs-link")], check=True, timeout=60)
    assert (tmp_path / "rs-link").is_symlink()                        # no trailing slash: the link
    subprocess.run(["rsync", "-a", f"{alias}/", str(tmp_path / "rs-files") + "/"], check=True, timeout=60)
    assert tree_digest(tmp_path / "rs-files") == project_artifacts["v0"]
    du = lambda *a: int(subprocess.run(["du", "-sb", *a], capture_output=True, text=True, check=True,  # noqa: E731
                                       timeout=60).stdout.split()[0])
    total = sum(len(b) for b in FILES_V0.values())
    assert du(str(alias)) < 4096 < total                          # the link, not the version
    assert du("-L", str(alias)) >= total and du(f"{alias}/") >= total
    assert du(str(v0)) >= total


def test_relative_links_on_request(project_artifacts, mount):
    m = mount("--links", "relative")
    coll = m.path / f"@{ENTITY}" / PROJECT / "model" / NAME
    assert os.readlink(coll / "best") == "v0"
    assert os.readlink(m.path / ENTITY) == f"@{ENTITY}"
    assert os.readlink(m.path / f"@{ENTITY}" / PROJECT / f"{NAME}:best") == f"model/{NAME}/v0"
    assert os.readlink(m.path / "acme/model/bert-base/production").startswith("v")


def test_a_new_mount_serves_a_read_project_version_while_w_and_b_hangs(project_artifacts, emu, mount, tmp_path):
    """Immutable data never waits on W&B: a project artifact's vN read once is served by a new
    mount from disk, by its listed path and by its pasted name, with no GraphQL request."""
    opts = ("--no-lineage", "--cache-dir", str(tmp_path / "cache"))
    first = mount(*opts)
    listed = first.path / f"@{ENTITY}" / PROJECT / "model" / NAME / "v0" / "model.pt"
    assert listed.read_bytes() == FILES_V0["model.pt"]
    assert (first.path / ENTITY / PROJECT / f"{NAME}:v0" / "model.pt").read_bytes() == FILES_V0["model.pt"]
    first.unmount()

    # The new mount cannot load the organizations (so its root knows only the copy on disk,
    # which has no "alice"); then W&B hangs altogether.
    emu.faults.set([{"route": "graphql", "operation": "FetchOrgInfoFromEntity", "latency_ms": 20_000}])
    m = mount(*opts)
    emu.log.clear()
    emu.faults.set([{"route": "graphql", "latency_ms": 20_000}])   # W&B hangs from now on
    t0 = time.perf_counter()
    assert (m.path / f"@{ENTITY}" / PROJECT / "model" / NAME / "v0" / "model.pt").read_bytes() == FILES_V0["model.pt"]
    assert (m.path / ENTITY / PROJECT / f"{NAME}:v0" / "model.pt").read_bytes() == FILES_V0["model.pt"]
    took = time.perf_counter() - t0
    asked = [str(e.operation) for e in emu.log.entries("graphql")]
    emu.faults.clear()
    assert took < 2.0, f"{took:.1f}s: something waited for W&B ({asked})"


def test_a_moved_project_alias_shows_after_wandbfs_refresh(emulator, mount, tmp_path):
    import wandb

    _log_artifact(tmp_path, "mover", {"w.txt": b"zero\n"}, ["prod"], "model")
    _log_artifact(tmp_path, "mover", {"w.txt": b"one\n"}, [], "model")
    wandb.teardown()
    m = mount("--alias-ttl", "3600", "--list-ttl", "3600")
    coll = m.path / f"@{ENTITY}" / PROJECT / "model" / "mover"
    assert (coll / "prod" / "w.txt").read_bytes() == b"zero\n"
    art = wandb.Api().artifact(f"{ENTITY}/{PROJECT}/mover:v1")
    art.aliases.append("prod")
    art.save()
    assert os.path.basename(os.readlink(coll / "prod")) == "v0"           # cached for an hour
    r = run_cli(["refresh", str(m.path), f"@{ENTITY}/{PROJECT}/model/mover"], m.env)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: os.path.basename(os.readlink(coll / "prod")) == "v1", timeout=15,
             what="the moved alias after the refresh")
    assert (coll / "prod" / "w.txt").read_bytes() == b"one\n"

