"""The FUSE layer's small parts: typed nodes (keys, inodes), the miss list, the alias-through
map, open handles on nodes, the errno table and the guard's log lines. Pure, no mount."""

from __future__ import annotations

import dataclasses
import errno
import logging
import stat

import pyfuse3
import pytest
import trio

import wandbfs.fill.errors as fill_errors
from wandbfs.fill.errors import (BadBytes, FetchError, NoSpace, RefChanged, RefDenied, Transient, Unsupported,
                                 UrlRefused)
from wandbfs.fuse.errors import UNEXPECTED, errno_of, outcome_of
from wandbfs.fuse.handles import Handles
from wandbfs.fuse.inodes import InodeTable, inode_for
from wandbfs.fuse.misses import Misses
from wandbfs.fuse.nodes import (AliasLink, Collection, Folder, Org, QualifiedLink, Redirect, Registry, RegistryPrefixLink,
                                Root, TypeDir, VersionDir)
from wandbfs.fuse.ops import WandbFS
from wandbfs.fuse.via import AliasVia
from wandbfs.model.manifest import ManifestEntry
from wandbfs.sdk.client import AuthError, BackendError, NotFound, Unreachable

ENTRY = ManifestEntry("a/b.txt", "digest==", 12)
V3 = VersionDir("acme", "model", "resnet", 3)

# Inode numbers as the mount served them before nodes were typed (commit ec8400d): the same
# object must keep its st_ino across versions of wandbfs, not only across mounts.
BEFORE = [
    (Root(), ("root",), None),
    (Org("acme"), ("org", "acme"), 836251224504983854),
    (Registry("acme", "model"), ("reg", "acme", "model"), 1281586176117761947),
    (Collection("acme", "model", "resnet"), ("coll", "acme", "model", "resnet"), 7790217832715343642),
    (V3, ("ver", "acme", "model", "resnet", 3), 2815135624556915554),
    (V3.child("a").child("b.txt", ENTRY), ("path", "acme", "model", "resnet", 3, "a/b.txt"), 4787694379906578034),
    (AliasLink("acme", "model", "resnet", "production", 3), ("alias", "acme", "model", "resnet", "production"),
     6519245005932643035),
    (QualifiedLink("acme", "model", "resnet", "production", 3, name="resnet:production"),
     ("qual", "acme", "model", "resnet:production"), 6309265687202834666),
    (RegistryPrefixLink("acme", "model"), ("regprefix", "acme", "model"), 7554810989524670278),
]


@pytest.mark.parametrize("place,key,inode", BEFORE, ids=[type(p).__name__ for p, _, _ in BEFORE])
def test_typed_nodes_keep_their_keys_and_inodes(place, key, inode):
    assert place.key == key
    if inode is not None:
        assert inode_for(place.key) == inode
        assert InodeTable().upsert(place, 0.0).inode == inode


def test_what_the_kernel_sees_of_each_kind():
    t = InodeTable()
    f = t.upsert(V3.child("a").child("b.txt", ENTRY), 5.0)
    assert (f.kind, f.mode, f.size, f.immutable, f.target) == ("file", 0o444, 12, True, "")
    assert stat.S_ISREG(f.st_mode)
    for dir_place, immutable in [(Org("acme"), False), (Collection("acme", "model", "resnet"), False),
                                 (V3, True), (V3.child("a"), True)]:
        d = t.upsert(dir_place, 0.0)
        assert (d.kind, d.mode, d.size, d.immutable) == ("dir", 0o555, 0, immutable)
        assert stat.S_ISDIR(d.st_mode)
    assert isinstance(V3.child("a"), Folder) and V3.child("a").parts == ("a",)
    links = {AliasLink("acme", "model", "resnet", "production", 3): "v3",
             QualifiedLink("acme", "model", "resnet", "v3", 3, name="resnet:v3"): "resnet/v3",
             RegistryPrefixLink("acme", "model"): "model"}
    for place, target in links.items():
        n = t.upsert(place, 0.0)
        assert (n.kind, n.mode, n.target, n.immutable) == ("symlink", 0o777, target, False)
        assert stat.S_ISLNK(n.st_mode)


def test_an_alias_that_moves_keeps_its_inode_and_changes_target():
    t = InodeTable()
    link = AliasLink("acme", "model", "resnet", "production", 3)
    n = t.upsert(link, 1.0)
    inode = n.inode
    n.place = dataclasses.replace(link, idx=4)
    assert n.target == "v4" and n.place.version_key == ("ver", "acme", "model", "resnet", 4)
    assert t.upsert(AliasLink("acme", "model", "resnet", "production", 4), 2.0) is n and n.inode == inode
    q = dataclasses.replace(QualifiedLink("acme", "model", "resnet", "production", 3, name="resnet:production"), idx=7)
    assert q.target == "resnet/v7" and q.key == ("qual", "acme", "model", "resnet:production")


