"""Shared-tier tests: real mounts (the fs fixtures) and one moto S3 server for the directory.

The server listens on every address, so the simulated hosts (test_cluster.py) reach it over
their fast veth; the unit tests reach it on 127.0.0.1 through the AWS variables. Both
endpoint variables are set: AWS_ENDPOINT_URL_S3 beats AWS_ENDPOINT_URL in boto3, and another
directory's fixture may have left one in the environment.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.fs.conftest import daemon_env, mount, mount_env  # noqa: F401 - re-exported fixtures

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def endpoint_env(url: str) -> dict[str, str]:
    """The AWS variables that point boto3 at ``url``."""
    return dict(AWS_ENV, AWS_ENDPOINT_URL=url, AWS_ENDPOINT_URL_S3=url)


@pytest.fixture(scope="session")
def moto_port() -> Iterator[int]:
    """moto's S3 API on every address, for the whole session."""
    pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="0.0.0.0", port=0, verbose=False)
    server.start()
    yield server.get_host_and_port()[1]
    server.stop()


@pytest.fixture(scope="module")
def s3_endpoint(moto_port: int) -> Iterator[str]:
    """The server on 127.0.0.1; the AWS variables are in os.environ for this module's tests
    and restored afterwards."""
    url = f"http://127.0.0.1:{moto_port}"
    env = endpoint_env(url)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield url
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


S3_PREFIX = "some/prefix"


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    import boto3

    return boto3.client("s3")


@pytest.fixture
def bucket(s3_client: Any) -> str:
    """A new, empty bucket."""
    name = f"tier-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["dir", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """A tier store of each kind: a directory, or a bucket and prefix on moto."""
    from wandbfs.shared.stores import DirStore, S3Store

    if kind == "dir":
        return DirStore(tmp_path / "tier")
    return S3Store(request.getfixturevalue("bucket"), S3_PREFIX, timeout=10.0)
