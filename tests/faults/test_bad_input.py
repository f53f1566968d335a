"""Bad manifests and odd names through a real mount: bad entries are skipped with a log
line, the good ones read back right, odd (but legal) names work like any other."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import subprocess

import pytest

from tests.faults.test_fault_matrix import record
from wandbfs.emulator.seed import publish

GOOD = {"ok.txt": b"fine\n", "dir with space/übung.txt": "ü\n".encode(), "clash/inner.txt": b"inner\n"}
LONG = "x" * 300 + ".txt"


def _entry(store, data: bytes) -> dict[str, object]:
    return {"digest": base64.b64encode(bytes.fromhex(store.blobs.put(data))).decode(), "size": len(data)}


@pytest.fixture(scope="module")
def bad_version(emulator):
    """One version whose manifest has every kind of bad path next to good ones."""
    store = emulator.store
    good = {p: _entry(store, d) for p, d in GOOD.items()}
    bad = {"../escape.txt": _entry(store, b"escape"), "/etc/abs.txt": _entry(store, b"abs"),
           "a//b.txt": _entry(store, b"empty segment"), "nul\u0000.txt": _entry(store, b"nul"),
           LONG: _entry(store, b"long"), "clash": _entry(store, b"a file where a folder is"),
           "./dot.txt": _entry(store, b"dot")}
    contents = {**good, **bad}
    # duplicate keys cannot be made with a dict: splice one into the JSON text
    body = json.dumps({"version": 1, "storagePolicy": "wandb-storage-policy-v1",
                       "storagePolicyConfig": {"storageLayout": "V2"}, "contents": contents})
    dup = json.dumps(_entry(store, b"first copy of ok"))
    body = body.replace('"contents": {', '"contents": {"ok.txt": ' + dup + ", ", 1)
    art = store.create_artifact(entity="alice", project="demo-source", collection="broken-source",
                                type_name="model", digest=hashlib.md5(body.encode()).hexdigest(), metadata="{}")
    store.set_manifest(art.id, body.encode())
    store.commit_artifact(art.id)
    store.link(art.id, store.orgs["acme"].entity, "wandb-registry-model", "broken", ["production"])
    return "acme/model/broken/production"


def test_bad_manifest_entries_are_skipped_and_logged_good_ones_served(emu, mount, bad_version):
    m = mount()
    d = m.path / bad_version
    names = sorted(os.listdir(d))
    assert names == ["clash", "dir with space", "ok.txt"]          # nothing bad is listed
    assert os.listdir(d / "clash") == ["inner.txt"]                 # the folder wins the clash
    for path, data in GOOD.items():
        assert (d / path).read_bytes() == data                      # later duplicate wins for ok.txt
    out = subprocess.run(["find", str(d) + "/", "-type", "f"], capture_output=True, text=True, check=True).stdout
    assert sorted(os.path.relpath(p, d) for p in out.split("\n") if p) == sorted(GOOD)
    for bad in ["escape.txt", "abs.txt", "dot.txt", "b.txt"]:
        assert not (d / bad).exists()
    with pytest.raises(OSError) as e:
        (d / LONG).stat()
    assert e.value.errno in (errno.ENOENT, errno.ENAMETOOLONG)
    log = m.log
    for reason in ["'../escape.txt'", "'/etc/abs.txt'", "'a//b.txt'", "nul", "'./dot.txt'", "duplicate",
                   "clash"]:
        assert reason in log, reason
    assert "skipping entry" in log and (d / "ok.txt").read_bytes() == b"fine\n"   # alive
    record("manifest with .., absolute, empty segment, NUL, 300-byte name, ./, duplicate, "
           "file/folder clash", len(GOOD) + 5, 0,
           "bad entries not listed (ENOENT / ENAMETOOLONG), each logged; good entries ok")


ODD_ORG, ODD_REG, ODD_COLL = "Zürich Lab", "Modèles Été", "résumé net v2"


@pytest.fixture(scope="module")
def odd_names(emulator):
    store = emulator.store
    store.add_org(ODD_ORG, entity="zurich-lab-org")
    store.create_registry(ODD_ORG, ODD_REG)
    files = {"poids ü.bin": os.urandom(5000), "日本語/説明.md": "こんにちは\n".encode()}
    publish(store, ODD_ORG, ODD_REG, ODD_COLL, files, ["prod ü"])
    return files


def test_org_registry_collection_alias_with_spaces_and_non_ascii(emu, mount, odd_names):
    m = mount()
    assert ODD_ORG in os.listdir(m.path)
    coll = m.path / ODD_ORG / ODD_REG / ODD_COLL
    assert sorted(os.listdir(coll)) == ["latest", "prod ü", "v0"]
    assert os.path.basename(os.readlink(coll / "prod ü")) == "v0"
    for path, data in odd_names.items():
        assert (coll / "prod ü" / path).read_bytes() == data
    # the registry's project name and the SDK's name:alias spelling work as paths too
    alt = m.path / ODD_ORG / f"wandb-registry-{ODD_REG}" / f"{ODD_COLL}:prod ü" / "poids ü.bin"
    assert alt.read_bytes() == odd_names["poids ü.bin"]
    record("org, registry, collection and alias names with spaces and non-ASCII letters", 3, 0, "all ok")
