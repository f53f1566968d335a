"""deploy/: the files parse, say what the docs say, and the scripts run (so they cannot rot silently)."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fs.conftest import blob_gets

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
WANDBFS = Path(sys.executable).parent / "wandbfs"


# ---- systemd ------------------------------------------------------------------------------

def _unit(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(path.read_text())
    return cp


def test_systemd_units_have_what_they_need():
    svc = _unit(DEPLOY / "systemd/wandbfs@.service")
    s = svc["Service"]
    assert s["ExecStart"].startswith("/usr/local/bin/wandbfs mount --foreground ") and s["ExecStart"].endswith(" %f")
    assert s["Type"] == "exec" and "mountpoint -q" in s["ExecStartPost"]  # started == mounted
    assert s["EnvironmentFile"] == "/etc/wandbfs/wandbfs.env" and "--cache-dir /var/cache/wandbfs" in s["ExecStart"]
    assert "network-online.target" in svc["Unit"]["After"]
    mnt = _unit(DEPLOY / "systemd/mnt-wandb.mount")
    m = mnt["Mount"]
    assert (m["Where"], m["Type"]) == ("/mnt/wandb", "fuse.wandbfs")
    assert "env_file=/etc/wandbfs/wandbfs.env" in m["Options"] and "_netdev" in m["Options"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path):
    # verify checks that ExecStart exists: point it at this installation's wandbfs.
    text = (DEPLOY / "systemd/wandbfs@.service").read_text().replace("/usr/local/bin/wandbfs", str(WANDBFS))
    (tmp_path / "wandbfs@.service").write_text(text)
    shutil.copy(DEPLOY / "systemd/mnt-wandb.mount", tmp_path)
    for unit in ("wandbfs@mnt-wandb.service", "mnt-wandb.mount"):
        r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert not [ln for ln in r.stderr.splitlines() if "wandbfs" in ln or "mnt-wandb" in ln], r.stderr


# ---- Docker -------------------------------------------------------------------------------

def _instructions(text: str) -> list[tuple[str, str]]:
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def test_dockerfile():
    ins = _instructions((DEPLOY / "docker/Dockerfile").read_text())
    known = {"FROM", "RUN", "COPY", "WORKDIR", "ENV", "VOLUME", "ENTRYPOINT", "CMD", "ARG", "LABEL", "USER"}
    assert {w for w, _ in ins} <= known
    assert [r for w, r in ins if w == "FROM"][0].endswith(" AS build")
    for word, rest in ins:
        if word == "COPY" and not rest.startswith("--from"):
            for src in rest.split()[:-1]:
                assert (ROOT / src).exists(), f"COPY source {src} is not in the repository"
    runs = " ".join(r for w, r in ins if w == "RUN")
    for needed in ("libfuse3-dev", "pip wheel", "fuse3", "tini", "wandbfs install-helper"):
        assert needed in runs
    entry = json.loads(next(r for w, r in ins if w == "ENTRYPOINT"))
    assert entry[:2] == ["/usr/bin/tini", "--"]
    assert json.loads(next(r for w, r in ins if w == "CMD")) == ["/mnt/wandb"]


def test_container_entrypoint_creates_the_mount_point_and_runs_the_mount(tmp_path):
    fake = tmp_path / "bin/wandbfs"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin"}
    entry = DEPLOY / "docker/entrypoint.sh"
    mp = tmp_path / "mnt/wandbfs/registry"
    r = subprocess.run([str(entry), "--org", "acme", "--allow-other", str(mp)], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"mount --foreground --org acme --allow-other {mp}"
    assert mp.is_dir()
    r = subprocess.run([str(entry), "--allow-other"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "mount point" in r.stderr


# ---- Kubernetes ---------------------------------------------------------------------------

def _load(name: str) -> list[dict]:
    return list(yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()))


def test_daemonset_and_consumer_pod():
    (ds,) = _load("daemonset.yaml")
    assert ds["apiVersion"] == "apps/v1" and ds["kind"] == "DaemonSet"
    spec = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    (c,) = spec["containers"]
    assert c["securityContext"]["privileged"] is True
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["mounts"]["mountPropagation"] == "Bidirectional"
    assert vols["cache"]["hostPath"]["path"] == mounts["cache"]["mountPath"] == "/var/cache/wandbfs"
    mountpoint = c["args"][-1]
    # The FUSE mount sits one level below the shared hostPath.
    assert Path(mountpoint).parent == Path(mounts["mounts"]["mountPath"])
    host_mountpoint = Path(vols["mounts"]["hostPath"]["path"]) / Path(mountpoint).name
    assert "--cache-dir=/var/cache/wandbfs" in c["args"] and "--allow-other" in c["args"]
    key = next(e for e in c["env"] if e["name"] == "WANDB_API_KEY")
    assert key["valueFrom"]["secretKeyRef"]["key"] == "WANDB_API_KEY"
    assert mountpoint in c["readinessProbe"]["exec"]["command"]
    assert spec["terminationGracePeriodSeconds"] >= 45  # lineage drain is bounded at 30 s

    (pod,) = _load("consumer-pod.yaml")
    assert pod["kind"] == "Pod"
    (pc,) = pod["spec"]["containers"]
    (pv,) = pod["spec"]["volumes"]
    (pm,) = pc["volumeMounts"]
    assert pm["mountPropagation"] == "HostToContainer" and pm["readOnly"] is True
    assert Path(pv["hostPath"]["path"]) == host_mountpoint
    assert "securityContext" not in pc or not pc["securityContext"].get("privileged")
    compile(pc["args"][0], "<consumer>", "exec")
    assert pm["mountPath"] in pc["args"][0]


# ---- Slurm --------------------------------------------------------------------------------

PROLOG = DEPLOY / "slurm/prolog.sh"


def test_prolog_is_valid_bash():
    r = subprocess.run(["bash", "-n", str(PROLOG)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.access(PROLOG, os.X_OK)


def _prolog_env(tmp_path: Path, emu_url: str, cache: Path) -> dict[str, str]:
    from tests.conftest import hermetic_env

    creds = tmp_path / "wandbfs.env"
    env = hermetic_env(tmp_path / "sdk", emu_url)
    creds.write_text("".join(f"{k}={v}\n" for k, v in env.items() if k.startswith("WANDB") or k == "HOME"))
    creds.chmod(0o600)
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir(exist_ok=True)
    return {"PATH": f"{fakebin}:/usr/bin:/bin", "SLURM_JOB_ID": "42", "WANDBFS_BIN": str(WANDBFS),
            "WANDBFS_ENV_FILE": str(creds), "WANDBFS_CACHE_DIR": str(cache)}


def test_prolog_prefetches_what_the_job_comment_names(emu, tmp_path, fresh_cache):
    env = _prolog_env(tmp_path, emu.url, fresh_cache)
    scontrol = tmp_path / "fakebin/scontrol"
    scontrol.write_text('#!/bin/sh\necho "JobId=$4 JobName=train UserId=bob(1000) '
                        'Comment=wandbfs:acme/wandb-registry-model/bert-base:production,acme/wandb-registry-dataset/squad:v1 '
                        'Reservation=(null)"\n')
    scontrol.chmod(0o755)
    r = subprocess.run(["bash", str(PROLOG)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "prefetched acme/wandb-registry-model/bert-base:production: 3 files" in r.stderr
    assert "prefetched acme/wandb-registry-dataset/squad:v1: 2 files" in r.stderr
    assert len(blob_gets(emu)) == 5
    assert len(list((fresh_cache / "artifacts/obj/md5").glob("*/*"))) == 5  # the SDK's cache layout


def test_prolog_seeds_the_shared_tier_on_the_jobs_first_node(emu, tmp_path, fresh_cache):
    tier = tmp_path / "tier"
    tier.mkdir()
    env = _prolog_env(tmp_path, emu.url, fresh_cache)
    env.update(WANDBFS_PREFETCH="acme/wandb-registry-model/bert-base:production", WANDBFS_SHARED_CACHE=str(tier),
               SLURM_JOB_NODELIST="n1,n2", SLURMD_NODENAME="n1")
    r = subprocess.run(["bash", str(PROLOG)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "3 files" in r.stderr and "published to" in r.stderr, r.stderr
    assert len(list((tier / "obj/md5").glob("*/*"))) == 3
    # the second node reads them from the tier, with W&B storage refusing every blob
    other = tmp_path / "n2-cache"
    env.update(WANDBFS_CACHE_DIR=str(other), SLURMD_NODENAME="n2")
    emu.log.clear()
    emu.faults.set([{"route": "blob", "status": 403}])
    r = subprocess.run(["bash", str(PROLOG)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "prefetched acme/wandb-registry-model/bert-base:production: 3 files" in r.stderr, r.stderr
    assert "published" not in r.stderr        # not the first node: it only reads through the tier
    assert len(list((other / "artifacts/obj/md5").glob("*/*"))) == 3


def test_prolog_never_fails_the_job(emu, tmp_path, fresh_cache):
    env = _prolog_env(tmp_path, emu.url, fresh_cache)
    env["WANDBFS_PREFETCH"] = "acme/wandb-registry-model/no-such-collection:v0"
    r = subprocess.run(["bash", str(PROLOG)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0  # a failing prolog would drain the node
    assert "prefetch of acme/wandb-registry-model/no-such-collection:v0 failed" in r.stderr
    # Nothing named (no comment, no scontrol): nothing to do, quietly.
    env.pop("WANDBFS_PREFETCH")
    r = subprocess.run(["bash", str(PROLOG)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""


# ---- docs ---------------------------------------------------------------------------------

def test_deploy_doc_covers_every_deploy_file():
    doc = (ROOT / "docs/deploy.md").read_text()
    for f in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        assert str(f.relative_to(ROOT)) in doc, f"docs/deploy.md does not mention {f.relative_to(ROOT)}"
