"""Lineage tests use real mounts and, for outages, an emulator of their own."""

from tests.faults.conftest import outage, outage_env  # noqa: F401 - re-exported fixtures
from tests.fs.conftest import daemon_env, mount, mount_env  # noqa: F401
