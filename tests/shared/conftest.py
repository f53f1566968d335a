"""Shared-tier tests: real mounts (the fs fixtures) and moto's S3 server started here."""

from __future__ import annotations

from tests.fs.conftest import daemon_env, mount, mount_env  # noqa: F401 - re-exported fixtures
