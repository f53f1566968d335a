"""Signed URLs by name: the SDK's ``Artifact.files(names=...)`` operation against the emulator,
parsed in the SDK's own models, and the catalog's matching of answers to the files asked for."""

from __future__ import annotations

import hashlib
import urllib.request

import pytest
import trio

from wandbfs.catalog.urls import SignedUrls, match_urls
from wandbfs.model.manifest import parse_manifest
from wandbfs.sdk.client import FileUrl, NotFound, WandbClient

NAMES = ["tokenizer/vocab.txt", "checkpoints/epoch-1/notes.md", "config.json"]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def test_urls_of_named_files_are_those_of_the_whole_listing(emu):
    client = WandbClient()
    detail = client.version("acme", "model", "resnet50", "v0")
    answers = client.file_urls_for(detail, NAMES)
    ops = [e.operation for e in emu.log.entries("graphql")]
    assert ops[-1] == "ArtifactMembershipFiles"
    assert emu.log.entries("graphql")[-1].variables["fileNames"] == NAMES
    # Only what was asked for; named as the SDK's query names them (``name: displayName``,
    # the last component), so the catalog matches them by digest.
    assert sorted(a.name for a in answers) == sorted(n.rsplit("/", 1)[-1] for n in NAMES)
    wanted = {n: detail.manifest.entries[n] for n in NAMES}
    matched = match_urls(wanted, answers)
    assert sorted(matched) == sorted(NAMES)
    whole = client.file_urls(detail)
    for name, url in matched.items():
        entry = detail.manifest.entries[name]
        assert hashlib.md5(_get(url)).hexdigest() == entry.md5_hex == hashlib.md5(_get(whole[name])).hexdigest()
    assert client.file_urls_for(detail, ["no/such/file"]) == []


def test_a_version_named_without_its_manifest_gets_the_same_urls(emu):
    """``version_ref`` names a version for the membership query before its manifest is
    loaded (the early URL of a fresh lookup): the SDK's query answers it as it answers the
    loaded version, and an org whose entity is not known yet gets no ref (no guess)."""
    client = WandbClient()
    client.registries("acme")                     # the org's entity, as a mount's start learns it
    ref = client.version_ref("acme", "model", "resnet50", 0)
    assert ref is not None and ref.project == "wandb-registry-model"
    early = client.file_urls_for(ref, NAMES)
    detail = client.version("acme", "model", "resnet50", "v0")
    wanted = {n: detail.manifest.entries[n] for n in NAMES}
    assert sorted(match_urls(wanted, early)) == sorted(NAMES)
    for name, url in match_urls(wanted, early).items():
        assert hashlib.md5(_get(url)).hexdigest() == wanted[name].md5_hex
    assert WandbClient().version_ref("acme", "model", "resnet50", 0) is None


def test_answers_are_matched_by_path_else_by_digest():
    m = parse_manifest({"version": 1, "contents": {
        "a/x.bin": {"digest": "XrY7u+Ae7tCTyyK7j1rNww==", "size": 1},
        "b/x.bin": {"digest": "1B2M2Y8AsgTpgAmY7PhCfg==", "size": 0}}})
    wanted = dict(m.entries)
    # A server that names files by their last component: the digest says which is which.
    got = match_urls(wanted, [FileUrl("x.bin", "1B2M2Y8AsgTpgAmY7PhCfg==", "u-b"),
                              FileUrl("x.bin", "XrY7u+Ae7tCTyyK7j1rNww==", "u-a")])
    assert got == {"a/x.bin": "u-a", "b/x.bin": "u-b"}
    assert match_urls(wanted, [FileUrl("a/x.bin", None, "u")]) == {"a/x.bin": "u"}
    assert match_urls(wanted, []) == {}


class _Client:
    """A version of 5,000 files: counts what is asked, by name or whole."""

    def __init__(self) -> None:
        self.by_name: list[list[str]] = []
        self.whole = 0

    def file_urls_for(self, detail, names):
        self.by_name.append(list(names))
        return [FileUrl(n, None, f"url:{n}:{len(self.by_name)}") for n in names]

    def file_urls(self, detail):
        self.whole += 1
        return {p: f"whole:{p}" for p in detail.manifest.entries}


async def _direct(fn, *args):
    """The catalog's gate, for a fake client: the call, in the trio thread."""
    return fn(*args)


