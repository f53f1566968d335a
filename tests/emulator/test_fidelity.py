"""Fidelity: every GraphQL answer the emulator gives the real SDK fits the SDK's own schema types.

The SDK is driven through a broad scenario (publish with a run, registries, collections,
versions, files, manifests, download, lineage, link, aliases, runs, projects) with the
request log keeping each answer. Then each answer to an operation the SDK has a generated
model for (wandb/sdk/artifacts/_generated: ``FetchRegistry`` -> ``FetchRegistry``) is
validated by that model in strict mode (nullability, types, enums as the models declare
them); and every answer, generated or not, is walked: ids are strings, every value of a
field the generated models type as an enum is one of that enum's values, counts are ints.
"""

from __future__ import annotations

import enum
import json
import typing
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import wandb
from pydantic import BaseModel, ValidationError

import wandb.sdk.artifacts._generated as generated
from wandb.sdk.artifacts._generated import enums as gen_enums

from tests.helpers import publish_with_sdk

REG = "acme/wandb-registry-model"
INT_KEYS = ("Count", "versionIndex", "size", "sizeBytes", "fileCount", "historyLineCount")
# Non-null in W&B's schema though the generated models accept null (issue #15: an artifact is
# always created by a run or a user, ``Artifact.createdBy: ArtifactCreator!``).
NON_NULL_KEYS = ("createdBy",)


