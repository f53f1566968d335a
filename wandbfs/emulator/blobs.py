"""Bytes by md5, as W&B's storage keeps artifact files (and the emulator its manifests)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path


class BlobStore:
    """Bytes by md5 hex, as W&B stores artifact files (content-addressed, so dedup is free)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, md5_hex: str) -> Path:
        if len(md5_hex) != 32 or any(c not in "0123456789abcdef" for c in md5_hex):
            raise KeyError(md5_hex)
        return self.root / md5_hex[:2] / md5_hex[2:]

    def has(self, md5_hex: str) -> bool:
        try:
            return self.path(md5_hex).is_file()
        except KeyError:
            return False

    def put(self, data: bytes) -> str:
        h = hashlib.md5(data).hexdigest()
        p = self.path(h)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + f".tmp{os.getpid()}.{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, p)
        return h

    def put_file(self, src: Path) -> str:
        """Store a file by streaming it (demo data has a 64 MiB file)."""
        h = hashlib.md5()
        with open(src, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        hexd = h.hexdigest()
        p = self.path(hexd)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".tmp")
            with open(src, "rb") as fi, open(tmp, "wb") as fo:
                for chunk in iter(lambda: fi.read(1 << 20), b""):
                    fo.write(chunk)
            os.replace(tmp, p)
        return hexd

    def get(self, md5_hex: str) -> bytes:
        return self.path(md5_hex).read_bytes()