def _detail(n: int):
    from wandbfs.sdk.client import VersionDetail

    contents = {f"d/f{i:05d}": {"digest": "1B2M2Y8AsgTpgAmY7PhCfg==", "size": 0} for i in range(n)}
    return VersionDetail("acme", "model", "big", 0, "art", "e", "p", 0.0, (),
                         parse_manifest({"version": 1, "contents": contents}), {})


def test_a_large_version_asks_for_the_file_and_its_neighbours_and_refreshes_one():
    client = _Client()
    detail = _detail(5000)

    async def main() -> None:
        urls = SignedUrls(client, _direct)  # type: ignore[arg-type]
        assert await urls.url(detail, "d/f00010") == "url:d/f00010:1"
        assert client.by_name == [[f"d/f{i:05d}" for i in range(10, 10 + SignedUrls.BATCH)]]
        assert await urls.url(detail, "d/f00011") == "url:d/f00011:1"   # a neighbour: no request
        assert len(client.by_name) == 1
        assert await urls.url(detail, "d/f00011", refresh=True) == "url:d/f00011:2"
        assert client.by_name[-1][0] == "d/f00011" and client.whole == 0
        async with trio.open_nursery() as n:   # files asked for together share requests
            for i in range(0, 5000, 500):
                n.start_soon(urls.url, detail, f"d/f{i:05d}")
        assert len(client.by_name) <= 2 + 10 and client.whole == 0
        assert max(len(b) for b in client.by_name[:SignedUrls.BATCH_AFTER]) <= SignedUrls.BATCH
        # A reader going through the version: larger batches after the first requests.
        for i in range(0, 5000, 7):
            await urls.url(detail, f"d/f{i:05d}")
        assert max(len(b) for b in client.by_name) <= SignedUrls.BATCH_LATER
        assert len(client.by_name) <= SignedUrls.BATCH_AFTER + 5000 // SignedUrls.BATCH_LATER + 3
        asked = len(client.by_name)
        with pytest.raises(NotFound):        # a name not in the manifest is never asked for
            await urls.url(detail, "d/nope")
        assert len(client.by_name) == asked and client.whole == 0
    trio.run(main)


def test_a_small_version_is_listed_whole_once():
    client = _Client()
    detail = _detail(50)

    async def main() -> None:
        urls = SignedUrls(client, _direct)  # type: ignore[arg-type]
        for i in range(50):
            assert await urls.url(detail, f"d/f{i:05d}") == f"whole:d/f{i:05d}"
        assert client.whole == 1 and client.by_name == []
    trio.run(main)


def test_an_early_answer_is_taken_by_the_first_url_call_and_a_failed_one_falls_back():
    """``early``: the looked-up file's URL asked for before the manifest is at hand; the
    version's first ``url`` call takes it (no second request for that file), other files go
    the usual way, and an early request that failed costs only itself."""
    class Early(_Client):
        fail = False

        def version_ref(self, org, reg, coll, idx):
            from wandbfs.sdk.client import VersionRef
            return VersionRef("e", "p", coll, idx, f"{org}/{reg}/{coll}:v{idx}")

        def file_urls_for(self, detail, names):
            if self.fail:
                raise RuntimeError("W&B refused")
            return super().file_urls_for(detail, names)

    client = Early()
    detail = _detail(50)

    async def main() -> None:
        urls = SignedUrls(client, _direct)  # type: ignore[arg-type]
        async with trio.open_nursery() as n:
            urls.early("acme", "model", "big", 0, "d/f00003", n)
            urls.early("acme", "model", "big", 0, "d/f00003", n)      # one request per version
        assert client.by_name == [["d/f00003"]]
        assert await urls.url(detail, "d/f00003") == "url:d/f00003:1"
        assert client.whole == 0
        assert await urls.url(detail, "d/f00004") == "whole:d/f00004"   # the rest: the usual way
        client.fail = True
        other = _detail(50)
        other = type(other)(**{**other.__dict__, "index": 1, "artifact_id": "art1"})
        async with trio.open_nursery() as n:
            urls.early("acme", "model", "big", 1, "d/f00001", n)
        assert await urls.url(other, "d/f00001") == "whole:d/f00001"
        assert client.whole == 2
    trio.run(main)
