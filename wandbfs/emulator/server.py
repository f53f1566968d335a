"""The emulator's HTTP front: GraphQL, signed storage URLs, uploads, run streams, control.

stdlib ``ThreadingHTTPServer`` on purpose: no web framework to install, starts in
milliseconds inside a test, and wandb-core speaks plain HTTP/1.1 to it. Blob bodies go out
with ``socket.sendfile`` (zero-copy) so benchmarks measure the client, not this server.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from wandbfs.emulator.executor import execute
from wandbfs.emulator.faults import (Faults, FaultRule, LogEntry, RequestLog, corrupt, fault_body, misrange,
                                     pace)
from wandbfs.emulator.schema import Ctx, MutationRoot, QueryRoot
from wandbfs.emulator.signing import UrlSigner
from wandbfs.emulator.records import VIEWER, StoreError
from wandbfs.emulator.store import Store

log = logging.getLogger("wandbfs.emulator")

MD5_RE = re.compile(r"^[0-9a-f]{32}$")

# Path prefix -> route name (the unit of fault injection and of the request log). First match wins.
ROUTE_PREFIXES = [
    ("/_storage/blobs/", "blob"), ("/_storage/manifests/", "manifest"), ("/_storage/upload/run/", "runfile"),
    ("/_storage/upload/", "upload"), ("/artifactsV2/", "artifactsV2"), ("/artifacts/", "artifactsV2"),
    ("/sdk/otel", "otel"), ("/_emulator/", "control"),
]
# Routes whose bodies stream from the blob store: a fault's stall_s hangs them mid-body
# (after the headers); every other route's stall holds the request unanswered.
BODY_FAULT_ROUTES = ("blob", "manifest", "artifactsV2")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(start, end inclusive), None for no/ignored Range, or "416" when unsatisfiable."""
    if not header:
        return None
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None  # multi-range or junk: serve the whole object, as many servers do
    a, b = m.group(1), m.group(2)
    if a == "":
        n = int(b)
        if n == 0:
            return "416"
        return (max(0, size - n), size - 1)
    start = int(a)
    end = int(b) if b else size - 1
    if start >= size or end < start:
        return "416"
    return (start, min(end, size - 1))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without it, Nagle + delayed ACK add ~40 ms to small responses on kept-alive connections.
    disable_nagle_algorithm = True
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        log.debug("%s %s", self.address_string(), format % args)

    # ---- plumbing -----------------------------------------------------------------------
    @property
    def emu(self) -> "Emulator":
        return self.server.emulator

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                line = self.rfile.readline().strip()
                n = int(line.split(b";")[0], 16)
                if n == 0:
                    self.rfile.readline()
                    break
                out += self.rfile.read(n)
                self.rfile.readline()
            data = bytes(out)
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            data = gzip.decompress(data)
        return data

    def _api_key(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
                return key
            except Exception:  # noqa: BLE001 - malformed header is just "no key"
                return None
        if auth.startswith("Bearer "):
            return auth[7:]
        return None

    def _authed(self) -> bool:
        return self.emu.store.key_ok(self._api_key())

    def _send(self, status: int, body: bytes, ctype: str = "application/json",
              headers: dict[str, str] | None = None) -> int:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return len(body)

    def _json(self, status: int, obj: Any) -> int:
        return self._send(status, json.dumps(obj).encode())

    def _route(self, path: str) -> str:
        if path == "/graphql":
            return "graphql"
        if path.endswith("/file_stream"):
            return "file_stream"
        return next((route for prefix, route in ROUTE_PREFIXES if path.startswith(prefix)), "other")

    def _handle(self) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        route = self._route(path)
        entry = LogEntry(t=time.time(), method=self.command, route=route, path=path,
                         range=self.headers.get("Range"), user_agent=self.headers.get("User-Agent"))
        body = b""
        if self.command in ("POST", "PUT"):
            body = self._body()
        op = None
        gql: dict[str, Any] | None = None
        if route == "graphql" and body:
            try:
                gql = json.loads(body)
                op = gql.get("operationName") or _op_name(gql.get("query", ""))
                entry.operation, entry.variables = op, gql.get("variables")
            except ValueError:
                gql = None
        # Logged when it arrives (tests count requests without racing the response);
        # status and bytes are filled in as the response goes out.
        self.emu.log.add(entry)
        fault = self.emu.faults.take(route, op, path) if route != "control" else None
        try:
            if fault is not None:
                entry.fault = True
                if fault.latency_ms:
                    time.sleep(fault.latency_ms / 1000)
                if fault.stall_s and route not in BODY_FAULT_ROUTES:
                    self._stall(fault.stall_s)
                    return
                if fault.status:
                    entry.status = fault.status
                    entry.bytes_out = self._fault_answer(fault, route)
                    return
            if route == "control":
                entry.status, entry.bytes_out = self._control(path, body)
            elif route == "graphql":
                self._graphql(gql, entry)
            elif route in ("blob", "manifest"):
                reason = self.emu.signer.check(path, url.query)
                if reason:
                    entry.status = 403
                    entry.bytes_out = self._send(403, f"<Error>{reason}</Error>".encode(), "application/xml")
                else:
                    self._blob(path.rsplit("/", 1)[1], entry, fault)
            elif route == "artifactsV2":
                if not self._authed():
                    entry.status, entry.bytes_out = 401, self._json(401, {"error": "unauthorized"})
                elif not self._may_read_artifact_path(path):
                    entry.status, entry.bytes_out = 403, self._json(403, {"error": "permission denied"})
                else:
                    parts = [p for p in path.split("/") if p]
                    md5hex = next((p for p in reversed(parts) if MD5_RE.match(p)), None)
                    self._blob(md5hex or "", entry, fault)
            elif route in ("upload", "runfile"):
                reason = self.emu.signer.check(path, url.query)
                if reason:
                    entry.status, entry.bytes_out = 403, self._send(403, reason.encode(), "text/plain")
                else:
                    entry.status = self._upload(path, body)
                    entry.bytes_out = self._send(entry.status, b"", "text/plain")
            elif route == "file_stream":
                if not self._authed():
                    entry.status, entry.bytes_out = 401, self._json(401, {"error": "unauthorized"})
                else:
                    self._file_stream(path, body)
                    entry.status, entry.bytes_out = 200, self._json(200, {})
            elif route == "otel":
                entry.status, entry.bytes_out = 200, self._json(200, {})
            else:
                entry.status, entry.bytes_out = 404, self._json(404, {"error": "not found"})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.emu.log.note_done(entry)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle

    def _fault_answer(self, fault: FaultRule, route: str) -> int:
        """An injected status as W&B answers it there (see ``faults.fault_body``), a 429 with
        ``Retry-After`` (wandb-core waits exactly that long before its retry)."""
        body, ctype = fault_body(fault, route)
        retry_after = fault.retry_after_header()
        return self._send(fault.status or 500, body, ctype, {"Retry-After": retry_after} if retry_after else None)

    def _stall(self, seconds: float) -> None:
        """Hold a request without a byte of answer, then drop the connection: only the
        client's own deadline ends the wait, as with a hung W&B."""
        time.sleep(seconds)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ---- routes -------------------------------------------------------------------------
    def _graphql(self, gql: dict[str, Any] | None, entry: LogEntry) -> None:
        if not self._authed():
            entry.status = 401
            entry.bytes_out = self._json(401, {"errors": [{"message": "user is not logged in"}]})
            return
        if gql is None or "query" not in gql:
            entry.status = 400
            entry.bytes_out = self._json(400, {"errors": [{"message": "bad request"}]})
            return
        ctx = Ctx(self.emu.store, self.emu.signer, self.emu.public_url(self.headers.get("Host")))
        try:
            # One operation at a time against the store: resolvers walk its dicts while a
            # mutation (or a seeding test) may delete from them; a GraphQL stall is a fault
            # rule applied before this, so a stalled request does not hold the lock.
            with self.emu.store.lock:
                res = execute(gql["query"], gql.get("variables"), gql.get("operationName"),
                              lambda t: QueryRoot(ctx) if t == "query" else MutationRoot(ctx))
            payload: dict[str, Any] = {"data": res.data}
            status = res.status
            if res.errors:
                payload["errors"] = res.errors
            entry.missing = res.missing
            self.emu.log.missing_fields.update(res.missing)  # before the client can see the answer
            if res.missing:
                log.warning("unserved GraphQL fields in %s: %s", res.operation_name, res.missing)
        except Exception as e:  # noqa: BLE001 - W&B answers errors in-band, never with a 5xx
            log.exception("GraphQL failure")
            payload = {"data": None, "errors": [{"message": f"{type(e).__name__}: {e}"}]}
            status = 200
        entry.status = status
        entry.response = payload if self.emu.log.keep_responses else None
        entry.bytes_out = self._json(status, payload)

    def _may_read_artifact_path(self, path: str) -> bool:
        """The authenticated download routes name whose file it is (``/artifactsV2/<region>/
        <entity>/<project>/...``, ``/artifacts/<entity>/<md5>``): the viewer must be able to see
        that project (or entity), unlike a signed storage URL, which is good for whoever holds it."""
        parts = [p for p in path.split("/") if p]
        store = self.emu.store
        if parts[0] == "artifactsV2" and len(parts) > 3:
            p = store.project(parts[2], parts[3])
            return p is None or store.can_see_project(p)
        return len(parts) < 2 or store.can_see_entity(parts[1]) or parts[1] not in store.entities

    def _blob(self, md5hex: str, entry: LogEntry, fault: FaultRule | None) -> None:
        store = self.emu.store
        if not store.blobs.has(md5hex):
            entry.status, entry.bytes_out = 404, self._json(404, {"error": "no such object"})
            return
        p = store.blobs.path(md5hex)
        size = p.stat().st_size
        rng = parse_range(self.headers.get("Range"), size)
        if rng == "416":
            entry.status = 416
            entry.bytes_out = self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
            return
        if rng is not None:
            rng = misrange(rng, size, fault)  # type: ignore[arg-type]
        start, end = (0, size - 1) if rng is None else rng  # type: ignore[misc]
        length = max(0, end - start + 1)
        status = 200 if rng is None else 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{md5hex}"')
        if status == 206:
            claimed = size if fault is None or fault.wrong_size is None else fault.wrong_size
            self.send_header("Content-Range", f"bytes {start}-{end}/{claimed}")
        self.end_headers()
        entry.status = status
        if self.command == "HEAD" or length == 0:
            return
        self.wfile.flush()
        with open(p, "rb") as f:
            if fault is None or not (fault.stall_s or fault.reset_after is not None or fault.truncate is not None
                                     or fault.corrupt or fault.rate_bps):
                entry.bytes_out = self.connection.sendfile(f, offset=start, count=length)
                return
            entry.bytes_out = self._faulty_body(f, start, length, fault)

    def _faulty_body(self, f: Any, start: int, length: int, fault: FaultRule) -> int:
        limit = length
        if fault.truncate is not None:
            limit = min(limit, fault.truncate)
        if fault.reset_after is not None:
            limit = min(limit, fault.reset_after)
        elif fault.stall_s:
            limit = 0  # a stall hangs right after the headers unless reset_after says otherwise
        sent, t0 = 0, time.monotonic()
        f.seek(start)
        while sent < limit:
            chunk = f.read(min(16384 if fault.rate_bps else 65536, limit - sent))
            if not chunk:
                break
            if fault.corrupt:
                chunk = corrupt(chunk, start + sent)
            pace(sent + len(chunk), t0, fault.rate_bps)  # a byte leaves no earlier than its due time
            self.wfile.write(chunk)
            sent += len(chunk)
        self.wfile.flush()
        if fault.stall_s:
            time.sleep(fault.stall_s)
        if sent < length:
            # Truncate, reset and stall all end with a connection that cannot continue.
            self.close_connection = True
            try:
                if fault.reset_after is not None:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return sent

    def _upload(self, path: str, body: bytes) -> int:
        _, _, _, kind, *rest = path.split("/")
        store = self.emu.store
        if kind == "blob":
            md5hex = rest[0]
            if store.blobs.put(body) != md5hex:
                store.blobs.path(md5hex)  # validates the name
                return 400
            return 200
        if kind == "manifest":
            art_id = rest[0]
            if art_id not in store.artifacts:
                return 404
            store.set_manifest(art_id, body)
            return 200
        if kind == "run":
            run_id, name_b64 = rest[0], rest[1]
            run = store.run_by_id(run_id)
            if run is None:
                return 404
            name = base64.urlsafe_b64decode(name_b64).decode()
            with store.lock:
                run.files[name] = store.blobs.put(body)
                store.save()
            return 200
        return 404

    def _file_stream(self, path: str, body: bytes) -> None:
        parts = [p for p in path.split("/") if p]  # files/<entity>/<project>/<run>/file_stream
        entity, project, name = parts[1], parts[2], parts[3]
        try:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                raise ValueError("file_stream body must be a JSON object")
            # History, events, summary and completion, as the run's record keeps them.
            self.emu.store.stream_run(entity, project, name, data)
        except (ValueError, TypeError, AttributeError) as e:
            # Dropped, not half-applied (stream_run checks before it changes anything).
            log.warning("malformed file_stream POST for %s/%s/%s: %s", entity, project, name, e)

    def _control(self, path: str, body: bytes) -> tuple[int, int]:
        """``/_emulator/{faults,log,uses,health,keys,access}``; see docs/emulator.md."""
        emu = self.emu
        what = path[len("/_emulator/"):]
        if what == "health":
            return 200, self._json(200, {"ok": True})
        if what == "faults":
            if self.command == "GET":
                return 200, self._json(200, emu.faults.list())
            if self.command == "DELETE":
                emu.faults.clear()
                return 200, self._json(200, [])
            rules = json.loads(body or b"[]")
            emu.faults.set(rules if isinstance(rules, list) else [rules])
            return 200, self._json(200, emu.faults.list())
        if what == "log":
            if self.command == "DELETE":
                emu.log.clear()
                return 200, self._json(200, [])
            return 200, self._json(200, emu.log.as_dicts())
        if what == "missing":
            return 200, self._json(200, sorted(emu.log.missing_fields))
        if what == "uses":
            return 200, self._json(200, emu.uses())
        if what == "access":
            if self.command == "POST":
                try:
                    access_change(emu.store, json.loads(body or b"{}"))
                except (StoreError, ValueError, TypeError, KeyError) as e:
                    return 400, self._json(400, {"error": str(e)})
            return 200, self._json(200, emu.store.access_state())
        if what == "keys" and self.command == "POST":
            req = json.loads(body or b"{}")
            with emu.store.lock:
                if req.get("revoke"):
                    emu.store.revoked.add(req["revoke"])
                if req.get("restore"):
                    emu.store.revoked.discard(req["restore"])
            return 200, self._json(200, {"revoked": len(emu.store.revoked)})
        return 404, self._json(404, {"error": "unknown control endpoint"})


def access_change(store: Store, req: dict[str, Any] | list[dict[str, Any]]) -> None:
    """Apply one ``POST /_emulator/access`` request (or a list of them), e.g.
    ``{"org": "acme", "member": false}`` (``"user"`` defaults to the viewer),
    ``{"registry": "acme/secret", "access": "RESTRICTED", "members": ["bob"]}``
    (also ``"add"`` / ``"remove"``; ``"project": "entity/name"`` for any project),
    ``{"team": "ml-team", "members": ["alice"]}``."""
    for r in req if isinstance(req, list) else [req]:
        user = r.get("user", VIEWER)
        if "org" in r and "member" in r:
            store.set_org_member(r["org"], bool(r["member"]), user)
        if "team" in r:
            store.add_team(r["team"], list(r.get("members") or []))
        if "registry" in r or "project" in r:
            if "registry" in r:
                p = store.registry_project(r["registry"])
            else:
                ent, _, name = r["project"].partition("/")
                p = store.project(ent, name)
                if p is None:
                    raise StoreError(f"project {r['project']} not found")
            store.set_project_access(p, r.get("access"), r.get("members"), r.get("add"), r.get("remove"))


def _op_name(query: str) -> str | None:
    m = re.search(r"\b(?:query|mutation)\s+(\w+)", query)
    return m.group(1) if m else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: "Emulator"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_sockets: set[socket.socket] = set()
        self._sockets_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """A stopped server must look dead to clients, kept-alive connections included."""
        with self._sockets_lock:
            socks = list(self.open_sockets)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Emulator:
    """The in-process API: tests start one, publish with the SDK, and inspect what happened."""

    def __init__(self, state_dir: str | Path, host: str = "127.0.0.1", port: int = 0,
                 url_lifetime_s: float = 3600.0, faults: list[dict[str, Any]] | None = None) -> None:
        self.store = Store(Path(state_dir))
        secret_file = Path(state_dir) / "url-secret"
        if not secret_file.exists():
            secret_file.write_bytes(secrets.token_bytes(32))
            os.chmod(secret_file, 0o600)
        self.signer = UrlSigner(secret_file.read_bytes(), url_lifetime_s)
        self.faults = Faults()
        if faults:
            self.faults.set(faults)
        self.log = RequestLog()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.emulator = self
        self.host, self.port = self._httpd.server_address[0], self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def public_url(self, host_header: str | None) -> str:
        """URLs we hand out use the address the client reached us by (works across netns)."""
        return f"http://{host_header}" if host_header else self.url

    def start(self) -> "Emulator":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="wandb-emulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.drop_connections()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def uses(self) -> list[dict[str, Any]]:
        """Lineage as recorded: which run used which artifact, by name."""
        out = []
        s = self.store
        for u in s.uses:
            run = s.run_by_id(u.run_id)
            art = s.artifacts.get(u.artifact_id)
            out.append({"run": f"{run.entity}/{run.project}/{run.name}" if run else None,
                        "artifact_id": u.artifact_id, "used_as": u.used_as,
                        "artifact_entity": u.artifact_entity, "artifact_project": u.artifact_project,
                        "source": f"{seq.name}:v{art.version_index}"
                                  if art and (seq := s.collection_by_id(art.seq_id)) else None,
                        "at": u.at})
        return out
