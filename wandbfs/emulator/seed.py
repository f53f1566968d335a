"""Publishing straight into the Store, for demo data and large fixtures.

This does what the SDK's log_artifact + link_artifact do over GraphQL (create, upload by
md5, manifest, commit, link), minus the network, so a demo registry with a 64 MiB file
and a 1,000-file version appears in about a second. Tests that prove the W&B path publish
through the real SDK instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from typing import Mapping

from wandbfs.emulator.records import Artifact, Membership
from wandbfs.emulator.store import Store

SOURCE_ENTITY = "alice"
SOURCE_PROJECT = "demo-source"
PUBLISHER_RUN = "demo-publisher"   # the run seeded versions are logged by


def manifest_digest(contents: Mapping[str, Mapping[str, object]]) -> str:
    """The artifact digest W&B computes over a manifest (see wandb's artifact_manifest_v1)."""
    h = hashlib.md5(b"wandb-artifact-manifest-v1\n")
    for path in sorted(contents):
        h.update(f"{path}:{contents[path]['digest']}\n".encode())
    return h.hexdigest()


def publish(store: Store, org: str, registry: str, collection: str, files: Mapping[str, bytes],
            aliases: list[str] | None = None, type_name: str = "model",
            metadata: dict[str, object] | None = None, source: str | None = None) -> tuple[Artifact, Membership]:
    """Publish one version of ``files`` into ``org/wandb-registry-<registry>/<collection>``."""
    contents: dict[str, dict[str, object]] = {}
    for path, data in files.items():
        md5hex = store.blobs.put(data)
        contents[path] = {"digest": base64.b64encode(bytes.fromhex(md5hex)).decode(), "size": len(data)}
    digest = manifest_digest(contents)
    # Logged by a run, as log_artifact does: W&B's Artifact.createdBy is never null.
    store.upsert_run(SOURCE_ENTITY, SOURCE_PROJECT, PUBLISHER_RUN, state="finished", job_type="publish")
    art = store.create_artifact(entity=SOURCE_ENTITY, project=SOURCE_PROJECT,
                                collection=source or f"{collection}-source", type_name=type_name, digest=digest,
                                metadata=json.dumps(metadata or {}), run=PUBLISHER_RUN)
    for entry in contents.values():
        entry["birthArtifactID"] = art.id
    manifest = {"version": 1, "storagePolicy": "wandb-storage-policy-v1",
                "storagePolicyConfig": {"storageLayout": "V2"}, "contents": contents}
    store.set_manifest(art.id, json.dumps(manifest, sort_keys=True).encode())
    store.commit_artifact(art.id)
    o = store.orgs[org]
    m = store.link(art.id, o.entity, "wandb-registry-" + registry, collection, aliases or [])
    return art, m


def _text(rng: random.Random, n: int) -> bytes:
    words = ["alpha", "beta", "gamma", "delta", "weights", "tensor", "layer", "token"]
    return (" ".join(rng.choice(words) for _ in range(n)) + "\n").encode()


def seed_demo(store: Store) -> bool:
    """Org ``acme`` with registries ``model``, ``dataset`` and ``Fine-tuned Models``.

    Returns False when the demo data is already there (seeding is idempotent).
    """
    if "acme" in store.orgs and store.project("acme-org", "wandb-registry-model"):
        return False
    rng = random.Random(42)
    store.add_org("acme")
    store.create_registry("acme", "model", description="Production model weights")
    store.create_registry("acme", "dataset", description="Curated datasets")
    store.create_registry("acme", "Fine-tuned Models", description="A registry whose name has a space")

    for i in range(4):
        files = {
            "config.json": json.dumps({"arch": "resnet50", "lr": 0.1 / (i + 1), "version": i}).encode(),
            "model.safetensors": rng.randbytes(256 * 1024 + i),
            "tokenizer/vocab.txt": _text(rng, 200),
            "checkpoints/epoch-1/notes.md": f"# resnet50 v{i}\n".encode(),
        }
        if i == 3:
            files["model.safetensors"] = rng.randbytes(64 * 1024 * 1024)  # one large file
        aliases = {1: ["production"], 2: ["staging"]}.get(i, [])
        publish(store, "acme", "model", "resnet50", files, aliases, metadata={"epochs": 10 * (i + 1)})
    for i in range(3):
        publish(store, "acme", "model", "bert-base",
                {"pytorch_model.bin": rng.randbytes(32 * 1024), "config.json": b'{"hidden": 768}\n',
                 f"README-v{i}.md": _text(rng, 30)},
                {0: ["production"], 1: ["staging"]}.get(i, []))
    for i in range(3):
        files = {f"train/part-{k:03d}.csv": _text(rng, 50) for k in range(5 + i)}
        files["splits/val/labels.csv"] = _text(rng, 20)
        if i == 2:  # one version with 1,000 small files
            files = {f"images/class-{k % 10}/img-{k:04d}.txt": f"sample {k}\n".encode() for k in range(1000)}
        publish(store, "acme", "dataset", "imagenet-mini", files,
                {0: ["production"], 1: ["staging"]}.get(i, []), type_name="dataset")
    for i in range(3):
        publish(store, "acme", "dataset", "squad",
                {"train.jsonl": _text(rng, 100), "dev.jsonl": _text(rng, 40 + i)},
                {1: ["production"], 2: ["staging"]}.get(i, []), type_name="dataset")
    for i in range(3):
        publish(store, "acme", "Fine-tuned Models", "llama-ft",
                {"adapter/adapter_model.safetensors": rng.randbytes(16 * 1024),
                 "adapter/adapter_config.json": json.dumps({"r": 8 * (i + 1)}).encode()},
                {0: ["production"], 2: ["staging"]}.get(i, []))
    return True
