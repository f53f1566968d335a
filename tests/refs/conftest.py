"""Reference artifacts: a local HTTP origin, an S3 API on loopback (moto), and publishing
references through the real SDK (``artifact.add_reference``) into the emulator's registry."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.fs.conftest import daemon_env, mount  # noqa: F401 - mount is a fixture used by these tests
from wandbfs.cache.store import ObjectCache

# ---- an HTTP origin with ETag, Range and If-Match --------------------------------------

class Origin:
    """Files served over HTTP the way object stores and CDNs do; tests change them at will."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}   # path -> (bytes, quoted ETag)
        self.ranges = True          # honour Range and say Accept-Ranges: bytes
        self.head = True            # answer HEAD (else 405)
        self.swap: tuple[str, bytes] | None = None   # replace this file right after its next GET
        self.redirects: dict[str, str] = {}   # path -> where a 302 sends it
        self.requests: list[tuple[str, str, dict[str, str]]] = []   # (method, path, headers)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def put(self, path: str, data: bytes, etag: str | None = None) -> str:
        """Serve ``data`` at ``path`` with ``etag`` (default: its md5, quoted); returns the URL."""
        with self.lock:
            self.files[path] = (data, f'"{etag or hashlib.md5(data).hexdigest()}"')
        return self.base + path

    def gets(self, path: str | None = None) -> list[dict[str, str]]:
        with self.lock:
            return [h for m, p, h in self.requests if m == "GET" and (path is None or p == path)]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                with origin.lock:
                    origin.requests.append((self.command, self.path, dict(self.headers)))
                    found = origin.files.get(self.path)
                    ranges, head = origin.ranges, origin.head
                    moved = origin.redirects.get(self.path)
                if moved is not None:
                    self.send_response(302)
                    self.send_header("Location", moved)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if not body and not head:
                    return self._empty(405)
                if found is None:
                    return self._empty(404)
                data, etag = found
                if body and origin.swap is not None and origin.swap[0] == self.path:
                    # After this response the object changes under the download (a new upload).
                    with origin.lock:
                        path, new = origin.swap
                        origin.swap = None
                        origin.files[path] = (new, f'"{hashlib.md5(new).hexdigest()}"')
                if_match = self.headers.get("If-Match")
                if if_match and if_match.strip() != "*" and etag not in [t.strip() for t in if_match.split(",")]:
                    return self._empty(412)
                start, end, status = 0, len(data), 200
                rng = self.headers.get("Range")
                if rng and ranges:
                    m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                    if m:
                        start = int(m.group(1))
                        end = min(len(data), int(m.group(2)) + 1 if m.group(2) else len(data))
                        if start >= len(data):
                            return self._empty(416)
                        status = 206
                self.send_response(status)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(end - start))
                if ranges:
                    self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                self.end_headers()
                if body:
                    try:
                        self.wfile.write(data[start:end])
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the SDK's add_reference reads the headers only

            def _empty(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler


@pytest.fixture(scope="session")
def origin_server() -> Iterator[Origin]:
    o = Origin()
    o.server.handle_error = lambda *a: None  # type: ignore[method-assign] # clients hang up mid-body
    o.thread.start()
    yield o
    o.server.shutdown()
    o.server.server_close()


@pytest.fixture
def origin(origin_server: Origin) -> Origin:
    origin_server.ranges = origin_server.head = True
    origin_server.swap = None
    origin_server.redirects.clear()
    with origin_server.lock:
        origin_server.requests.clear()
    return origin_server


# ---- S3 on loopback ---------------------------------------------------------------------

AWS_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def s3_env(emulator: Any) -> Iterator[dict[str, str]]:
    """moto's S3 API in this process; its variables are in os.environ (for the SDK) and
    returned for mount daemons. AWS_ENDPOINT_URL_S3 is boto3's own endpoint variable."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = dict(AWS_KEYS, AWS_ENDPOINT_URL_S3=f"http://{host}:{port}")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture
def s3(s3_env: dict[str, str]) -> Any:
    import boto3

    return boto3.client("s3")


@pytest.fixture
def mount_env(emulator: Any, tmp_path: Path) -> dict[str, str]:
    """As tests/fs's, minus WANDB_SERVICE: these tests publish (and tear the SDK's service
    down) after the environment is taken, so a daemon must start its own."""
    env = daemon_env(tmp_path, emulator.url)
    env.pop("WANDB_SERVICE", None)
    return env


@pytest.fixture
def refs_env(mount_env: dict[str, str], s3_env: dict[str, str]) -> dict[str, str]:
    """A mount daemon's environment with the AWS credentials and endpoint."""
    return dict(mount_env, **s3_env)


# ---- publishing references through the SDK ----------------------------------------------

def publish_refs(collection: str, refs: list[tuple[str, dict[str, Any]]], aliases: list[str] | None = None,
                 extra_entries: list[Any] = (), stored: dict[str, bytes] | None = None,
                 tmp: Path | None = None, registry: str = "model") -> str:
    """wandb.init -> add_reference(uri, **kw) for each -> log_artifact -> link_artifact.

    ``extra_entries`` are ``ArtifactManifestEntry`` objects added as they are (a gs://
    entry, whose add_reference needs google-cloud-storage); ``stored`` files are uploaded
    to W&B as usual (from ``tmp``). Returns the registry name.
    """
    import wandb

    run = wandb.init(entity="alice", project="refs", job_type="train")
    art = wandb.Artifact(f"{collection}-src", type="model")
    for uri, kw in refs:
        art.add_reference(uri, **kw)
    for rel, data in (stored or {}).items():
        assert tmp is not None
        src = tmp / "stored" / rel
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        art.add_file(str(src), name=rel)
    for entry in extra_entries:
        art.manifest.add_entry(entry)
    run.log_artifact(art)
    name = f"acme/wandb-registry-{registry}/{collection}"
    run.link_artifact(art, name, aliases=aliases or [])
    run.finish()
    wandb.teardown()
    return name


def cache_object(cache_dir: Path, version: str, path: str) -> Path:
    """Where the SDK's cache keeps this entry of a published version."""
    import wandb

    from wandbfs.model.manifest import parse_manifest

    art = wandb.Api().artifact(version)
    entry = parse_manifest(art.manifest.to_manifest_json()).entries[path]
    return ObjectCache(cache_dir).path_for(entry)


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"
