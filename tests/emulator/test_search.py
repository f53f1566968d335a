"""Search as W&B answers it: Mongo operators, dotted keys, ``order``, errors for what it lacks.

The unit tests pin ``match_filter``'s semantics (the runs resolvers call it with run
documents too); the SDK tests drive the real ``wandb.Api()`` registry search against the
demo org and check what comes back.
"""

from __future__ import annotations

import pytest
import wandb

from wandbfs.emulator.executor import GraphQLFailure
from wandbfs.emulator.schema.paging import match_filter, order_by

RUN = {"name": "r1", "state": "finished", "config": {"lr": 0.1, "opt": {"name": "adam"}},
       "tags": ["baseline", "gpu"], "createdAt": "2024-05-01T10:00:00", "summary": {"loss": 0.25}}


# ---- match_filter --------------------------------------------------------------------------

@pytest.mark.parametrize("flt,want", [
    ({}, True),
    (None, True),
    ({"state": "finished"}, True),
    ({"state": "running"}, False),
    ({"config.lr": 0.1}, True),
    ({"config.opt.name": "adam"}, True),
    ({"config.opt.name": {"$regex": "^ad"}}, True),
    ({"config.missing": {"$exists": False}}, True),
    ({"config.lr": {"$exists": True}}, True),
    ({"config.lr": {"$exists": False}}, False),
    ({"config.lr": {"$gt": 0.05, "$lte": 0.1}}, True),
    ({"config.lr": {"$lt": 0.1}}, False),
    ({"config.lr": {"$gte": "0.01"}}, False),          # no string/number comparisons (type bracketing)
    ({"createdAt": {"$gte": "2024-01-01"}}, True),     # ISO timestamps compare as strings
    ({"createdAt": {"$gte": "2999-01-01"}}, False),
    ({"createdAt": {"$lt": "2024-05-01T10:00:01"}}, True),
    ({"tags": "gpu"}, True),                            # an array matches one of its elements
    ({"tags": {"$in": ["cpu", "gpu"]}}, True),
    ({"tags": {"$nin": ["gpu"]}}, False),
    ({"tags": {"$all": ["gpu", "baseline"]}}, True),
    ({"tags": {"$size": 2}}, True),
    ({"tags": {"$ne": "cpu"}}, True),
    ({"state": {"$ne": "finished"}}, False),
    ({"state": {"$in": ["running", "finished"]}}, True),
    ({"state": {"$nin": ["running", "crashed"]}}, True),
    ({"state": {"$not": {"$eq": "finished"}}}, False),
    ({"name": {"$regex": "R", "$options": "i"}}, True),
    ({"name": {"$contains": "1"}}, True),
    ({"missing": None}, True),                          # null matches an absent field
    ({"missing": {"$ne": 3}}, True),
    ({"missing": {"$gt": 0}}, False),
    ({"$and": [{"state": "finished"}, {"config.lr": 0.1}]}, True),
    ({"$and": [{"state": "finished"}, {"config.lr": 0.2}]}, False),
    ({"$or": [{"state": "running"}, {"summary.loss": {"$lt": 0.3}}]}, True),
    ({"$or": [{"state": "running"}, {"summary.loss": {"$gt": 0.3}}]}, False),
    ({"$nor": [{"state": "running"}, {"state": "crashed"}]}, True),
    ({"$nor": [{"state": "finished"}]}, False),
    ({"config": {"lr": 0.1, "opt": {"name": "adam"}}}, True),   # a whole sub-document
])
def test_match_filter_semantics(flt, want):
    assert match_filter(RUN, flt) is want


@pytest.mark.parametrize("flt", [
    {"createdAt": {"$foo": "2999-01-01"}},
    {"$where": "1"},
    {"$or": {"state": "running"}},
    {"state": {"$in": "finished"}},
    {"state": {"$eq": "x", "name": "y"}},
    {"name": {"$regex": "("}},
])
def test_bad_filters_are_graphql_errors(flt):
    with pytest.raises(GraphQLFailure):
        match_filter(RUN, flt)


def test_order_by_fields_either_spelling_and_missing_last():
    docs = [{"n": "b", "created_at": "2024-02"}, {"n": "a", "created_at": "2024-03"},
            {"n": "c"}, {"n": "d", "created_at": "2024-01"}]
    names = lambda xs: [d["n"] for d in xs]  # noqa: E731
    assert names(order_by(docs, lambda d: d, "-createdAt")) == ["a", "b", "d", "c"]
    assert names(order_by(docs, lambda d: d, "+created_at")) == ["d", "b", "a", "c"]
    assert names(order_by(docs, lambda d: d, "n")) == ["a", "b", "c", "d"]
    assert names(order_by(docs, lambda d: d, None)) == ["b", "a", "c", "d"]
    with pytest.raises(GraphQLFailure):
        order_by(docs, lambda d: d, "-nosuchfield")


