"""No CLI command hangs on a daemon that does not answer, and `wandbfs unmount --force`
detaches one (issue 11, item 4).

Real mounts whose daemon is stopped with SIGSTOP: every touch of such a mount blocks in the
kernel, so each command must see the daemon's state first (from /proc) or give up on the
mount after a deadline, and name the way out. Every test CONTs or kills what it stopped, in
``finally``, so a failure cannot wedge the suite. Measured times are printed (pytest -s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.fs.conftest import Mounted, _mounted, run_cli
from tests.helpers import wait_for
from wandbfs.daemon.mounttab import mount_table, parse_mountinfo
from wandbfs.procfs import process_state
from wandbfs.daemon.state import mount_id, mount_path, runtime_file

CONFIG = "acme/model/resnet50/production/config.json"
LIMIT = 15.0   # seconds any command may take against a daemon that does not answer


def _gone(pid: int) -> bool:
    return process_state(pid) in (None, "Z", "X")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The daemon stopped (SIGSTOP) inside the block, continued after it whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: process_state(pid) in ("T", "t"), 5, what=f"pid {pid} to stop")
        yield
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def timed(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = run_cli(args, env, timeout=LIMIT + 30)
    return r, time.monotonic() - t0


def _report(title: str, times: dict[str, float]) -> None:
    print(f"\n{title}: " + ", ".join(f"{k} {v:.2f}s" for k, v in times.items()))


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(") ", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _runtime(env: dict[str, str], mp: Path) -> Path:
    return runtime_file(mp, Path(env["WANDBFS_STATE_DIR"]))


@contextmanager
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process to stand for a daemon that does not exit (its runtime file names it)."""
    p = subprocess.Popen(["sleep", "300"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def _fake_runtime(env: dict[str, str], mp: Path, pid: int) -> None:
    path = _runtime(env, mp)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "mountpoint": str(mp), "log_file": str(mp) + ".log",
                                "started": time.time()}))


# ---- a stopped daemon: every command says so at once -------------------------------------

def _all_refused_while_stopped(commands: dict[str, list[str]], pid: int, env: dict[str, str],
                               hints: list[str]) -> dict[str, float]:
    """Run each command against the stopped daemon: each fails within LIMIT naming ``hints``."""
    times: dict[str, float] = {}
    for name, args in commands.items():
        r, times[name] = timed(args, env)
        assert r.returncode != 0, (name, r.stdout, r.stderr)
        assert times[name] <= LIMIT, (name, times[name])
        assert all(h in r.stderr for h in hints), (name, r.stderr)
    return times


@pytest.mark.timeout(240)
def test_no_command_hangs_on_a_stopped_daemon(mount, mount_env):
    m: Mounted = mount()
    mp = str(m.path)
    data = (m.path / CONFIG).read_bytes()
    pid = m.pid
    commands = {"unmount": ["unmount", mp], "status": ["status"], "status MNT": ["status", mp],
                "lineage": ["lineage"], "lineage MNT": ["lineage", mp], "refresh MNT": ["refresh", mp],
                "info MNT/...": ["info", f"{mp}/{CONFIG}"], "mount MNT": ["mount", mp]}
    try:
        with stopped(pid):
            times = _all_refused_while_stopped(commands, pid, mount_env,
                                               [f"`kill -CONT {pid}`", f"`wandbfs unmount --force {mp}`"])
            # nothing was done to the mount or the daemon
            assert _mounted(m.path) and process_state(pid) in ("T", "t")
    except BaseException:
        _kill(pid)
        raise
    _report("against a stopped daemon", times)
    # continued, it serves again as if nothing happened
    assert (m.path / CONFIG).read_bytes() == data
    r = run_cli(["status", mp, "--json"], mount_env, timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout)["pid"] == pid, r.stderr


