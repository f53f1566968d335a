"""The daemon's control socket: ``wandbfs info`` and ``wandbfs status`` without extended attributes.

Serving ``user.wandb.*`` as extended attributes has a price on every listing: the kernel
then asks the daemon for ``security.selinux`` and ``system.posix_acl_access`` on each file
``ls -l`` shows, a FUSE round trip each. A mount that serves none (the default) says so once
(ENOSYS) and is never asked again, so the CLI asks the daemon here instead: a unix socket
in the state directory (``state.control_socket`` names it from the mount point, so it is
found without touching the mount), served inside the daemon's trio nursery. One JSON object
per line each way::

    {"op": "status"}                          -> {"ok": true, "status": {...}}
    {"op": "info", "path": ["acme", ...]}     -> {"ok": true, "info": {...}}   ({} outside a version)
    a request that fails                      -> {"ok": false, "errno": "ENOENT", "error": "..."}

``path`` is relative to the mount root; the daemon walks its own tree (``Xattrs.find``),
following alias links as the kernel would. ``fuse/xattrs.py`` computes every answer, the
same values ``--xattrs`` serves.

Who may ask: the socket is 0600 (its owner, and root), or 0666 on an ``allow_other`` mount,
where any user who can reach the state directory may ask (it is private, 0700, unless its
owner opens it; the answers are what the mount shows its readers anyway). A user who cannot
reach it uses the mount's extended attributes, when it serves them.

:func:`ask`, the client side, never waits past its deadline: a daemon that is stopped or
hung accepts the connection (the kernel does) but does not answer, which is ``NoAnswer``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from wandbfs.daemon.procutil import NoAnswer

if TYPE_CHECKING:   # the CLI imports this module for ask(): the server's imports stay out of its way
    import trio

    from wandbfs.fuse.xattrs import Xattrs

log = logging.getLogger(__name__)

__all__ = ["ControlServer", "NoSocket", "ask"]

REQUEST_TIMEOUT = 30.0   # seconds a connection may stay open (an info walk may wait for W&B)
MAX_LINE = 1 << 16       # bytes in one request line
MAX_ANSWER = 1 << 24     # bytes in one answer line (an artifact's metadata can be large)
SUN_PATH_MAX = 107       # sockaddr_un.sun_path holds 108 bytes with the terminating NUL


class NoSocket(Exception):
    """No control socket we can reach: a daemon without one (older, or its bind failed),
    another state directory's, or another user's."""


@contextmanager
def _address(path: Path) -> Iterator[str]:
    """``path`` as an AF_UNIX address: itself, or through its directory's descriptor when it
    is longer than ``sun_path`` holds (deep state directories, pytest's temp dirs)."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


# ---- the daemon's side -------------------------------------------------------------------

class ControlServer:
    """Answers ``status`` and ``info`` requests from ``xattrs`` on a unix socket at ``path``."""

    def __init__(self, path: Path, xattrs: Xattrs, *, shared: bool = False,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.path = path
        self.xattrs = xattrs
        self.mode = 0o666 if shared else 0o600
        self.request_timeout = request_timeout
        self._bound: tuple[int, int] | None = None   # (st_dev, st_ino) of the socket file we made

    async def serve(self, *, task_status: Any) -> None:
        """Bind, report started, answer until cancelled (``nursery.start(server.serve)``). A
        socket that cannot be made is logged, not fatal: the mount serves anyway (``--xattrs``
        is then the way to ask)."""
        import trio

        try:
            sock = await self._bind()
        except OSError as e:
            log.warning("no control socket at %s (%s): `wandbfs info`/`status` reach this mount only "
                        "through --xattrs", self.path, e)
            task_status.started()
            return
        task_status.started()
        await trio.serve_listeners(self._handle, [trio.SocketListener(sock)])

    async def _bind(self) -> trio.socket.SocketType:
        import trio

        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # A socket file left by a daemon that was killed; a live daemon on this mount
            # point would have stopped this one from mounting.
            self.path.unlink(missing_ok=True)
            with _address(self.path) as addr:
                await sock.bind(addr)
            os.chmod(self.path, self.mode)
            st = os.stat(self.path)
            self._bound = (st.st_dev, st.st_ino)
            sock.listen(64)
        except BaseException:
            sock.close()
            raise
        log.debug("control socket at %s", self.path)
        return sock

    def close(self) -> None:
        """Remove the socket file, if it is still the one this daemon made."""
        if self._bound is None:
            return
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._bound:
                self.path.unlink()
        except OSError:
            pass
        self._bound = None

    async def _handle(self, stream: trio.SocketStream) -> None:
        """One connection: answer each request line until EOF; never raises (it would end
        the daemon's nursery)."""
        import trio

        try:
            async with stream:
                with trio.move_on_after(self.request_timeout):
                    buf = b""
                    while len(buf) <= MAX_LINE:
                        data = await stream.receive_some(MAX_LINE)
                        if not data:
                            return
                        buf += data
                        while b"\n" in buf:
                            line, buf = buf.split(b"\n", 1)
                            answer = await self.answer(line)
                            await stream.send_all(json.dumps(answer).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            log.debug("control socket: a client went away: %s", e)
        except Exception:  # noqa: BLE001 - a bad request must not end the daemon
            log.exception("control socket: failed to answer")

    async def answer(self, line: bytes) -> dict[str, Any]:
        """The answer to one request line (see the module docstring)."""
        try:
            req = json.loads(line)
            op = req.get("op") if isinstance(req, dict) else None
            if op == "status":
                return {"ok": True, "status": self.xattrs.status()}
            if op == "info":
                parts = req.get("path")
                if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
                    raise OSError(errno.EINVAL, "info needs a path: a list of names below the mount root")
                node = await self.xattrs.find(parts)
                if node is None:
                    raise OSError(errno.ENOENT, "no such file or directory")
                return {"ok": True, "info": await self.xattrs.info(node)}
            raise OSError(errno.EINVAL, f"unknown request {op!r} (status, info)")
        except Exception as e:  # noqa: BLE001 - every failure is an answer
            return _failure(e)


def _failure(e: Exception) -> dict[str, Any]:
    """A failed request as an answer: its errno (OSError's own, else the mount's errno table)."""
    from wandbfs.fuse.errors import UNEXPECTED, outcome_of

    if isinstance(e, OSError) and e.errno:
        code, message = e.errno, e.strerror or str(e)
    elif isinstance(e, ValueError):   # not JSON
        code, message = errno.EINVAL, f"not a JSON request: {e}"
    else:
        outcome = outcome_of(e)
        if outcome is UNEXPECTED:
            log.exception("control socket: unexpected error")
        code, message = outcome.errno, str(e)
    return {"ok": False, "errno": errno.errorcode.get(code, str(code)), "error": message}


# ---- the CLI's side ------------------------------------------------------------------------

def ask(path: Path, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The daemon's answer to ``request`` over the socket at ``path``, within ``timeout`` seconds.

    ``NoSocket`` when there is none to reach (nothing listens there, or not for us);
    ``NoAnswer`` when the daemon does not answer in time; a refused request is an
    ``OSError`` with the daemon's errno and message."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            with _address(path) as addr:
                s.connect(addr)
        except (FileNotFoundError, ConnectionRefusedError, PermissionError, NotADirectoryError) as e:
            raise NoSocket(f"{path}: {e.strerror}") from None
        except socket.timeout:
            raise NoAnswer(timeout) from None
        try:
            s.sendall(json.dumps(request).encode() + b"\n")
            line = _read_line(s, deadline)
        except socket.timeout:
            raise NoAnswer(timeout) from None
    if line is None:
        raise OSError(errno.EIO, "the daemon closed its control socket without an answer")
    answer = json.loads(line)
    if not answer.get("ok"):
        code = getattr(errno, str(answer.get("errno")), errno.EIO)
        raise OSError(code, answer.get("error") or os.strerror(code))
    return answer  # type: ignore[no-any-return]


def _read_line(s: socket.socket, deadline: float) -> bytes | None:
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        if len(buf) > MAX_ANSWER:
            raise OSError(errno.EMSGSIZE, f"an answer longer than {MAX_ANSWER} bytes")
        s.settimeout(left)
        data = s.recv(MAX_LINE)
        if not data:
            return None
        buf += data
    return buf.split(b"\n", 1)[0]