def test_an_open_file_survives_relisting_and_forget():
    """Relisting a directory refreshes its nodes but keeps their counts: an open file's node
    is not freed when the kernel forgets it, and is freed once closed and forgotten."""
    t, handles = InodeTable(), Handles()
    place = V3.child("a").child("b.txt", ENTRY)
    node = t.upsert(place, 0.0)
    t.incref(node)
    fh = handles.open_file(node, reader=None)  # type: ignore[arg-type]
    assert node.open_handles == 1 and handles.open_files == 1
    assert t.upsert(place, 9.0) is node and node.open_handles == 1   # readdir of its folder again
    t.forget(node.inode, 1)
    assert t.get(node.inode) is node
    assert handles.release_file(fh) is not None and node.open_handles == 0 and handles.open_files == 0
    assert handles.release_file(fh) is None and node.open_handles == 0   # a second release changes nothing
    t.incref(node)
    t.forget(node.inode, 1)
    assert t.get(node.inode) is None


def test_dir_handles_keep_their_listing_and_share_the_counter():
    handles = Handles()
    a = handles.open_dir([("x", None)])  # type: ignore[list-item]
    b = handles.open_file(InodeTable().upsert(Org("o"), 0.0), reader=None)  # type: ignore[arg-type]
    assert a != b and handles.listing(a) == [("x", None)]
    handles.release_dir(a)
    assert handles.listing(a) == []


def test_misses_are_taken_per_parent_and_bounded():
    m = Misses(kept=4)
    m.remember(10, b"v7")
    m.remember(10, b"v7")       # the same miss twice counts once
    m.remember(10, b"new")
    m.remember(20, b"other")
    assert len(m) == 3
    assert sorted(m.take(lambda parent: parent == 10)) == [(10, b"new"), (10, b"v7")]
    assert len(m) == 1 and m.take(lambda parent: parent == 10) == []
    m.remember(30, b"a")
    m.remember(30, b"b")
    m.remember(30, b"c")        # the bound: four kept, the fifth starts over
    assert len(m) == 4
    m.remember(40, b"d")
    assert len(m) == 1 and m.take(lambda parent: True) == [(40, b"d")]


def test_alias_via_is_per_process_and_version_and_expires():
    now = [1000.0]
    via = AliasVia(clock=lambda: now[0])
    v3 = ("ver", "acme", "model", "resnet", 3)
    via.note(42, v3, "production")
    assert via.alias(42, v3) == "production"
    assert via.alias(43, v3) is None                                      # another process
    assert via.alias(42, ("ver", "acme", "model", "resnet", 4)) is None   # another version
    now[0] += 59.9
    assert via.alias(42, v3) == "production"
    now[0] += 0.1
    assert via.alias(42, v3) is None                                      # 60 s later: read by index
    via.note(42, v3, "staging")
    assert via.alias(42, v3) == "staging"                                 # the latest alias wins


def test_alias_via_drops_only_stale_entries_when_full():
    now = [0.0]
    via = AliasVia(clock=lambda: now[0])
    via.KEPT = 3
    via.note(1, V3.version_key, "old")
    now[0] = 100.0
    via.note(2, V3.version_key, "a")
    via.note(3, V3.version_key, "b")
    via.note(4, V3.version_key, "c")   # full: the stale one goes, the fresh ones stay
    assert len(via) == 3 and [via.alias(p, V3.version_key) for p in (1, 2, 3, 4)] == [None, "a", "b", "c"]


@pytest.mark.parametrize("error,code,counted", [
    (NotFound("x"), errno.ENOENT, False),
    (Unsupported("gs://"), errno.EOPNOTSUPP, False),
    (RefDenied("403"), errno.EACCES, False),
    (AuthError("401"), errno.EACCES, True),
    (BackendError("500"), errno.EIO, True),
    (Unreachable("hang"), errno.EIO, True),
    (FetchError("gave up"), errno.EIO, True),
    (BadBytes("digest"), errno.EIO, True),
    (NoSpace("full"), errno.EIO, True),
    (RefChanged("etag"), errno.EIO, True),
    (ValueError("bug"), errno.EIO, True),
])
def test_one_errno_table(error, code, counted):
    assert errno_of(error) == code and outcome_of(error).counted is counted
    assert (outcome_of(error) is UNEXPECTED) is isinstance(error, ValueError)


def test_the_fill_errors_live_in_one_module():
    for cls in (FetchError, BadBytes, NoSpace, UrlRefused, Transient, RefChanged, RefDenied, Unsupported):
        assert cls.__module__ == "wandbfs.fill.errors" and cls.__name__ in fill_errors.__all__
    assert issubclass(FetchError, BackendError) and issubclass(RefDenied, AuthError)
    assert not issubclass(Unsupported, (AuthError, BackendError, NotFound))   # a handle is not failed by it


