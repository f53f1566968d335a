"""The simulated WAN link: a network namespace, a veth pair, ``tc tbf`` and a delaying proxy.

Layout (all addresses exist only on the veth pair this module creates and removes)::

    root namespace                                     namespace "wbench"
    emulator 127.0.0.1:E   <-- proxy 10.231.0.1:P  ==veth==  10.231.0.2  <-- wandbfs mount,
    nginx    127.0.0.1:N   <-- proxy 10.231.0.1:Q   (tbf both ends)            rclone, curl, SDK

- Rate: ``tc qdisc replace dev <veth> root tbf rate 1gbit burst 1mb latency 50ms`` on both
  ends (this kernel has no ``netem``; see shared/reference/bench-baseline.md).
- Latency: ``proxy.py`` delays each direction by half the round trip.
- Clients run with ``nsenter --net=/run/netns/wbench``: ``ip netns exec`` would also give them
  a private mount namespace, hiding their FUSE mount from the bench.

``WanLink.up()`` refuses (raises ``WanUnavailable``) when namespaces cannot be made, and
the bench falls back to loopback with a note. A namespace left by a bench that died is
removed at the next start, but only if the pid that created it is gone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from wandbfs.procfs import process_alive

NS = "wbench"
HOST_IF = "wbench0"
NS_IF = "wbench1"
HOST_IP = "10.231.0.1"
NS_IP = "10.231.0.2"
PREFIX = 30
OWNER_FILE = Path("/run/wandbfs-bench-wan.pid")


class WanUnavailable(Exception):
    """The namespace, veth or qdisc could not be set up (the reason is the message)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise WanUnavailable(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


_pid_alive = process_alive


def start_delay_proxy(maps: list[str], rtt_ms: float) -> tuple[subprocess.Popen, dict[str, int]]:
    """``proxy.py`` for ``maps`` (``listen_ip:0=target``), half the round trip each way;
    returns the process and each map's listening port."""
    cmd = [sys.executable, "-m", "wandbfs.bench.proxy", "--delay-ms", str(rtt_ms / 2)]
    for m in maps:
        cmd += ["--map", m]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        stop_process(proc)
        raise WanUnavailable("the delaying proxy did not start")
    return proc, json.loads(line)


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class WanLink:
    rtt_ms: float = 20.0
    rate: str = "1gbit"
    _up: bool = False
    proxy: subprocess.Popen | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def ns_path(self) -> str:
        return f"/run/netns/{NS}"

    def wrap(self, cmd: list[str]) -> list[str]:
        """Run ``cmd`` inside the namespace's network (same mount namespace as ours)."""
        return ["nsenter", f"--net={self.ns_path}", "--", *cmd]

    # ---- lifecycle ---------------------------------------------------------------------
    def _clear_stale(self) -> None:
        exists = os.path.exists(self.ns_path) or _ip("link", "show", HOST_IF, check=False).returncode == 0
        if not exists:
            return
        owner = None
        try:
            owner = int(OWNER_FILE.read_text().strip())
        except (OSError, ValueError):
            pass
        if owner and owner != os.getpid() and _pid_alive(owner):
            raise WanUnavailable(f"namespace {NS} is in use by another bench (pid {owner})")
        print(f"bench: removing a WAN namespace left by an earlier run (pid {owner})", file=sys.stderr)
        self._remove()

    def up(self) -> "WanLink":
        if os.geteuid() != 0:
            raise WanUnavailable("network namespaces need root")
        for tool in ("ip", "tc", "nsenter"):
            if subprocess.run(["which", tool], capture_output=True).returncode != 0:
                raise WanUnavailable(f"{tool} is not installed")
        self._clear_stale()
        try:
            OWNER_FILE.write_text(str(os.getpid()))
            self._up = True
            _ip("netns", "add", NS)
            _ip("link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF, "netns", NS)
            _ip("addr", "add", f"{HOST_IP}/{PREFIX}", "dev", HOST_IF)
            _ip("link", "set", HOST_IF, "up")
            _ip("-n", NS, "addr", "add", f"{NS_IP}/{PREFIX}", "dev", NS_IF)
            _ip("-n", NS, "link", "set", NS_IF, "up")
            _ip("-n", NS, "link", "set", "lo", "up")
            tbf = ["qdisc", "replace", "dev", "{dev}", "root", "tbf", "rate", self.rate, "burst", "1mb",
                   "latency", "50ms"]
            for dev, prefix in ((HOST_IF, []), (NS_IF, ["ip", "netns", "exec", NS])):
                cmd = prefix + ["tc"] + [a.replace("{dev}", dev) for a in tbf]
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
                if r.returncode != 0:
                    raise WanUnavailable(f"tc tbf on {dev}: {r.stderr.strip()}")
            # The veth needs a moment before the far side answers.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                r = subprocess.run(self.wrap(["ip", "route", "get", HOST_IP]), capture_output=True, text=True)
                if r.returncode == 0:
                    break
                time.sleep(0.05)
        except BaseException:
            self.down()
            raise
        return self

    def start_proxy(self, targets: dict[str, str]) -> dict[str, str]:
        """Listen on the root side of the veth for each ``name: host:port``; returns name: URL."""
        maps = [f"{HOST_IP}:0={t}" for t in targets.values()]
        self.proxy, ports = start_delay_proxy(maps, self.rtt_ms)
        return {name: f"http://{HOST_IP}:{ports[m]}" for name, m in zip(targets, maps)}

    def down(self) -> None:
        stop_process(self.proxy)
        self.proxy = None
        if self._up:
            self._remove()
            self._up = False

    @staticmethod
    def _remove() -> None:
        _ip("link", "del", HOST_IF, check=False)  # removes both ends
        _ip("netns", "del", NS, check=False)
        try:
            OWNER_FILE.unlink()
        except OSError:
            pass
