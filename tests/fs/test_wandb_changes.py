"""What happens on W&B while a mount is up: versions deleted, collections renamed, access
refused, requests throttled. Each change is made by the real SDK against the emulator, as a
user beside the mount would make it; the mount is read with ordinary file calls."""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import pytest
import wandb

from tests.fs.conftest import run_cli
from tests.helpers import wait_for
from wandbfs.emulator.seed import publish

MiB = 1 << 20


def _collection(emulator, n: int = 3, size: int = 2 * MiB) -> tuple[str, list[bytes]]:
    """A fresh registry collection with ``n`` one-file versions (v0..v{n-1})."""
    name = f"changes-{uuid.uuid4().hex[:8]}"
    bodies = [random.Random(f"{name}{i}").randbytes(size + i) for i in range(n)]
    for body in bodies:
        publish(emulator.store, "acme", "model", name, {"weights.bin": body})
    return name, bodies


def _missing(path: Path) -> bool:
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    return False


def test_a_deleted_version_goes_after_the_listing_ttl_and_open_files_keep_reading(emu, mount):
    name, bodies = _collection(emu)
    m = mount("--no-lineage", "--list-ttl", "1", "--alias-ttl", "1")
    coll = m.path / "acme/model" / name
    assert {"v0", "v1", "v2"} <= set(os.listdir(coll))
    fd = os.open(coll / "v1/weights.bin", os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 0) == bodies[1][:4096]
        wandb.Api().artifact(f"acme/wandb-registry-model/{name}:v1").delete()   # from a collection: an unlink
        wait_for(lambda: "v1" not in os.listdir(coll) and _missing(coll / "v1"), timeout=20,
                 what="v1 to disappear from the mount")
        assert {"v0", "v2"} <= set(os.listdir(coll))              # the others keep their numbers
        assert (coll / "v2/weights.bin").read_bytes() == bodies[2]
        got = b"".join(os.pread(fd, MiB, off) for off in range(0, len(bodies[1]), MiB))
        assert got == bodies[1]                                    # the open file reads on, whole and right
    finally:
        os.close(fd)


def test_refresh_drops_a_deleted_version_at_once(emu, mount):
    name, bodies = _collection(emu)
    m = mount("--no-lineage")                                      # default TTLs: a minute
    coll = m.path / "acme/model" / name
    assert (coll / "v0/weights.bin").read_bytes() == bodies[0]
    assert os.stat(coll / "v0").st_mode                            # the kernel now holds the entry
    wandb.Api().artifact(f"acme/wandb-registry-model/{name}:v0").delete()
    r = run_cli(["refresh", str(m.path), f"acme/model/{name}"], m.env)
    assert r.returncode == 0, r.stderr
    assert _missing(coll / "v0")
    assert "v0" not in os.listdir(coll) and {"v1", "v2"} <= set(os.listdir(coll))


def test_a_renamed_collection_appears_under_its_new_name(emu, mount):
    name, bodies = _collection(emu, n=1)
    m = mount("--no-lineage")
    reg = m.path / "acme/model"
    assert (reg / name / "v0/weights.bin").read_bytes() == bodies[0]
    coll = wandb.Api().artifact_collection("model", f"acme/wandb-registry-model/{name}")
    coll.name = f"{name}-renamed"
    coll.save()
    r = run_cli(["refresh", str(m.path), "acme/model"], m.env)
    assert r.returncode == 0, r.stderr
    assert (reg / f"{name}-renamed" / "v0/weights.bin").read_bytes() == bodies[0]
    assert f"{name}-renamed" in os.listdir(reg) and name not in os.listdir(reg)
    assert _missing(reg / name)


@pytest.mark.timeout(120)
def test_storage_429_is_retried_after_retry_after(emu, mount):
    name, bodies = _collection(emu, n=1, size=MiB)
    m = mount("--no-lineage", "--no-warm", "--read-timeout", "10")
    path = m.path / "acme/model" / name / "v0/weights.bin"
    os.stat(path)
    emu.log.clear()
    emu.faults.set([{"route": "blob", "status": 429, "retry_after": 2, "times": 1}])
    assert path.read_bytes() == bodies[0]
    gets = [e for e in emu.log.entries("blob") if e.method == "GET"]
    assert gets[0].status == 429 and gets[1].status in (200, 206)
    assert gets[1].t - gets[0].t >= 1.9                     # waited as asked, not our 0.2 s backoff


@pytest.mark.timeout(120)
def test_graphql_429_is_retried_after_retry_after(emu, mount):
    name, bodies = _collection(emu, n=1, size=4096)
    m = mount("--no-lineage", "--no-warm")
    emu.faults.set([{"route": "graphql", "status": 429, "retry_after": 2, "times": 1}])
    emu.log.clear()
    assert (m.path / "acme/model" / name / "v0/weights.bin").read_bytes() == bodies[0]
    answers = emu.log.entries("graphql")
    throttled = [e for e in answers if e.status == 429]
    assert len(throttled) == 1
    after = [e for e in answers if e.t > throttled[0].t and e.status == 200]
    assert after and after[0].t - throttled[0].t >= 1.9


@pytest.mark.timeout(120)
def test_a_registry_the_key_may_not_open_is_eacces(emu, mount):
    reg = f"secret-{uuid.uuid4().hex[:6]}"
    project = emu.store.create_registry("acme", reg)
    publish(emu.store, "acme", reg, "hidden", {"a.txt": b"classified\n"})
    publish(emu.store, "acme", reg, "seen", {"b.txt": b"read before\n"})
    m = mount("--no-lineage", "--list-ttl", "1", "--negative-ttl", "1")
    seen = m.path / "acme" / reg / "seen/v0/b.txt"
    assert seen.read_bytes() == b"read before\n"
    emu.store.set_project_access(project, "RESTRICTED", ["bob"])
    emu.store.set_project_access(project, remove=["alice"])
    try:
        def refused(path: Path) -> bool:
            try:
                path.read_bytes()
            except PermissionError:
                return True
            except OSError:
                return False
            return False
        # named while the registry's listing still has it, and after the listing leaves it out
        assert refused(m.path / "acme" / reg / "hidden/v0/a.txt")
        wait_for(lambda: reg not in os.listdir(m.path / "acme"), timeout=20, what="the registry to leave the listing")
        assert refused(m.path / "acme" / reg / "hidden/v0/a.txt")
        assert seen.read_bytes() == b"read before\n"      # what this mount read stays readable
        with pytest.raises(FileNotFoundError):             # a registry nobody made is still ENOENT
            os.stat(m.path / "acme" / f"nothing-{reg}")
        assert "W&B denies this API key access" in m.log
    finally:
        emu.store.set_project_access(project, add=["alice"])


@pytest.mark.timeout(120)
def test_whether_a_registry_is_closed_is_asked_once_per_list_ttl(emu, mount):
    """A collection name W&B does not have makes the mount ask whether the registry is
    closed to the key (EACCES, not ENOENT); that answer is kept --list-ttl, so a reader
    probing many missing names costs one such question, not one each."""
    m = mount("--no-lineage", "--no-warm")
    os.listdir(m.path / "acme/model")
    emu.log.clear()
    for i in range(4):
        with pytest.raises(FileNotFoundError):
            os.stat(m.path / "acme/model" / f"none-{uuid.uuid4().hex[:6]}-{i}")
    asked = [e for e in emu.log.entries("graphql") if e.operation == "FetchRegistry"]
    assert len(asked) == 1, [e.variables for e in asked]