def _model_for(operation: str) -> type[BaseModel] | None:
    cls = getattr(generated, operation, None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _enum_in(annotation: Any) -> Iterator[type[enum.Enum]]:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        if annotation.__module__ == gen_enums.__name__:
            yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _enum_in(arg)


def _enum_fields() -> dict[str, set[str]]:
    """JSON field name -> the values its generated enum(s) allow, over every generated model."""
    out: dict[str, set[str]] = {}
    for name in dir(generated):
        cls = getattr(generated, name)
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            continue
        for fname, f in cls.model_fields.items():
            for e in _enum_in(f.annotation):
                out.setdefault(f.alias or fname, set()).update(m.value for m in e)
    return out


def _walk(obj: Any, path: str, enums: dict[str, set[str]], problems: list[str]) -> None:
    """Ids are strings, enum-typed fields hold their enum's values, counts are ints."""
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            _walk(v, f"{path}[{i}]", enums, problems)
        return
    if not isinstance(obj, dict):
        return
    for k, v in obj.items():
        where = f"{path}.{k}"
        if v is None and k in NON_NULL_KEYS:
            problems.append(f"{where}: null, but W&B's schema says non-null")
        if v is not None and (k == "id" or k.endswith("Id") or k.endswith("ID")) and not isinstance(v, str):
            problems.append(f"{where}: an ID sent as {type(v).__name__} {v!r}")
        if v is not None and k in enums and isinstance(v, str) and v not in enums[k]:
            problems.append(f"{where}: {v!r} is not one of {sorted(enums[k])}")
        if v is not None and k.endswith(INT_KEYS) and (isinstance(v, bool) or not isinstance(v, int)):
            problems.append(f"{where}: {v!r} is not an int")
        _walk(v, where, enums, problems)


def audit(entries: list[Any]) -> tuple[list[str], set[str], set[str]]:
    """(problems, operations checked with a model, operations walked without one)."""
    enums = _enum_fields()
    problems: list[str] = []
    modelled: set[str] = set()
    bare: set[str] = set()
    for e in entries:
        if e.response is None or e.operation is None:
            continue
        data = e.response.get("data")
        if e.response.get("errors"):
            problems.append(f"{e.operation}: errors {e.response['errors']}")
            continue
        model = _model_for(e.operation)
        # Field names alone name an enum only inside the artifact operations (a run's
        # ``state`` is a plain string, an artifact's an ArtifactState).
        _walk(data, e.operation, enums if model else {}, problems)
        if model is None:
            bare.add(e.operation)
            continue
        modelled.add(e.operation)
        try:
            model.model_validate_json(json.dumps(data), strict=True)
        except ValidationError as err:
            problems.append(f"{e.operation}: {err}")
    return problems, modelled, bare


class _Entry:
    def __init__(self, operation: str, data: Any) -> None:
        self.operation, self.response = operation, {"data": data}


def test_the_audit_finds_what_it_is_for():
    """Each kind of mismatch is caught: an int id, an enum value the SDK lacks, a null where
    the model says non-null, a null createdBy, an answer with errors."""
    art = {"artifact": {"createdBy": None}}
    bad = [
        _Entry("Run", {"project": {"run": {"projectId": 12, "id": "UnVuOjE="}}}),
        _Entry("ArtifactCreatedBy", art),
        _Entry("FetchRegistry", {"entity": {"project": None}}),   # fine: nullable
        _Entry("FetchRegistry", {"entity": None, "extra": {"id": 3}}),
        _Entry("ArtifactCollectionAliases", {"artifactCollection": None}),
    ]
    bad.append(_Entry("FetchOrgInfoFromEntity", {"entity": {"organization": None, "user": None}}))
    problems, modelled, bare = audit(bad)
    text = "\n".join(problems)
    assert "projectId: an ID sent as int" in text
    assert "createdBy: null" in text
    assert "extra.id: an ID sent as int" in text
    assert bare == {"Run"} and "FetchRegistry" in modelled
    enum_bad = _Entry("ArtifactByID", {"artifact": {"state": "FINISHED"}})
    assert any("FINISHED" in p for p in audit([enum_bad])[0])
    errors = _Entry("Run", None)
    errors.response["errors"] = [{"message": "boom"}]
    assert audit([errors])[0] == ["Run: errors [{'message': 'boom'}]"]


@pytest.fixture
def keep_responses(emu) -> Iterator[Any]:
    emu.log.keep_responses = True
    try:
        yield emu
    finally:
        emu.log.keep_responses = False


@pytest.mark.timeout(300)
def test_artifact_answers_fit_the_sdk_models(keep_responses, tmp_path: Path, fresh_cache, wandb_teardown):
    emu = keep_responses
    coll = f"fidelity-{uuid.uuid4().hex[:6]}"
    publish_with_sdk(tmp_path, coll, {"w.bin": b"\0" * 1000, "d/x.txt": b"x\n"}, aliases=["candidate"])
    wandb.teardown()
    api = wandb.Api()

    regs = list(api.registries(organization="acme"))
    reg = api.registry("model", organization="acme")
    assert reg.name == "model" and regs
    colls = list(api.registries(organization="acme").collections(filter={"name": {"$in": ["resnet50", coll]}}))
    assert {c.name for c in colls} == {"resnet50", coll}
    versions = list(api.registries(organization="acme").versions(filter={"alias": "production"}))
    assert versions
    art = api.artifact(f"{REG}/{coll}:candidate")
    assert art.logged_by() is not None
    assert sorted(f.name for f in art.files()) == ["w.bin", "x.txt"]
    assert [f.name for f in art.files(names=["d/x.txt"])] == ["x.txt"]
    art.download(str(tmp_path / "dl"))
    assert (tmp_path / "dl" / "d" / "x.txt").read_bytes() == b"x\n"
    art.used_by()
    seeded = api.artifact(f"{REG}/resnet50:v1")
    assert seeded.logged_by() is not None          # seeded versions are logged by a run too
    seeded.used_by()
    _ = seeded.manifest.entries
    _ = seeded.metadata, seeded.created_at, seeded.updated_at, seeded.digest, seeded.source_name
    c = api.artifact_collection("model", f"{REG}/{coll}")
    _ = c.aliases, c.tags, c.description
    _ = [a.version for a in c.artifacts()]
    _ = list(api.artifact_types("alice/demo-source"))
    _ = list(api.artifact_collections("alice/demo-source", "model", order="-name"))
    _ = list(api.artifacts("model", "alice/demo-source/resnet50-source", order="+versionIndex"))

    art.aliases.append("fidelity-extra")
    art.save()
    art = api.artifact(f"{REG}/{coll}:fidelity-extra")
    art.aliases.remove("fidelity-extra")
    art.save()
    seeded.link(f"{REG}/{coll}-linked", aliases=["fid"])
    linked = api.artifact(f"{REG}/{coll}-linked:fid")
    assert linked.version == "v0"

    problems, modelled, _ = audit(emu.log.entries("graphql"))
    assert not problems, "\n".join(problems)
    # The walk reached the operations the mount and the SDK rely on.
    assert {"FetchRegistries", "RegistryCollections", "RegistryVersions", "ArtifactMembershipByName",
            "ArtifactCreatedBy", "LinkArtifact"} <= modelled, sorted(modelled)


@pytest.mark.timeout(300)
def test_run_and_project_answers_are_type_sane(keep_responses, tmp_path: Path, wandb_teardown):
    """Runs and projects have no generated models: their answers are walked (ids strings,
    counts ints, enum-typed fields in their enums)."""
    emu = keep_responses
    run = wandb.init(entity="alice", project="fidelity-runs", config={"lr": 0.1})
    run.log({"loss": 0.5})
    run.finish()
    wandb.teardown()
    api = wandb.Api()
    r = api.run(f"alice/fidelity-runs/{run.id}")
    _ = r.config, r.summary, r.state
    _ = list(r.logged_artifacts()), list(r.used_artifacts())
    _ = [p.name for p in api.projects("alice")]
    assert run.id in [x.id for x in api.runs("alice/fidelity-runs")]
    problems, _, bare = audit(emu.log.entries("graphql"))
    assert not problems, "\n".join(problems)
    assert bare, "no run/project answers were walked"
