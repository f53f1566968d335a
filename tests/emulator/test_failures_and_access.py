"""Failures that look like W&B's (GraphQL error bodies, 429 + Retry-After, hangs) and the
permission model (org membership, RESTRICTED registries), with the real SDK as the client."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Iterator

import pytest
import wandb
from wandb.errors import CommError

from tests.conftest import API_KEY
from tests.helpers import wait_for
from wandbfs.emulator import Emulator
from wandbfs.emulator.seed import publish

BERT = "acme/wandb-registry-model/bert-base:v0"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode()}


def _http(url: str, data: object = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _access(emu: Emulator, change: object) -> dict:
    st, _, body = _http(f"{emu.url}/_emulator/access", change)
    assert st == 200, body
    return json.loads(body)


# ---- failures ---------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_graphql_429_is_retried_after_retry_after(emu):
    # The hermetic SDK's own backoff is 1 s at most (WANDB__GRAPHQL_RETRY_WAIT_MAX_SECONDS):
    # a retry 2 s later can only come from the header.
    emu.faults.set([{"route": "graphql", "operation": "ArtifactMembershipByName", "status": 429,
                     "retry_after": 2, "times": 1}])
    assert wandb.Api().artifact(BERT).version == "v0"
    tries = wait_for(lambda: (e := emu.log.entries("graphql", "ArtifactMembershipByName")) and len(e) >= 2 and e,
                     what="the retried request")
    assert [e.status for e in tries[:2]] == [429, 200]
    assert tries[1].t - tries[0].t >= 2.0


def test_graphql_fault_answers_a_graphql_error_document(emu):
    emu.faults.set([{"route": "graphql", "status": 429, "retry_after": 3, "message": "slow down, please"}])
    st, headers, body = _http(f"{emu.url}/graphql", {"query": "{ viewer { id } }"}, AUTH)
    assert st == 429 and headers["Retry-After"] == "3"
    assert json.loads(body) == {"errors": [{"message": "slow down, please",
                                            "extensions": {"code": "RATE_LIMIT_EXCEEDED"}}], "data": None}
    emu.faults.set([{"route": "graphql", "status": 429}])
    assert _http(f"{emu.url}/graphql", {"query": "{ viewer { id } }"}, AUTH)[1]["Retry-After"] == "1"


def test_sdk_raises_its_error_with_the_fault_message(emu):
    emu.faults.set([{"route": "graphql", "operation": "ArtifactMembershipByName", "status": 403,
                     "message": "injected: user may not read this project"}])
    with pytest.raises(CommError, match="injected: user may not read this project"):
        wandb.Api().artifact(BERT)


def test_storage_faults_answer_s3_style_xml_with_retry_after(emu):
    art = wandb.Api().artifact(BERT)
    url = next(f.direct_url for f in art.files(names=["config.json"]))
    emu.faults.set([{"route": "blob", "status": 429, "times": 1}, {"route": "blob", "status": 404, "times": 1}])
    st, headers, body = _http(url)
    assert st == 429 and headers["Retry-After"] == "1" and headers["Content-Type"] == "application/xml"
    assert b"<Code>SlowDown</Code>" in body
    st, headers, body = _http(url)
    assert st == 404 and b"<Code>NoSuchKey</Code>" in body and "Retry-After" not in headers
    assert _http(url)[0] == 200


@pytest.mark.timeout(60)
def test_graphql_stall_ends_at_the_clients_deadline(emu):
    emu.faults.set([{"route": "graphql", "operation": "ArtifactMembershipByName", "stall_s": 30}])
    api = wandb.Api(timeout=2)
    t0 = time.monotonic()
    with pytest.raises(CommError):
        api.artifact(BERT)
    elapsed = time.monotonic() - t0
    assert 1.5 <= elapsed < 15, elapsed
    stalled = emu.log.entries("graphql", "ArtifactMembershipByName")
    assert stalled and not any(e.done for e in stalled)   # held, never answered
    emu.faults.clear()
    assert wandb.Api().artifact(BERT).version == "v0"


# ---- permissions ------------------------------------------------------------------------

@pytest.fixture
def own_org(emu: Emulator) -> Iterator[str]:
    """An org of this test's own, with one registry ``secret`` holding ``c:v0``; the viewer is
    a member while the test runs and not afterwards (the org vanishes from her view)."""
    org = f"perm-{uuid.uuid4().hex[:8]}"
    emu.store.add_org(org)
    emu.store.create_registry(org, "secret")
    publish(emu.store, org, "secret", "c", {"w.txt": b"classified\n"})
    try:
        yield org
    finally:
        emu.store.set_org_member(org, False)


def _registry_names(org: str) -> list[str]:
    return sorted(r.name for r in wandb.Api().registries(organization=org))


def test_restricted_registry_is_invisible_until_she_is_a_member(emu, own_org):
    api = wandb.Api()
    assert api.artifact(f"{own_org}/wandb-registry-secret/c:v0").version == "v0"
    state = _access(emu, {"registry": f"{own_org}/secret", "access": "RESTRICTED", "members": ["bob"]})
    assert state["projects"][f"{own_org}-org/wandb-registry-secret"] == {"access": "RESTRICTED",
                                                                         "members": ["bob"]}
    assert _registry_names(own_org) == []
    # left out of listings, but named it is refused as W&B refuses it: 403, PERMISSION_ERROR
    # ("permission denied on artifact wandb-artifact:///.../wandb-registry-...", wandb/docs#1698)
    with pytest.raises(CommError, match="permission denied"):
        wandb.Api().artifact(f"{own_org}/wandb-registry-secret/c:v0")
    answer = [e for e in emu.log.entries("graphql") if e.status == 403]
    assert answer, "the refusal went out with HTTP 403"
    with pytest.raises(CommError, match="project 'wandb-registry-nothing' not found under entity"):
        wandb.Api().artifact(f"{own_org}/wandb-registry-nothing/c:v0")
    with pytest.raises(ValueError, match="Failed to load registry") as denied:
        wandb.Api().registry("secret", organization=own_org)
    assert "permission denied" in str(denied.value.__cause__)
    # a write into it is refused with a permission error, not answered as success
    with pytest.raises(ValueError, match="Failed to create registry") as ei:
        wandb.Api().create_registry("secret", visibility="organization", organization=own_org)
    assert "permission denied" in str(ei.value.__cause__)

    _access(emu, {"registry": f"{own_org}/secret", "add": ["alice"]})
    assert _registry_names(own_org) == ["secret"]
    assert wandb.Api().artifact(f"{own_org}/wandb-registry-secret/c:v0").version == "v0"
    assert wandb.Api().registry("secret", organization=own_org).visibility == "restricted"


def test_team_membership_opens_a_restricted_registry(emu, own_org):
    team = f"team-{uuid.uuid4().hex[:6]}"
    emu.store.set_project_access(emu.store.registry_project(f"{own_org}/secret"), "RESTRICTED", [team])
    assert _registry_names(own_org) == []
    _access(emu, {"team": team, "members": ["alice"]})
    assert _registry_names(own_org) == ["secret"]


def test_org_non_membership_hides_the_orgs_registries(emu, own_org):
    assert _registry_names(own_org) == ["secret"]
    _access(emu, {"org": own_org, "member": False})
    with pytest.raises(ValueError, match="not found"):
        _registry_names(own_org)
    with pytest.raises(CommError, match=f"cannot be linked/fetched with '{own_org}'"):
        wandb.Api().artifact(f"{own_org}/wandb-registry-secret/c:v0")   # not among her organizations
    orgs = json.loads(_http(f"{emu.url}/_emulator/access")[2])["orgs"]
    assert "alice" not in orgs[own_org] and "alice" in orgs["acme"]
    _access(emu, {"org": own_org, "member": True})
    assert _registry_names(own_org) == ["secret"]


def test_artifacts_v2_refuses_a_non_member_but_signed_urls_still_work(emu, own_org):
    art = wandb.Api().artifact(f"{own_org}/wandb-registry-secret/c:v0")
    signed = next(f.direct_url for f in art.files(names=["w.txt"]))
    md5hex = signed.split("/_storage/blobs/")[1].split("?")[0]
    v2 = f"{emu.url}/artifactsV2/default/{own_org}-org/wandb-registry-secret/c/{art.id}/{md5hex}/w.txt"
    assert _http(v2, headers=AUTH)[:3:2] == (200, b"classified\n")
    _access(emu, {"registry": f"{own_org}/secret", "access": "RESTRICTED", "members": []})
    st, _, body = _http(v2, headers=AUTH)
    assert st == 403 and b"permission denied" in body
    assert _http(signed)[2] == b"classified\n"   # a signed URL is good for whoever holds it


def test_access_state_survives_a_restart(tmp_path):
    with Emulator(tmp_path / "s") as emu:
        emu.store.add_org("solo")
        emu.store.create_registry("solo", "r", access="RESTRICTED", members=["bob"])
        emu.store.set_org_member("solo", False)
    with Emulator(tmp_path / "s") as emu2:
        assert emu2.store.access_state()["projects"]["solo-org/wandb-registry-r"] == {
            "access": "RESTRICTED", "members": ["bob"]}
        assert emu2.store.orgs["solo"].members == []


def test_registry_members_through_the_sdk(emu, own_org):
    """alice restricts her registry (she stays its member, as W&B's creator does), invites bob
    and a team with the SDK, then removes herself: the registry is gone from her view."""
    store = emu.store
    store.add_entity("bob", "user")
    team = f"team-{uuid.uuid4().hex[:6]}"
    store.add_team(team, ["carol"])
    reg = wandb.Api().registry("secret", organization=own_org)
    reg.visibility = "restricted"
    reg.save()
    assert store.registry_project(f"{own_org}/secret").members == ["alice"]
    reg.add_members(store.member_id("bob"), store.member_id(team))
    members = wandb.Api().registry("secret", organization=own_org).members()
    assert sorted(m.user.username for m in members if m.kind == "User") == ["alice", "bob"]
    assert [m.team.name for m in members if m.kind == "Entity"] == [team]
    reg.remove_members(store.member_id("alice"))
    assert _registry_names(own_org) == []
    assert store.registry_project(f"{own_org}/secret").members == ["bob", team]


def test_changes_to_a_registry_she_may_not_open_are_refused(emu, own_org):
    """Deletes, renames and tags are writes too: W&B refuses them with a permission error
    once the viewer is not a member, and nothing changes."""
    art = wandb.Api().artifact(f"{own_org}/wandb-registry-secret/c:v0")
    coll = art.collection
    reg = wandb.Api().registry("secret", organization=own_org)
    _access(emu, {"registry": f"{own_org}/secret", "access": "RESTRICTED", "members": ["bob"]})

    def refused(fn) -> bool:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - the SDK wraps it in several types
            chain, cur = [], e
            while cur is not None:
                chain.append(str(cur))
                cur = cur.__cause__ or cur.__context__
            return any("permission denied" in t for t in chain)
        return False

    coll.description = "changed by a non-member"
    assert refused(coll.save)
    assert refused(coll.delete)
    assert refused(lambda: art.delete(delete_aliases=True))
    reg.description = "changed by a non-member"
    assert refused(reg.save)
    assert refused(reg.delete)

    _access(emu, {"registry": f"{own_org}/secret", "add": ["alice"]})
    again = wandb.Api().artifact(f"{own_org}/wandb-registry-secret/c:v0")
    assert again.id == art.id and again.collection.description != "changed by a non-member"
    assert wandb.Api().registry("secret", organization=own_org).description != "changed by a non-member"