def _fs() -> WandbFS:
    return WandbFS(None, None, None)  # type: ignore[arg-type] - the parts tested here never call them


@pytest.mark.parametrize("error,code,line,counted", [
    (AuthError("bad key"), errno.EACCES, "read: W&B refused the credentials: bad key", "EACCES"),
    (RefDenied("s3 said no"), errno.EACCES, "read: s3 said no", None),
    (Unsupported("gs://b/x: not supported"), errno.EOPNOTSUPP, "read: gs://b/x: not supported", None),
    (BackendError("W&B 500"), errno.EIO, "read: W&B 500", "EIO"),
    (NotFound("gone"), errno.ENOENT, None, None),
])
def test_the_guard_logs_and_counts_as_before(error, code, line, counted, caplog):
    fs = _fs()
    with caplog.at_level(logging.DEBUG, logger="wandbfs.fuse.ops"):
        assert fs._failed("read", (), error) == code
    assert [r.getMessage() for r in caplog.records] == ([line] if line else [])
    assert dict(fs.errors) == ({counted: 1} if counted else {})


def test_the_guard_turns_a_bug_into_eio_and_the_mount_lives(caplog):
    fs = _fs()

    async def main() -> None:
        with pytest.raises(pyfuse3.FUSEError) as e:
            await fs.getattr(999, None)            # no such inode: ENOENT, a normal answer
        assert e.value.errno == errno.ENOENT
        with pytest.raises(pyfuse3.FUSEError) as e:
            await fs.readlink(1, None)             # the root is no symlink: EINVAL, counted
        assert e.value.errno == errno.EINVAL
        with pytest.raises(pyfuse3.FUSEError) as e:
            await fs.opendir(1, None)              # the catalog is missing here: a bug, EIO
        assert e.value.errno == errno.EIO
    with caplog.at_level(logging.ERROR, logger="wandbfs.fuse.ops"):
        trio.run(main)
    assert dict(fs.errors) == {"EINVAL": 1, "EIO": 1}
    assert [r.getMessage() for r in caplog.records] == ["unexpected error in opendir(1, None)"]
    assert caplog.records[0].exc_info is not None


def test_refresh_takes_back_the_misses_under_its_prefix_only():
    fs = _fs()
    acme = fs.table.upsert(Org("acme"), 0.0)
    model = fs.table.upsert(Registry("acme", "model"), 0.0)
    resnet = fs.table.upsert(Collection("acme", "model", "resnet"), 0.0)
    other = fs.table.upsert(Collection("acme", "data", "squad"), 0.0)
    assert fs._under(1, ("acme", "model", "resnet"))                 # the root is above every prefix
    assert fs._under(acme.inode, ("acme", "model")) and fs._under(model.inode, ("acme", "model"))
    assert fs._under(resnet.inode, ("acme", "model")) and not fs._under(other.inode, ("acme", "model"))
    assert fs._under(other.inode, ()) and fs._under(123456, ("x",))  # a freed inode: taken back too
    assert (Root().scope, acme.place.scope, model.place.scope) == ((), ("acme",), ("acme", "model"))
    assert V3.child("a").scope == AliasLink("acme", "model", "resnet", "p", 3).scope == ("acme", "model", "resnet")


def test_links_absolute_under_the_mount_and_project_artifact_folders():
    """Every link has one relative and one absolute target (``--links``), and a project's
    collections are found under their type folder."""
    cases = [
        (AliasLink("acme", "model", "resnet", "production", 3), "v3", "/m/acme/model/resnet/v3"),
        (AliasLink("@alice", "train", "ckpt", "best", 2, type="model"), "v2", "/m/@alice/train/model/ckpt/v2"),
        (QualifiedLink("@alice", "train", "ckpt", "best", 2, name="ckpt:best", type="model"), "model/ckpt/v2",
         "/m/@alice/train/model/ckpt/v2"),
        (RegistryPrefixLink("acme", "model"), "model", "/m/acme/model"),
        (Redirect((), "alice", ("@alice",)), "@alice", "/m/@alice"),
        (Redirect(("acme",), "train", ("@acme", "train")), "../@acme/train", "/m/@acme/train"),
        (Redirect(("@acme-org",), "wandb-registry-model", ("acme", "model")), "../acme/model", "/m/acme/model"),
    ]
    t = InodeTable()
    for place, relative, absolute in cases:
        n = t.upsert(place, 0.0)
        assert (n.target, n.target_at("/m"), n.target_at(None)) == (relative, absolute, relative)
    # the type is where a collection is shown, not what it is: same key, same inode
    assert Collection("@alice", "train", "ckpt", type="model").key == Collection("@alice", "train", "ckpt").key
    assert TypeDir("@alice", "train", "model").key == ("type", "@alice", "train", "model")
