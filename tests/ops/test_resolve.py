"""``wandbfs resolve`` / ``wandbfs path``: pure logic, then against a real mount and the SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import wandb

from tests.fs.conftest import run_cli
from wandbfs.cli.resolve_cmd import (
    Resolution,
    ResolveError,
    api_snippet,
    pick_mount,
    py_str,
    render_json,
    render_text,
    resolve_name,
    usage_snippet,
)
from wandbfs.sdk.client import WandbClient

RESNET = "acme/wandb-registry-model/resnet50"


# ---- pure ---------------------------------------------------------------------------------

def test_usage_snippet_is_the_registry_ui_shape():
    # The Usage tab (W&B docs, "Download and use an artifact from a registry"):
    #   import wandb / run = wandb.init() / artifact = run.use_artifact('<name>', type='model')
    #   / artifact_dir = artifact.download()
    assert usage_snippet(f"{RESNET}:production", "model") == (
        "import wandb\n\n"
        "run = wandb.init()\n\n"
        "artifact = run.use_artifact('acme/wandb-registry-model/resnet50:production', type='model')\n"
        "artifact_dir = artifact.download()\n")
    s = usage_snippet(f"{RESNET}:v3", None, entity="team", project="train")
    assert "run = wandb.init(entity='team', project='train')" in s
    assert "run.use_artifact('acme/wandb-registry-model/resnet50:v3')\n" in s
    assert api_snippet(f"{RESNET}:v3", "model") == (
        "import wandb\n\n"
        "artifact = wandb.Api().artifact('acme/wandb-registry-model/resnet50:v3', type='model')\n"
        "artifact_dir = artifact.download()\n")


def test_snippets_are_valid_python_for_awkward_names():
    for name in ["acme/wandb-registry-Fine-tuned Models/llama-ft:production", "o/wandb-registry-r/it's:v0",
                 "o/wandb-registry-r/back\\slash:v1"]:
        for snippet in (usage_snippet(name, "model", "e'x", None), api_snippet(name, "da'ta")):
            compile(snippet, "<snippet>", "exec")
            assert repr(name)[1:-1] in snippet or name in snippet
    assert py_str("plain") == "'plain'"
    assert eval(py_str("it's")) == "it's"  # noqa: S307 - our own literal


def test_resolution_names_and_rendering():
    r = Resolution("acme", "model", "resnet50", "v3", alias="production", type="model",
                   inner_path="weights/model.pt", mount_path="/mnt/wandb/acme/model/resnet50/production/weights/model.pt")
    assert r.name == f"{RESNET}:v3" and r.requested == f"{RESNET}:production"
    text = render_text(r)
    assert text.splitlines()[0] == f"{RESNET}:v3 via production"
    assert f"run.use_artifact('{RESNET}:production', type='model')" in text
    assert f"run.use_artifact('{RESNET}:v3', type='model')" in render_text(r, pin=True)
    d = json.loads(render_json(r))
    assert d["name"] == f"{RESNET}:v3" and d["alias"] == "production" and d["version"] == "v3"
    assert d["registry_project"] == "wandb-registry-model" and d["inner_path"] == "weights/model.pt"
    assert d["snippets"]["python_run"] == usage_snippet(f"{RESNET}:production", "model")
    plain = Resolution("acme", "model", "resnet50", "v1")
    assert render_text(plain).splitlines()[0] == f"{RESNET}:v1"
    assert json.loads(render_json(plain))["alias"] is None


def test_pick_mount():
    # (the mount table itself is parsed by wandbfs.daemon.mounttab, tested with its module)
    assert pick_mount(["/mnt/wandb"]) == "/mnt/wandb"
    assert pick_mount(["/a", "/b"], explicit="/b") == "/b"
    with pytest.raises(ResolveError, match="no wandbfs mount"):
        pick_mount([])
    with pytest.raises(ResolveError, match="several wandbfs mounts"):
        pick_mount(["/a", "/b"])


class SourceNumberedApi:
    """What ``wandb.Api().artifact(name)`` returns when W&B sends no version index for the
    membership: ``Artifact.version`` is the source sequence's (here v0, its first version),
    the name carries the token asked for. A stand-in behind WandbClient's api_factory."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def artifact(self, name: str) -> SimpleNamespace:
        self.asked.append(name)
        token = name.rsplit(":", 1)[1]
        version = "v7" if token == "latest" else "v0"   # latest: the SDK's fallback is all there is
        return SimpleNamespace(name=f"squad:{token}", version=version, type="dataset", id="QXJ0aWZhY3Q6MQ==")