@pytest.mark.timeout(240)
def test_path_commands_do_not_hang_on_a_stopped_daemon(mount, mount_env):
    """resolve, lock and prefetch with a path in a mount whose daemon is stopped."""
    m: Mounted = mount()
    mp = str(m.path)
    (m.path / CONFIG).read_bytes()
    pid = m.pid
    coll = f"{mp}/acme/model/resnet50"
    commands = {"resolve FILE": ["resolve", f"{mp}/{CONFIG}"], "lock ALIAS": ["lock", f"{coll}/production"],
                "lock COLLECTION": ["lock", coll], "prefetch PATH": ["prefetch", f"{coll}/production"]}
    try:
        with stopped(pid):
            times = _all_refused_while_stopped(commands, pid, mount_env, [f"`kill -CONT {pid}`"])
    except BaseException:
        _kill(pid)
        raise
    _report("path commands against a stopped daemon", times)
    r = run_cli(["resolve", f"{mp}/{CONFIG}"], mount_env, timeout=60)   # continued: answers again
    assert r.returncode == 0 and "resnet50:v1" in r.stdout, r.stdout + r.stderr


def _fusectl_mounted() -> bool:
    return any(e.fstype == "fusectl" for e in mount_table())


@pytest.fixture(params=["fusectl", "no-fusectl"])
def fusectl(request) -> Iterator[bool]:
    """With /sys/fs/fuse/connections (systemd mounts it) --force aborts the connection first;
    without it, killing the daemon is what ends the connection."""
    had = _fusectl_mounted()
    want = request.param == "fusectl"
    if want and not had:
        if os.geteuid() != 0:
            pytest.skip("mounting fusectl needs root")
        r = subprocess.run(["mount", "-t", "fusectl", "fusectl", "/sys/fs/fuse/connections"], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount fusectl: {r.stderr.decode().strip()}")
    if not want and had:
        pytest.skip("fusectl is mounted here (by someone else); not taking it away")
    yield want
    if want and not had:
        subprocess.run(["umount", "/sys/fs/fuse/connections"], capture_output=True)


@pytest.mark.timeout(240)
def test_unmount_force_detaches_a_stopped_daemon_and_the_path_mounts_again(mount, mount_env, fusectl):
    m: Mounted = mount()
    data = (m.path / CONFIG).read_bytes()
    pid = m.pid
    journal = Path(mount_env["WANDBFS_STATE_DIR"]) / f"lineage-{mount_id(m.path)}.jsonl"
    helpers = _children(pid)  # wandb-core
    reader = None
    try:
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: process_state(pid) in ("T", "t"), 5, what="the daemon to stop")
        before = journal.read_bytes() if journal.exists() else None
        # a reader blocked in the kernel on a name the daemon was never asked about
        reader = subprocess.Popen(["stat", str(m.path / "acme/model/bert-base")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        r, took = timed(["unmount", "--force", str(m.path)], mount_env)
        assert r.returncode == 0, r.stderr
        assert took <= LIMIT
        assert "journal for the next mount" in r.stderr and f"killed its daemon (pid {pid})" in r.stderr
        assert ("aborted its FUSE connection" in r.stderr) == fusectl, r.stderr
        assert not _mounted(m.path)
        wait_for(lambda: _gone(pid), 5, what="the daemon to be gone")
        assert not _runtime(mount_env, m.path).exists()
        assert (journal.read_bytes() if journal.exists() else None) == before   # lineage left for the next daemon
        reader.wait(timeout=10)   # released with an error, not served by anyone
        assert reader.returncode != 0
        t0 = time.monotonic()
        wait_for(lambda: all(_gone(h) for h in helpers), 60, what="the daemon's wandb-core to exit")
        core_gone = time.monotonic() - t0
        again = mount(mountpoint=m.path)
        assert again.pid != pid and (again.path / CONFIG).read_bytes() == data
    finally:
        if reader and reader.poll() is None:
            reader.kill()
        _kill(pid)
    _report(f"unmount --force ({'with' if fusectl else 'without'} fusectl)",
            {"unmount --force": took, "wandb-core gone after": core_gone})


# ---- a daemon we cannot see (no runtime file): bounded calls on the mount -----------------

@pytest.mark.timeout(240)
def test_a_mount_that_does_not_answer_is_given_up_on_after_a_deadline(mount, mount_env, tmp_path):
    """Without the daemon's runtime file (another state directory), the commands must touch
    the mount; each call runs in a child process that is abandoned after its deadline."""
    m: Mounted = mount()
    mp = str(m.path)
    (m.path / CONFIG).read_bytes()
    pid = m.pid
    blind = dict(mount_env, WANDBFS_STATE_DIR=str(tmp_path / "other-state"))
    times: dict[str, float] = {}
    try:
        with stopped(pid):
            for name, args in {"status MNT": ["status", mp], "status": ["status"],
                               "info MNT/...": ["info", f"{mp}/{CONFIG}"], "mount MNT": ["mount", mp]}.items():
                r, times[name] = timed(args, blind)
                assert r.returncode != 0, (name, r.stderr)
                assert times[name] <= LIMIT, (name, times[name])
                assert "did not answer within" in r.stderr and f"`wandbfs unmount --force {mp}`" in r.stderr, \
                    (name, r.stderr)
            # --force without knowing the daemon: the connection is aborted and the mount detached
            r, times["unmount --force"] = timed(["unmount", "--force", mp], blind)
            assert r.returncode == 0, r.stderr
            assert not _mounted(m.path)
    finally:
        _kill(pid)
    _report("against a mount with no runtime file", times)


@pytest.mark.timeout(180)
def test_info_and_status_give_up_on_a_control_socket_that_does_not_answer(mount, mount_env):
    """A daemon that looks alive (its runtime file names a running process) but does not
    answer: the kernel still accepts connections to its control socket, so the deadline is
    what ends `info` and `status`. Continued, the daemon answers as if nothing happened."""
    m: Mounted = mount()
    mp = str(m.path)
    (m.path / CONFIG).read_bytes()
    real = m.pid
    runtime = _runtime(mount_env, m.path)
    saved = runtime.read_text()
    times: dict[str, float] = {}
    try:
        with sleeper() as p:
            _fake_runtime(mount_env, m.path, p.pid)   # stands for the daemon: running, not stopped
            with stopped(real):
                for name, args in {"status MNT": ["status", mp], "status --json": ["status", "--json"],
                                   "info MNT/...": ["info", f"{mp}/{CONFIG}"],
                                   "info --json": ["info", "--json", f"{mp}/{CONFIG}"]}.items():
                    r, times[name] = timed(args, mount_env)
                    assert r.returncode != 0 and times[name] <= LIMIT, (name, times[name], r.stderr)
                    assert f"(pid {p.pid}) for {mp} did not answer within" in r.stderr, (name, r.stderr)
                    assert f"`wandbfs unmount --force {mp}`" in r.stderr, (name, r.stderr)
    except BaseException:
        _kill(real)
        raise
    finally:
        runtime.write_text(saved)
    _report("against a control socket that does not answer", times)
    r = run_cli(["status", mp, "--json"], mount_env, timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout)["pid"] == real, r.stderr
    r = run_cli(["info", "--json", f"{mp}/{CONFIG}"], mount_env, timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout)["path"] == "config.json", r.stderr


# ---- a daemon that outlives its mount ------------------------------------------------------

@pytest.mark.timeout(120)
def test_mount_refuses_while_the_previous_daemon_lives(mount, mount_env, tmp_path):
    mp = tmp_path / "busy"
    mp.mkdir()
    with sleeper() as p:
        _fake_runtime(mount_env, mp, p.pid)
        r = run_cli(["mount", str(mp)], mount_env, timeout=30)
        assert r.returncode == 1
        assert f"previous wandbfs daemon (pid {p.pid})" in r.stderr and "still running" in r.stderr
        assert f"`wandbfs unmount --force {mp}`" in r.stderr
        r = run_cli(["unmount", str(mp)], mount_env, timeout=30)
        assert r.returncode == 1 and "is not mounted, but its wandbfs daemon" in r.stderr and "--force" in r.stderr
        r = run_cli(["unmount", "--force", str(mp)], mount_env, timeout=30)
        assert r.returncode == 0, r.stderr
        p.wait(timeout=5)
        assert p.returncode == -signal.SIGKILL
        assert not _runtime(mount_env, mp).exists()
    m = mount(mountpoint=mp)
    assert (m.path / CONFIG).read_bytes()


@pytest.mark.timeout(120)
def test_unmount_says_so_when_the_daemon_does_not_exit(mount, mount_env):
    m: Mounted = mount()
    real = m.pid
    with sleeper() as p:
        _fake_runtime(mount_env, m.path, p.pid)   # stands for a daemon stuck on its way out
        try:
            t0 = time.monotonic()
            r = run_cli(["unmount", "--timeout", "2", str(m.path)], mount_env, timeout=30)
            took = time.monotonic() - t0
            assert r.returncode == 1 and f"has not exited after 2s" in r.stderr, r.stderr
            assert f"`wandbfs unmount --force {m.path}`" in r.stderr and took < 10
            assert not _mounted(m.path)
            wait_for(lambda: _gone(real), 30, what="the real daemon to exit after the unmount")
            r = run_cli(["unmount", "--force", str(m.path)], mount_env, timeout=30)
            assert r.returncode == 0 and f"killed its daemon (pid {p.pid})" in r.stderr, r.stderr
        finally:
            _kill(real)


def test_a_reused_pid_is_not_taken_for_the_daemon(tmp_path, monkeypatch):
    """A runtime file left by a daemon that was killed names a pid a later process may reuse."""
    from wandbfs.daemon.state import find_daemon

    monkeypatch.setenv("WANDBFS_STATE_DIR", str(tmp_path / "state"))
    mp = tmp_path / "mnt"
    with sleeper() as p:
        env = {"WANDBFS_STATE_DIR": str(tmp_path / "state")}
        _fake_runtime(env, mp, p.pid)
        assert find_daemon(mp) is not None and find_daemon(mp).pid == p.pid
        info = json.loads(_runtime(env, mp).read_text())
        _runtime(env, mp).write_text(json.dumps({**info, "started": info["started"] - 3600}))
        assert find_daemon(mp) is None


# ---- pure parts ----------------------------------------------------------------------------

def test_mount_path_resolves_the_parent_only(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    # the name is kept even when it does not exist (it is never stat'ed)
    assert mount_path(tmp_path / "link" / "mnt") == real / "mnt"
    assert mount_path(str(tmp_path / "link" / ".." / "real" / "mnt")) == real / "mnt"
    assert mount_id(tmp_path / "link" / "mnt") == mount_id(real / "mnt")


def test_parse_mountinfo_reads_escaped_mount_points_and_the_connection():
    text = ("36 25 0:32 / /mnt/with\\040space rw,nosuid - fuse.wandbfs wandbfs ro,user_id=0\n"
            "37 25 0:33 / /mnt/tagged rw shared:5 master:1 - fuse.wandbfs wandbfs ro\n"
            "garbage line\n")
    entries = parse_mountinfo(text)
    assert [(e.mountpoint, e.fstype, e.minor) for e in entries] == [
        ("/mnt/with space", "fuse.wandbfs", 32), ("/mnt/tagged", "fuse.wandbfs", 33)]


def test_bounded_calls_return_raise_or_give_up():
    from wandbfs.daemon.procutil import NoAnswer, bounded

    assert bounded(sum, [1, 2, 3]) == 6
    with pytest.raises(FileNotFoundError):
        bounded(os.stat, "/nonexistent/wandbfs")
    t0 = time.monotonic()
    with pytest.raises(NoAnswer):
        bounded(time.sleep, 60, timeout=0.5)
    assert time.monotonic() - t0 < 3


def test_an_abandoned_call_keeps_no_pipe_of_the_caller_open():
    """A caller that captures our output (a shell's $(...), a test) gets EOF when we exit,
    even while a call we abandoned is still running (here: never collected)."""
    code = ("import time; from wandbfs.daemon.procutil import Pending\n"
            "print(Pending(time.sleep, 60).pid, flush=True)\n")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    took = time.monotonic() - t0
    orphan = int(r.stdout.strip())
    try:
        assert r.returncode == 0 and took < 20, r.stderr
        assert not _gone(orphan)   # it outlived us, and did not hold our stdout
    finally:
        _kill(orphan)
