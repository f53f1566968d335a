"""The emulator takes reference artifacts from the real SDK, and the SDK reads them back."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import wandb

from tests.refs.conftest import publish_refs, unique
from wandbfs.sdk.client import WandbClient


def test_sdk_publishes_and_downloads_references(emu, fresh_cache, origin, s3, tmp_path):
    coll = unique("emu-refs")
    local = tmp_path / "local.txt"
    local.write_bytes(b"on local disk\n")
    remote = os.urandom(10_000)
    url = origin.put(f"/{coll}/remote.bin", remote)
    bucket = coll.lower()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="obj.bin", Body=b"in s3\n")
    name = publish_refs(coll, [(f"file://{local}", {}), (url, {}), (f"s3://{bucket}/obj.bin", {})],
                        aliases=["production"], stored={"stored.txt": b"stored\n"}, tmp=tmp_path)

    art = wandb.Api().artifact(f"{name}:production")
    entries = art.manifest.entries
    assert entries["local.txt"].ref == f"file://{local}"
    assert entries["remote.bin"].ref == url and entries["remote.bin"].size == len(remote)
    assert entries["obj.bin"].ref == f"s3://{bucket}/obj.bin" and entries["obj.bin"].extra.get("etag")
    assert entries["stored.txt"].ref is None
    assert sorted(f.name for f in art.files()) == ["local.txt", "obj.bin", "remote.bin", "stored.txt"]
    assert art.size == len(b"on local disk\n") + len(remote) + len(b"in s3\n") + len(b"stored\n")

    root = Path(art.download(str(tmp_path / "dl")))
    assert (root / "local.txt").read_bytes() == b"on local disk\n"
    assert (root / "remote.bin").read_bytes() == remote
    assert (root / "obj.bin").read_bytes() == b"in s3\n"
    assert (root / "stored.txt").read_bytes() == b"stored\n"
    # Reference bytes never come from (or go to) the emulator's storage.
    stored_md5 = hashlib.md5(b"stored\n").hexdigest()
    assert all(stored_md5 in e.path for e in emu.log.entries("blob") + emu.log.entries("upload")
               if not e.path.startswith("/_storage/upload/manifest"))
    assert not any(b.name.endswith(hashlib.md5(remote).hexdigest()[2:]) for b in
                   (emu.store.blobs.root).rglob("*"))

    # The file URLs of a mixed version: a signed URL for the stored file, the reference for the rest.
    client = WandbClient()
    detail = client.version("acme", "model", coll, "v0")
    urls = client.file_urls(detail)
    assert urls["remote.bin"] == url and urls["obj.bin"] == f"s3://{bucket}/obj.bin"
    assert "/_storage/blobs/" in urls["stored.txt"]