def test_resolve_name_names_the_collections_vN_not_the_sources():
    api = SourceNumberedApi()
    client = WandbClient(api_factory=lambda: api)
    r = resolve_name("acme/wandb-registry-dataset/squad:v1", client)
    assert (r.version, r.alias, r.type) == ("v1", None, "dataset")    # was v0, the source's index
    assert r.headline() == "acme/wandb-registry-dataset/squad:v1"
    r = resolve_name("acme/wandb-registry-dataset/squad", client)
    assert api.asked[-1] == "acme/wandb-registry-dataset/squad:latest"
    assert (r.version, r.alias, r.type) == ("v7", "latest", "dataset")


# ---- against a real mount and the emulator -------------------------------------------------

def _truth(name: str):
    return wandb.Api().artifact(name)


def test_resolve_alias_path_in_a_mount_matches_the_sdk(emu, mount, mount_env):
    m = mount("--no-lineage")
    truth = _truth(f"{RESNET}:production")
    f = m.path / "acme/model/resnet50/production/model.safetensors"
    r = run_cli(["resolve", str(f)], mount_env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"{RESNET}:{truth.version} via production"
    assert "path in version: model.safetensors" in lines
    assert f"type: {truth.type}" in lines
    assert f"artifact = run.use_artifact('{RESNET}:production', type='{truth.type}')" in lines

    r = run_cli(["resolve", "--json", "--pin", str(f)], mount_env)
    d = json.loads(r.stdout)
    assert d["name"] == f"{RESNET}:{truth.version}" and d["alias"] == "production"
    assert d["mount_path"] == str(f) and d["inner_path"] == "model.safetensors"
    assert f"run.use_artifact('{RESNET}:{truth.version}', type='model')" in d["snippets"]["python_run"]

    # A vN path has no alias; the qualified and the wandb-registry- spellings resolve the same.
    staging = _truth(f"{RESNET}:staging").version
    for p, want in [(m.path / "acme/model/resnet50/v0", f"{RESNET}:v0"),
                    (m.path / "acme/wandb-registry-model/resnet50:staging/config.json", f"{RESNET}:{staging} via staging"),
                    (m.path / "acme/model/resnet50/latest", f"{RESNET}:{_truth(RESNET).version} via latest")]:
        r = run_cli(["resolve", "--offline", str(p)], mount_env)
        assert r.returncode == 0 and r.stdout.splitlines()[0] == want, (p, r.stdout, r.stderr)
        assert "type=" not in r.stdout  # --offline: W&B not asked


def test_resolve_keeps_the_alias_of_the_shells_working_directory(emu, mount, mount_env):
    m = mount("--no-lineage")
    d = m.path / "acme/dataset/squad/production"
    env = dict(mount_env, PWD=str(d))
    r = subprocess.run([sys.executable, "-m", "wandbfs.cli", "resolve", "--offline", "dev.jsonl"], cwd=d, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"acme/wandb-registry-dataset/squad:{_truth('acme/wandb-registry-dataset/squad:production').version} via production"


def test_resolve_a_name_through_the_sdk(emu, mount_env):
    truth = _truth("acme/wandb-registry-dataset/squad:staging")
    r = run_cli(["resolve", "--json", "acme/wandb-registry-dataset/squad:staging"], mount_env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["version"], d["alias"], d["type"]) == (truth.version, "staging", "dataset")
    assert d["requested"] == "acme/wandb-registry-dataset/squad:staging"


def test_a_collection_fed_by_two_source_artifacts_resolves_to_its_own_numbers(emu, mount, mount_env):
    from wandbfs.emulator.seed import publish

    # registry v0 <- src-a:v0, v1 <- src-b:v0, v2 <- src-a:v1: no source index equals the registry's
    # for v1 and v2.
    for i, source in enumerate(["two-src-a", "two-src-b", "two-src-a"]):
        publish(emu.store, "acme", "model", "two-sources", {"id.txt": f"registry v{i}\n".encode()},
                ["production"] if i == 1 else [], source=source)
    name = "acme/wandb-registry-model/two-sources"
    assert _truth(f"{name}:v1").source_version == "v0"   # the case: the source counts differently
    for token, want in [("v1", "v1"), ("production", "v1"), ("v2", "v2"), ("latest", "v2")]:
        r = run_cli(["resolve", "--json", f"{name}:{token}"], mount_env)
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        assert (d["name"], d["type"]) == (f"{name}:{want}", "model"), token
    lock = run_cli(["lock", f"{name}:production"], mount_env)
    assert lock.returncode == 0, lock.stderr
    assert json.loads(lock.stdout)["aliases"] == {f"{name}:production": {"version": "v1"}}
    # what a mount shows for the alias, and resolve of the alias path, agree with the name
    m = mount("--no-lineage")
    coll = m.path / "acme/model/two-sources"
    assert os.path.basename(os.readlink(coll / "production")) == "v1" and (coll / "production/id.txt").read_bytes() == b"registry v1\n"
    r = run_cli(["resolve", str(coll / "production/id.txt")], mount_env)
    assert r.returncode == 0 and r.stdout.splitlines()[0] == f"{name}:v1 via production", r.stderr


def test_the_printed_snippet_downloads_the_same_bytes_as_the_mount(emu, mount, mount_env, tmp_path):
    m = mount("--no-lineage")
    r = run_cli(["resolve", "--json", str(m.path / "acme/model/bert-base/production")], mount_env)
    snippet = json.loads(r.stdout)["snippets"]["python_api"]
    code = snippet.replace("artifact.download()", f"artifact.download(root={str(tmp_path / 'dl')!r})")
    run = subprocess.run([sys.executable, "-c", code], env=mount_env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    mounted = m.path / "acme/model/bert-base/production"
    names = sorted(p.name for p in mounted.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "dl").iterdir())
    for n in names:
        assert (tmp_path / "dl" / n).read_bytes() == (mounted / n).read_bytes()


def test_path_is_the_reverse_of_resolve(emu, mount, mount_env):
    m = mount("--no-lineage")
    for name in [f"{RESNET}:production", "acme/wandb-registry-Fine-tuned Models/llama-ft:v1", "acme/wandb-registry-dataset/squad"]:
        r = run_cli(["path", "--mount", str(m.path), name], mount_env)
        assert r.returncode == 0, r.stderr
        p = Path(r.stdout.strip())
        assert p.is_dir()
        back = run_cli(["resolve", "--json", "--offline", str(p)], mount_env)
        d = json.loads(back.stdout)
        want = name if ":" in name else name + ":latest"
        assert d["requested"] == want
        assert d["name"] == want.rsplit(":", 1)[0] + ":" + _truth(name).version
    r = run_cli(["path", "--mount", str(m.path), f"{RESNET}:v0", "tokenizer/vocab.txt"], mount_env)
    assert Path(r.stdout.strip()).read_bytes() == (m.path / "acme/model/resnet50/v0/tokenizer/vocab.txt").read_bytes()


def test_mistakes_get_one_clear_line(emu, mount, mount_env, tmp_path):
    m = mount("--no-lineage")
    cases = [
        (["resolve", str(m.path / "acme/model/resnet50")], "not a version directory"),
        (["resolve", str(m.path / "acme/model/resnet50/production/nope.bin")], "no such file"),
        (["resolve", str(m.path / "acme/model/resnet50/no-such-alias")], "no such version"),
        (["resolve", str(tmp_path)], "not inside a wandbfs mount"),
        (["resolve", f"{RESNET}:no-such-alias"], "not found"),
        (["resolve", "acme/resnet50"], "neither a path"),
        (["resolve", "acme/model/resnet50"], "a registry name is <org>/wandb-registry-"),   # no such project artifact
        (["resolve", "--offline", f"{RESNET}:v1"], "needs W&B"),
        (["path", "--mount", str(m.path), "acme/resnet50:v1"], "wandb-registry-"),
    ]
    for args, words in cases:
        r = run_cli(args, mount_env)
        assert r.returncode == 1, (args, r.stdout)
        assert r.stderr.startswith("wandbfs: ") and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert words in r.stderr, (args, r.stderr)
    assert os.path.ismount(m.path)
