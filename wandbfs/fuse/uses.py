"""What an open tells lineage and the access log: who read which version, by which name.

Each open queues a use (``lineage.queue``: recorded on the reader's own W&B run when its
environment names one, else on the mount's) and, with ``--access-log``, writes one line.
The name is the one the reader asked for: ``coll:production`` when it came through that
alias symlink (``via.py``), ``coll:v3`` otherwise. Nothing here waits.
"""

from __future__ import annotations

from wandbfs.fuse.nodes import File
from wandbfs.fuse.via import AliasVia
from wandbfs.lineage.access_log import AccessLog
from wandbfs.lineage.journal import MOUNT_RUN
from wandbfs.lineage.queue import Lineage, Use
from wandbfs.lineage.readers import ReaderInfo
from wandbfs.model.names import qualified_name
from wandbfs.sdk.client import VersionDetail

__all__ = ["Uses"]


class Uses:
    """Notes each open for lineage and the access log (either may be off)."""

    def __init__(self, lineage: Lineage | None, access_log: AccessLog | None, *, reader_runs: bool = True) -> None:
        self.lineage = lineage
        self.access_log = access_log
        self.readers = ReaderInfo(runs=reader_runs)
        self.via = AliasVia()   # readlink of an alias notes it here

    def opened(self, place: File, detail: VersionDetail, pid: int, uid: int) -> None:
        """Queue the lineage use (on the reader's run if it has one) and write the access log."""
        if self.lineage is None and self.access_log is None:
            return
        via = self.via.alias(pid, place.version_key)
        token = f"v{detail.index}" if via is None else via
        used_as = qualified_name(detail.org, detail.registry, detail.collection, token)
        # /proc is read only when someone needs the answer (reader runs, or the access log)
        reader = self.readers.get(pid, uid) if self.readers.runs or self.access_log else None
        run = (reader.run if reader else None) or MOUNT_RUN
        if self.lineage is not None:
            self.lineage.note(Use(detail.artifact_id, detail.name, used_as, run))
        if self.access_log is not None and reader is not None:
            path = "/".join((place.org, place.reg, place.coll, token, *place.parts))
            self.access_log.record(pid=pid, uid=uid, process=reader.comm, path=path,
                                   name=detail.name, used_as=used_as, artifact_id=detail.artifact_id,
                                   run=None if self.lineage is None else run)
