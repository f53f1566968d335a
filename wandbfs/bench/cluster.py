"""Simulated cluster hosts for the shared cache tier (tests and bench row R12).

Each host is a network namespace with two veth pairs to the root namespace, and its mount
daemon runs in a pid and UTS namespace of its own (so no host can see another's processes,
and each has its own hostname and pid 1)::

    root namespace                                   namespace wfsc<i>  (host h<i>)
    emulator 127.0.0.1:E <- proxy 10.240.i.1:P ==wan veth (tbf, delay)== 10.240.i.2
    moto S3  0.0.0.0:S                 10.241.i.1 ==lan veth (fast)==== 10.241.i.2
    shared directory (one filesystem)          <- wandbfs mount -f MNT<i>, own cache <i>

The mount namespace is shared, so the test reads every host's mount point directly; the
daemon's W&B traffic goes over its host's WAN link and its tier traffic over the fast one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from wandbfs.bench.netns import WanUnavailable, _ip, start_delay_proxy, stop_process
from wandbfs.daemon.mounttab import is_mounted

__all__ = ["Cluster", "Host", "WanUnavailable"]

PREFIX = "wfsc"


def _tbf(dev: str, rate: str, netns: str | None) -> None:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + [
        "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", "1mb", "latency", "50ms"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise WanUnavailable(f"tc tbf on {dev}: {r.stderr.strip()}")


@dataclass
class Host:
    index: int
    root: Path                  # this host's own directory (cache, state, mount point)
    wan_ip: str                 # the root side of its WAN veth (the proxy listens here)
    lan_ip: str                 # the root side of its fast veth (the S3 server answers here)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def ns(self) -> str:
        return f"{PREFIX}{self.index}"

    @property
    def name(self) -> str:
        return f"h{self.index}"

    @property
    def mountpoint(self) -> Path:
        return self.root / "mnt"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def log_file(self) -> Path:
        return self.root / "daemon.log"

    def wrap(self, cmd: list[str]) -> list[str]:
        """``cmd`` in this host's network (the mount namespace stays ours)."""
        return ["nsenter", f"--net=/run/netns/{self.ns}", "--", *cmd]

    def mount(self, *options: str, timeout: float = 60) -> None:
        """``wandbfs mount -f`` as pid 1 of a new pid namespace in this host's network."""
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        inner = ["unshare", "--pid", "--uts", "--fork", "--kill-child", "--", "sh", "-c",
                 f'hostname {self.name} && exec "$@"', "sh", sys.executable, "-m", "wandbfs.cli", "mount", "-f",
                 str(self.mountpoint), "--cache-dir", str(self.cache), "--log-file", str(self.log_file), *options]
        self.proc = subprocess.Popen(self.wrap(inner), env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.root / "mount.err", "ab"), start_new_session=True)
        deadline = time.monotonic() + timeout
        while not is_mounted(self.mountpoint):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: mount exited {self.proc.returncode}: "
                                   f"{(self.root / 'mount.err').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: not mounted after {timeout}s")
            time.sleep(0.05)

    def daemon_pid(self) -> int | None:
        """The daemon's pid as the root namespace sees it (it is 1 in its own)."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        todo = [self.proc.pid]    # nsenter -> unshare -> sh, exec'd into the daemon (which has children)
        while todo:
            pid = todo.pop(0)
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if argv[0] == os.fsencode(sys.executable) and b"wandbfs.cli" in argv:
                    return pid
            except OSError:
                continue
            todo += _children(pid)
        return None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        pid = self.daemon_pid()
        if pid is not None:
            os.kill(pid, sig)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the daemon (it unmounts), else SIGKILL and a lazy unmount."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.kill(signal.SIGTERM)
                self.proc.wait(timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True, timeout=30)

    def log(self) -> str:
        """What the daemon logged (a foreground daemon logs to stderr)."""
        out = []
        for f in (self.log_file, self.root / "mount.err"):
            try:
                out.append(f.read_text(errors="replace"))
            except OSError:
                pass
        return "".join(out)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for t in os.listdir(f"/proc/{pid}/task")
                for p in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    except OSError:
        return []


class Cluster:
    """``n`` hosts; ``up(targets)`` makes the namespaces and the WAN proxy, ``down()`` removes all."""

    def __init__(self, work: Path, n: int, *, rtt_ms: float = 20.0, rate: str | None = "1gbit") -> None:
        """``rate=None``: no shaping and no delay on the WAN side (a correctness test)."""
        self.work = work
        self.rtt_ms = rtt_ms if rate else 0.0
        self.rate = rate
        self.hosts = [Host(i, work / f"h{i}", f"10.240.{i}.1", f"10.241.{i}.1") for i in range(n)]
        self.proxy: subprocess.Popen | None = None

    def up(self, emulator_port: int, base_env: Mapping[str, str]) -> "Cluster":
        if os.geteuid() != 0:
            raise WanUnavailable("network namespaces need root")
        try:
            for h in self.hosts:
                self._host_net(h)
            self._start_proxy(emulator_port)
            for h in self.hosts:
                env = dict(base_env)
                env["WANDB_BASE_URL"] = h.env.pop("WANDB_BASE_URL")
                env["WANDBFS_STATE_DIR"] = str(h.root / "state")
                env["HOME"] = str(h.root / "home")
                h.env = env
        except BaseException:
            self.down()
            raise
        return self

    def _host_net(self, h: Host) -> None:
        i = h.index
        _ip("netns", "del", h.ns, check=False)
        for dev in (f"wfw{i}a", f"wfl{i}a"):
            _ip("link", "del", dev, check=False)
        _ip("netns", "add", h.ns)
        for kind, net in (("w", 240), ("l", 241)):
            a, b = f"wf{kind}{i}a", f"wf{kind}{i}b"
            _ip("link", "add", a, "type", "veth", "peer", "name", b, "netns", h.ns)
            _ip("addr", "add", f"10.{net}.{i}.1/30", "dev", a)
            _ip("link", "set", a, "up")
            _ip("-n", h.ns, "addr", "add", f"10.{net}.{i}.2/30", "dev", b)
            _ip("-n", h.ns, "link", "set", b, "up")
            if kind == "w" and self.rate:
                _tbf(a, self.rate, None)
                _tbf(b, self.rate, h.ns)
        _ip("-n", h.ns, "link", "set", "lo", "up")
        h.root.mkdir(parents=True, exist_ok=True)

    def _start_proxy(self, emulator_port: int) -> None:
        maps = [f"{h.wan_ip}:0=127.0.0.1:{emulator_port}" for h in self.hosts]
        self.proxy, ports = start_delay_proxy(maps, self.rtt_ms)
        for h, m in zip(self.hosts, maps):
            h.env["WANDB_BASE_URL"] = f"http://{h.wan_ip}:{ports[m]}"

    def s3_endpoint(self, h: Host, port: int) -> str:
        """Where host ``h`` reaches an S3 server listening on all addresses at ``port`` (fast link)."""
        return f"http://{h.lan_ip}:{port}"

    def down(self) -> None:
        for h in self.hosts:
            h.stop()
        stop_process(self.proxy)
        self.proxy = None
        for h in self.hosts:
            _ip("link", "del", f"wfw{h.index}a", check=False)
            _ip("link", "del", f"wfl{h.index}a", check=False)
            _ip("netns", "del", h.ns, check=False)