# ---- the real SDK against the demo org -----------------------------------------------------

def test_versions_metadata_and_timestamps(emu):
    api = wandb.Api()
    regs = api.registries(organization="acme", filter={"name": "model"})
    got = sorted(a.name for a in regs.collections(filter={"name": "resnet50"}).versions(
        filter={"metadata.epochs": {"$gte": 30}}))
    assert got == ["resnet50:v2", "resnet50:v3"]          # seeded epochs 10, 20, 30, 40
    got = sorted(a.name for a in regs.collections(filter={"name": "resnet50"}).versions(
        filter={"$or": [{"metadata.epochs": 10}, {"alias": "staging"}]}))
    assert got == ["resnet50:v0", "resnet50:v2"]
    future = list(api.registries(organization="acme").versions(filter={"created_at": {"$gte": "2999-01-01"}}))
    assert future == []
    past = list(api.registries(organization="acme").versions(filter={"created_at": {"$gte": "2000-01-01"}}))
    assert len(past) >= 16                                  # every seeded version at least
    old = list(api.registries(organization="acme").versions(filter={"updated_at": {"$lt": "2000-01-01"}}))
    assert old == []


def test_versions_alias_filter(emu):
    regs = wandb.Api().registries(organization="acme", filter={"name": "model"})
    prod = {a.name for a in regs.versions(filter={"alias": "production"})}
    assert {"resnet50:v1", "bert-base:v0"} <= prod
    assert all(":" in n for n in prod)
    none = list(regs.versions(filter={"alias": {"$in": ["no-such-alias"]}}))
    assert none == []


def test_collections_filter_and_order(emu):
    api = wandb.Api()
    regs = api.registries(organization="acme")
    got = sorted(c.name for c in regs.collections(filter={"name": {"$in": ["resnet50", "squad"]}}))
    assert got == ["resnet50", "squad"]
    assert list(regs.collections(filter={"created_at": {"$lt": "2000-01-01"}})) == []
    assert {c.name for c in regs.collections(filter={"updated_at": {"$gte": "2000-01-01"}})} >= {
        "resnet50", "bert-base", "imagenet-mini", "squad", "llama-ft"}
    names = [c.name for c in regs.collections(order="-name")]
    assert names == sorted(names, reverse=True) and "resnet50" in names
    names = [c.name for c in regs.collections(order="name")]
    assert names == sorted(names)


def test_registries_order(emu):
    names = [r.name for r in wandb.Api().registries(organization="acme", order="-name")]
    assert names == sorted(names, reverse=True)
    assert {"model", "dataset", "Fine-tuned Models"} <= set(names)


def test_ordered_registries_chain_to_collections(emu):
    """``registries(order=...)`` makes the SDK send ``{"id": <project number>}`` per registry."""
    regs = wandb.Api().registries(organization="acme", filter={"name": {"$in": ["model", "dataset"]}},
                                  order="+name")
    names = [c.name for c in regs.collections()]
    assert set(names) >= {"resnet50", "bert-base", "imagenet-mini", "squad"}
    assert names.index("imagenet-mini") < names.index("resnet50")   # dataset's before model's


def test_artifact_collections_order_and_type_filters(emu):
    api = wandb.Api()
    names = [c.name for c in api.artifact_collections("alice/demo-source", "model", order="-name")]
    assert names == sorted(names, reverse=True)
    assert {"resnet50-source", "bert-base-source", "llama-ft-source"} <= set(names)
    bert = [c.name for c in api.artifact_type("model", "alice/demo-source").collections(
        filters={"name": {"$regex": "^bert"}})]
    assert bert == ["bert-base-source"]


def test_project_artifacts_order(emu):
    arts = wandb.Api().artifacts("model", "alice/demo-source/resnet50-source", order="+versionIndex")
    assert [a.version for a in arts] == ["v0", "v1", "v2", "v3"]
    arts = wandb.Api().artifacts("model", "alice/demo-source/resnet50-source", order="-createdAt")
    assert len(list(arts)) == 4


@pytest.mark.parametrize("flt", [{"created_at": {"$foo": "2999-01-01"}}, {"$where": "true"}])
def test_unknown_operator_is_an_error(emu, flt):
    with pytest.raises(Exception, match="unknown operator"):
        list(wandb.Api().registries(organization="acme").versions(filter=flt))
