"""The control socket's protocol on its own (no mount): what each request gets, and that no
client can stall it or the CLI. Real mounts: test_operator.py and test_hung_daemon.py."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
import trio

from wandbfs.daemon.control_socket import ControlServer, NoSocket, ask
from wandbfs.daemon.procutil import NoAnswer
from wandbfs.sdk.client import BackendError, NotFound


class FakeXattrs:
    """Stands for fuse/xattrs.Xattrs: paths are nodes, a few names fail."""

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid()}

    async def find(self, parts: list[str]) -> Any:
        if parts == ["gone"]:
            return None
        if parts == ["never-seen"]:
            raise BackendError("W&B unreachable: timed out")
        if parts == ["deleted"]:
            raise NotFound("acme/model/x")
        return parts

    async def info(self, node: list[str]) -> dict[str, str]:
        return {"path": "/".join(node)}


def _serve(path: Path, body: Callable[[ControlServer], Awaitable[None]], **kw: Any) -> ControlServer:
    server = ControlServer(path, FakeXattrs(), **kw)  # type: ignore[arg-type]

    async def main() -> None:
        async with trio.open_nursery() as n:
            await n.start(server.serve)
            with trio.fail_after(30):
                await body(server)
            n.cancel_scope.cancel()
        server.close()
    trio.run(main)
    return server


async def _ask(path: Path, request: dict[str, Any], timeout: float = 5) -> dict[str, Any]:
    return await trio.to_thread.run_sync(ask, path, request, timeout)


async def _refused(path: Path, request: dict[str, Any]) -> OSError:
    try:
        await _ask(path, request)
    except OSError as e:
        return e
    raise AssertionError(f"{request} was answered")


def test_requests_and_their_answers(tmp_path):
    path = tmp_path / "control-x.sock"

    async def body(server: ControlServer) -> None:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert (await _ask(path, {"op": "status"}))["status"] == {"pid": os.getpid()}
        assert (await _ask(path, {"op": "info", "path": ["acme", "Fine-tuned Models", "a b"]}))["info"] == {
            "path": "acme/Fine-tuned Models/a b"}
        for request, errno_name, words in [
                ({"op": "info", "path": ["gone"]}, "ENOENT", "no such file"),
                ({"op": "info", "path": ["deleted"]}, "ENOENT", "acme/model/x"),
                ({"op": "info", "path": ["never-seen"]}, "EIO", "W&B unreachable"),
                ({"op": "info", "path": "acme/model"}, "EINVAL", "a list of names"),
                ({"op": "info"}, "EINVAL", "a list of names"),
                ({"op": "reboot"}, "EINVAL", "unknown request"),
                (["status"], "EINVAL", "unknown request")]:
            e = await _refused(path, request)
            assert errno.errorcode[e.errno] == errno_name, (request, e)
            assert words in str(e), (request, e)
        # not JSON: an answer, not a dropped connection; two requests on one connection
        bad, good = await trio.to_thread.run_sync(_two_lines, path, b"{nope\n" + json.dumps({"op": "status"}).encode())
        assert bad["ok"] is False and bad["errno"] == "EINVAL" and good["ok"] is True
    _serve(path, body)
    assert not path.exists()   # removed at close


def _two_lines(path: Path, data: bytes) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(data + b"\n")
        s.settimeout(5)
        lines = b""
        while lines.count(b"\n") < 2:
            lines += s.recv(65536)
    return [json.loads(x) for x in lines.splitlines()]


def test_no_client_stalls_the_server(tmp_path):
    """A client that connects and says nothing, or sends an endless line, holds only its own
    connection: the next request is answered at once."""
    path = tmp_path / "control-x.sock"

    async def body(server: ControlServer) -> None:
        silent = socket.socket(socket.AF_UNIX)
        silent.connect(str(path))
        flood = socket.socket(socket.AF_UNIX)
        flood.connect(str(path))
        flood.setblocking(False)
        try:
            try:
                for _ in range(64):
                    flood.send(b"x" * 65536)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
            t0 = time.monotonic()
            assert (await _ask(path, {"op": "status"}))["ok"]
            assert time.monotonic() - t0 < 2
        finally:
            silent.close()
            flood.close()
    _serve(path, body, request_timeout=60)


def test_a_stale_socket_file_is_replaced_and_an_allow_other_mount_opens_it(tmp_path):
    path = tmp_path / "control-x.sock"
    old = socket.socket(socket.AF_UNIX)
    old.bind(str(path))       # left by a daemon that was killed: nobody listens
    old.close()
    with pytest.raises(NoSocket):
        ask(path, {"op": "status"}, 2)

    async def body(server: ControlServer) -> None:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666
        assert (await _ask(path, {"op": "status"}))["ok"]
    _serve(path, body, shared=True)
    with pytest.raises(NoSocket):
        ask(tmp_path / "none.sock", {"op": "status"}, 2)


def test_a_daemon_that_accepts_but_never_answers_is_no_answer_within_the_deadline(tmp_path):
    """What a stopped daemon looks like from outside: the kernel queues the connection."""
    path = tmp_path / "control-x.sock"
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(path))
        listening.listen(1)
        t0 = time.monotonic()
        with pytest.raises(NoAnswer):
            ask(path, {"op": "status"}, 0.5)
        assert time.monotonic() - t0 < 2


def test_a_path_longer_than_sun_path_works(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "control-0123456789abcdef.sock"
    assert len(os.fsencode(path)) > 108

    async def body(server: ControlServer) -> None:
        assert (await _ask(path, {"op": "info", "path": ["a"]}))["info"] == {"path": "a"}
    _serve(path, body)
