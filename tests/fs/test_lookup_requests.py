"""What a lookup costs in W&B requests on a real mount: a fresh mount resolves a full path in
at most two GraphQL requests; a new mount on a cache that holds a version serves its ``vN``
paths with none, even while W&B hangs.

Counted: the GraphQL requests the emulator receives between the start of the ``stat``/read
and its end, once the mount's start-up loads (the server's features, the org's registries)
have been answered: those run at mount start, before any lookup. ``--org`` names the org,
as the sign-in checks it anyway.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.helpers import wait_for
from wandbfs.emulator import Emulator

COLL = "acme/model/resnet50"


def _graphql(emu: Emulator) -> list[str]:
    return [str(e.operation) for e in emu.log.entries("graphql")]


def _started(emu: Emulator) -> None:
    """Wait until the mount's start-up loads were answered (sign-in's probe and the
    catalog's features check are two ServerFeaturesQuery; then the registries)."""
    def done() -> bool:
        ops = [e for e in emu.log.entries("graphql") if e.done]
        return (any(e.operation == "FetchRegistries" for e in ops)
                and sum(e.operation == "ServerFeaturesQuery" for e in ops) >= 2)
    wait_for(done, timeout=20, what="the mount's start-up loads")


def test_a_fresh_mount_resolves_a_full_path_in_at_most_two_requests(emu, mount, tmp_path):
    for path in (f"{COLL}/production/model.safetensors", f"{COLL}/v1/model.safetensors"):
        cache = tmp_path / f"cache-{len(path)}-{path.split('/')[3]}"
        cache.mkdir()
        emu.log.clear()
        m = mount("--org", "acme", "--no-warm", "--no-lineage", "--cache-dir", str(cache))
        _started(emu)
        emu.log.clear()
        t0 = time.perf_counter()
        st = os.stat(m.path / path)
        took = time.perf_counter() - t0
        ops = _graphql(emu)
        assert st.st_size > 0
        assert len(ops) <= 2, f"stat {path} on a fresh mount made {len(ops)} GraphQL requests: {ops}"
        print(f"stat {path}: {took * 1000:.0f} ms, GraphQL {ops}")
        m.unmount()


def test_a_new_mount_serves_versions_on_disk_with_no_w_and_b_request(emu, mount, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    opts = ("--org", "acme", "--no-lineage", "--cache-dir", str(cache))
    first = mount(*opts)
    v1 = first.path / COLL / "v1"
    want = {str(p.relative_to(v1)): p.read_bytes() for p in sorted(v1.rglob("*")) if p.is_file()}
    assert "model.safetensors" in want
    assert "v1" in os.listdir(first.path / COLL)          # the collection's listing, kept on disk too
    first.unmount()

    m = mount(*opts)
    _started(emu)
    emu.log.clear()
    emu.faults.set([{"route": "graphql", "latency_ms": 20_000}])   # W&B hangs from now on
    t0 = time.perf_counter()
    got = {rel: (m.path / COLL / "v1" / rel).read_bytes() for rel in want}
    took = time.perf_counter() - t0
    assert got == want
    assert _graphql(emu) == [], f"reading cached v1 asked W&B: {_graphql(emu)}"
    assert took < 2.0, f"{took:.1f}s: something waited for W&B"

    # An alias answers from the last known listing at once (and is revalidated behind it).
    t0 = time.perf_counter()
    assert (m.path / COLL / "production/model.safetensors").read_bytes() == want["model.safetensors"]
    assert time.perf_counter() - t0 < 2.0
    # ls of the collection: W&B first (bounded by --lookup-timeout), then the copy on disk.
    assert {"v0", "v1", "v2", "v3", "production"} <= set(os.listdir(m.path / COLL))
    emu.faults.clear()


def test_a_file_looked_up_on_a_fresh_mount_has_its_url_asked_for_beside_the_manifest(emu, mount, tmp_path):
    """``stat``/``open`` of a full path on a fresh mount: the file's signed URL is asked for
    by name while the manifest loads (``Warmups.early_url``), not after it, so the open that
    follows does not wait for one more W&B round trip. Not with ``--no-warm`` (above)."""
    want = {}
    seen = mount("--org", "acme", "--no-lineage", "--cache-dir", str(tmp_path / "seen"))
    want["model.safetensors"] = (seen.path / COLL / "v1/model.safetensors").read_bytes()
    seen.unmount()

    m = mount("--org", "acme", "--no-lineage", "--cache-dir", str(tmp_path / "cache"))
    _started(emu)
    path = m.path / COLL / "v1/model.safetensors"
    emu.faults.set([{"route": "graphql", "latency_ms": 300}])   # each W&B call: one slow round trip
    try:
        emu.log.clear()
        os.stat(path)
        during = _graphql(emu)
        assert "FetchArtifactManifest" in during, during
        assert "ArtifactMembershipFiles" in during, f"the URL was not asked for during the lookup: {during}"
        with open(path, "rb") as f:
            assert f.read() == want["model.safetensors"]
        log = emu.log.entries()
        first_blob = min(e.t for e in log if e.route == "blob")
        before = [str(e.operation) for e in log if e.route == "graphql" and e.t < first_blob]
        # The read's GET went out with the early answer: no other URL request came before it
        # (the version's small files' warm-ups, after the read, may ask for the rest).
        assert [op for op in before if "Url" in op or op == "ArtifactMembershipFiles"] == \
            ["ArtifactMembershipFiles"], before
    finally:
        emu.faults.clear()
