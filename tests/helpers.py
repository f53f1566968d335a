"""Test helpers: publish through the real wandb SDK, and wait on conditions (no sleeps)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable, Mapping, TypeVar

T = TypeVar("T")


def write_tree(root: Path, files: Mapping[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def publish_with_sdk(tmp: Path, collection: str, files: Mapping[str, bytes], aliases: list[str] | None = None,
                     registry: str = "model", org: str = "acme", type_name: str = "model",
                     project: str = "training") -> str:
    """wandb.init -> log_artifact(add_dir) -> link_artifact into the registry -> finish.

    Returns the source artifact's qualified name. Everything goes through the SDK.
    """
    import wandb

    src = write_tree(tmp / f"src-{collection}-{time.monotonic_ns()}", files)
    run = wandb.init(entity="alice", project=project, job_type="train")
    art = wandb.Artifact(f"{collection}-train", type=type_name)
    art.add_dir(str(src))
    run.log_artifact(art)
    run.link_artifact(art, f"{org}/wandb-registry-{registry}/{collection}", aliases=aliases or [])
    run.finish()
    return art.qualified_name if hasattr(art, "qualified_name") else art.name


def publish_two_versions(tmp: Path, collection: str, first: bytes, second: bytes,
                         aliases: list[str] | None = None) -> None:
    """v0 (with ``aliases``, default production) and v1 of one ``w.txt``, through the SDK."""
    import wandb

    publish_with_sdk(tmp, collection, {"w.txt": first}, aliases=aliases or ["production"])
    publish_with_sdk(tmp, collection, {"w.txt": second})
    wandb.teardown()


def move_alias(name: str, alias: str) -> None:
    """Put ``alias`` on the version ``name`` (org/wandb-registry-R/C:vN) with the SDK."""
    import wandb

    art = wandb.Api().artifact(name)
    art.aliases.append(alias)
    art.save()


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def files_digest(files: Mapping[str, bytes]) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())}


def wait_for(cond: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> T:
    """Poll ``cond`` until truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
