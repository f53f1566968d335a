"""A real mount, read with ordinary tools; content published with the real SDK."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import wandb

from tests.fs.conftest import blob_gets
from tests.helpers import files_digest, publish_with_sdk, tree_digest, wait_for

FILES = {
    "model.safetensors": os.urandom(300_000),
    "config.json": b'{"layers": 50}\n',
    "tokenizer/vocab.txt": b"a\nb\nc\n",
    "tokenizer/merges/merges.txt": b"a b\n",
    "deep/er/still/deeper.bin": os.urandom(5000),
    "empty.txt": b"",
}


@pytest.fixture(scope="module")
def fs_published(emulator, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pub")
    publish_with_sdk(tmp, "fs-tree", FILES, aliases=["production"])
    publish_with_sdk(tmp, "fs-tree", {"model.safetensors": b"second version\n"}, aliases=["staging"])
    wandb.teardown()
    return "acme/wandb-registry-model/fs-tree"


def test_listing_at_every_level(emu, mount, fs_published):
    m = mount()
    root = m.path
    listed = os.listdir(root)
    mine = sorted(o.name for o in emu.store.orgs_of("alice"))   # the orgs the key's user belongs to
    assert sorted(n for n in listed if not n.startswith("@")) == mine and "acme" in listed
    assert "@alice" in listed                        # the viewer's entity: its project artifacts
    assert {"model", "dataset", "Fine-tuned Models"} <= set(os.listdir(root / "acme"))
    assert {"resnet50", "bert-base", "fs-tree"} <= set(os.listdir(root / "acme/model"))
    coll = root / "acme/model/fs-tree"
    assert sorted(os.listdir(coll)) == ["latest", "production", "staging", "v0", "v1"]
    assert os.readlink(coll / "production") == str(coll / "v0")   # absolute: a copied link still reaches it
    assert os.path.basename(os.readlink(coll / "latest")) == "v1" and os.path.basename(os.readlink(coll / "staging")) == "v1"
    assert (coll / "v0").is_dir() and not (coll / "v0").is_symlink()
    assert sorted(os.listdir(coll / "v0")) == ["config.json", "deep", "empty.txt", "model.safetensors", "tokenizer"]
    assert os.listdir(root / "acme/Fine-tuned Models/llama-ft/production/adapter")
    st = os.stat(coll / "v0/model.safetensors")
    assert st.st_size == 300_000 and st.st_mode & 0o777 == 0o444 and st.st_blksize == 1 << 20
    assert os.stat(coll / "v0").st_mode & 0o777 == 0o555
    assert os.stat(coll / "v0/model.safetensors").st_ino == os.stat(coll / "production/model.safetensors").st_ino


def test_tools_see_the_published_bytes_and_tree(mount, fs_published, tmp_path, fresh_cache):
    m = mount()
    v0 = m.path / "acme/model/fs-tree/production"
    assert tree_digest(v0) == files_digest(FILES)
    out = subprocess.run(["sha256sum", "model.safetensors", "deep/er/still/deeper.bin"], cwd=v0,
                         capture_output=True, text=True, check=True).stdout
    assert hashlib.sha256(FILES["model.safetensors"]).hexdigest() in out
    subprocess.run(["cp", "-r", str(v0) + "/", str(tmp_path / "copy")], check=True)  # production/ follows the alias
    assert tree_digest(tmp_path / "copy") == files_digest(FILES)
    found = subprocess.run(["find", ".", "-type", "f"], cwd=v0, capture_output=True, text=True, check=True).stdout
    assert sorted(p[2:] for p in found.split()) == sorted(FILES)
    du = int(subprocess.run(["du", "-sb", "--apparent-size", str(v0) + "/"], capture_output=True, text=True,
                            check=True).stdout.split()[0])
    assert du >= sum(len(v) for v in FILES.values())
    walked = {os.path.relpath(os.path.join(d, f), v0) for d, _, fs in os.walk(v0) for f in fs}
    assert walked == set(FILES)
    sdk_dir = Path(wandb.Api().artifact(f"{fs_published}:production").download(str(tmp_path / "sdk")))
    assert tree_digest(sdk_dir) == tree_digest(v0)


def test_no_blob_fetched_before_a_read(emu, mount, fs_published, fresh_cache):
    m = mount("--cache-dir", str(fresh_cache), "--no-warm")
    subprocess.run(["ls", "-lR", str(m.path / "acme/model/fs-tree")], check=True, capture_output=True)
    os.stat(m.path / "acme/model/fs-tree/v0/model.safetensors")
    assert blob_gets(emu) == []
    assert (m.path / "acme/model/fs-tree/v0/config.json").read_bytes() == FILES["config.json"]
    assert len(blob_gets(emu)) == 1


def test_warm_up_fetches_a_versions_small_files_after_the_first_open(emu, mount, fs_published, fresh_cache):
    m = mount("--cache-dir", str(fresh_cache))
    subprocess.run(["ls", "-lR", str(m.path / "acme/model/fs-tree")], check=True, capture_output=True)
    assert blob_gets(emu) == []  # listings warm manifests and URLs, never bytes
    assert (m.path / "acme/model/fs-tree/v0/config.json").read_bytes() == FILES["config.json"]
    wait_for(lambda: len({g.path for g in blob_gets(emu)}) == len({v for v in FILES.values() if v}),
             timeout=20, what="the version's other small files to be fetched")
    emu.log.clear()
    assert tree_digest(m.path / "acme/model/fs-tree/v0") == files_digest(FILES)
    assert blob_gets(emu) == []


def test_name_based_paths(mount, fs_published):
    m = mount()
    reg = m.path / "acme/wandb-registry-model"
    assert (reg / "fs-tree:production/config.json").read_bytes() == FILES["config.json"]
    assert (reg / "fs-tree:v1/model.safetensors").read_bytes() == b"second version\n"
    assert (reg / "fs-tree:latest/model.safetensors").read_bytes() == b"second version\n"
    assert os.readlink(m.path / "acme/wandb-registry-model") == str(m.path / "acme/model")
    assert "wandb-registry-model" not in os.listdir(m.path / "acme")
    assert not any(":" in n for n in os.listdir(reg))
    assert (m.path / "acme/wandb-registry-Fine-tuned Models/llama-ft:production/adapter").is_dir()


def test_writes_are_refused_with_erofs(mount, fs_published):
    m = mount()
    v0 = m.path / "acme/model/fs-tree/v0"
    attempts = [
        lambda: open(v0 / "config.json", "r+b"),
        lambda: open(v0 / "new.txt", "wb"),
        lambda: os.mkdir(v0 / "d"),
        lambda: os.rename(v0 / "config.json", v0 / "c2.json"),
        lambda: os.unlink(v0 / "config.json"),
        lambda: os.rmdir(v0 / "tokenizer"),
        lambda: os.chmod(v0 / "config.json", 0o644),
        lambda: os.truncate(v0 / "config.json", 0),
        lambda: os.setxattr(v0 / "config.json", "user.x", b"1"),
        lambda: os.symlink("x", v0 / "lnk"),
        lambda: os.mkdir(m.path / "acme/newreg"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as ei:
            attempt()
        assert ei.value.errno == errno.EROFS, attempt
    assert (v0 / "config.json").read_bytes() == FILES["config.json"]


def test_unknown_names_are_enoent_and_misses_are_cached(emu, mount, fs_published):
    m = mount("--no-warm")  # no background requests to blur the count
    for p in ["nope", "acme/nope", "acme/model/nope", "acme/model/fs-tree/v9", "acme/model/fs-tree/no-alias",
              "acme/model/fs-tree/v0/nope.txt", "acme/model/fs-tree/v0/tokenizer/nope",
              "acme/wandb-registry-model/fs-tree:nope", "acme/wandb-registry-nope", "acme/model/nope:v0"]:
        with pytest.raises(FileNotFoundError):
            os.stat(m.path / p)
    emu.log.clear()
    for _ in range(200):
        for p in ["acme/model/fs-tree/v0/nope.txt", "acme/model/fs-tree/v9", "acme/model/nope"]:
            with pytest.raises(FileNotFoundError):
                os.stat(m.path / p)
    assert emu.log.entries("graphql") == []


@pytest.mark.parametrize("verify,gets", [("stream", 1), ("strict", 2)])
def test_corrupt_bytes_are_never_served(emu, mount, fs_published, fresh_cache, verify, gets):
    """strict: refetched once, then EIO, nothing served. stream: the read reaching EOF fails."""
    m = mount("--cache-dir", str(fresh_cache), "--verify", verify, "--no-warm")
    emu.faults.set([{"route": "blob", "corrupt": True}])
    with pytest.raises(OSError) as ei:
        (m.path / "acme/model/fs-tree/v0/model.safetensors").read_bytes()
    assert ei.value.errno == errno.EIO
    wait_for(lambda: len(blob_gets(emu)) == gets, timeout=5, what=f"{gets} blob GETs")
    assert not any(p.is_file() for p in (fresh_cache / "artifacts/obj").rglob("*"))
    assert not any((fresh_cache / "artifacts/tmp").iterdir())
    emu.faults.clear()
    # The object was purged (and its pages dropped): a later open fetches again, correctly.
    assert (m.path / "acme/model/fs-tree/v0/model.safetensors").read_bytes() == FILES["model.safetensors"]


def test_streaming_never_completes_a_whole_file_read_on_wrong_bytes(emu, mount, fresh_cache):
    m = mount("--cache-dir", str(fresh_cache))
    emu.faults.set([{"route": "blob", "corrupt": True}])
    r = subprocess.run(["cat", str(m.path / "acme/model/resnet50/v3/model.safetensors")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert r.returncode != 0 and "Input/output error" in r.stderr
    r = subprocess.run(["sha256sum", str(m.path / "acme/model/resnet50/v3/model.safetensors")],
                       capture_output=True, text=True)
    assert r.returncode != 0  # the same failed object is not served from the page cache either
    emu.faults.clear()


def test_expired_signed_urls_are_refreshed_not_reported(emu, mount, fs_published, fresh_cache):
    m = mount("--cache-dir", str(fresh_cache), "--no-warm")
    v0 = m.path / "acme/model/fs-tree/v0"
    old = emu.signer.lifetime_s
    emu.signer.lifetime_s = 1
    try:
        # the mount now holds v0's URLs (under load one may expire before its GET: refreshed too)
        assert (v0 / "config.json").read_bytes() == FILES["config.json"]
        probe = emu.signer.sign(emu.url, "/probe")  # signed after the mount's URLs: expires no earlier
        path, query = probe[len(emu.url):].split("?")
        wait_for(lambda: emu.signer.check(path, query) is not None, timeout=5, what="URLs to expire")
        emu.log.clear()
        assert (v0 / "tokenizer/vocab.txt").read_bytes() == FILES["tokenizer/vocab.txt"]
        statuses = [e.status for e in blob_gets(emu)]
        assert statuses == [403, 200]  # refused once, refreshed, served
    finally:
        emu.signer.lifetime_s = old


def test_versions_linked_from_several_sources_keep_the_collections_numbers(emu, mount):
    from wandbfs.emulator.seed import publish

    for i, source in enumerate(["run-a", "run-a", "run-b", "run-c"]):
        publish(emu.store, "acme", "model", "mixed-sources", {"id.txt": f"registry v{i}\n".encode()},
                ["production"] if i == 2 else [], source=source)
    m = mount("--no-lineage")
    coll = m.path / "acme/model/mixed-sources"
    assert sorted(n for n in os.listdir(coll) if n.startswith("v")) == ["v0", "v1", "v2", "v3"]
    for i in range(4):
        assert (coll / f"v{i}/id.txt").read_bytes() == f"registry v{i}\n".encode()
    assert os.path.basename(os.readlink(coll / "production")) == "v2" and os.path.basename(os.readlink(coll / "latest")) == "v3"
    assert (coll / "latest/id.txt").read_bytes() == b"registry v3\n"
