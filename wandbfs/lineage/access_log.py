"""An audit trail of opens: one JSON line per file opened through the mount.

Lineage says which run consumed which version; an audit also wants who and when for every
open (which user, which process, through which path). Each line has the time, pid, uid,
process name, the path opened, the registry name it resolved to and the run the use was
recorded on. Lines are appended with one ``write`` each (O_APPEND), so the file can be
shipped or rotated (``copytruncate``) by the usual tools; a failing write is logged, never
fatal to the read.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["AccessLog"]


class AccessLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._failed = False
        self.lines = 0

    def record(self, **fields: Any) -> None:
        line = json.dumps({"time": round(time.time(), 3), **fields}, ensure_ascii=False) + "\n"
        try:
            os.write(self._fd, line.encode())
            self.lines += 1
            self._failed = False
        except OSError as e:
            if not self._failed:
                log.error("access log %s: write failed: %s", self.path, e)
            self._failed = True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
