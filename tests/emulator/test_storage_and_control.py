"""Signed URLs, Range, artifactsV2, restart, fault injection and the request log."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import wandb

from tests.conftest import API_KEY
from wandbfs.emulator import Emulator
from wandbfs.emulator.seed import publish


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _file_url(emu: Emulator, name: str, path: str) -> tuple[str, bytes]:
    art = wandb.Api().artifact(name)
    entry = art.get_entry(path)
    md5hex = base64.b64decode(entry.digest).hex()
    return emu.store and next(f.direct_url for f in art.files(names=[path])), emu.store.blobs.get(md5hex)


def test_range_requests(emu):
    url, data = _file_url(emu, "acme/wandb-registry-model/resnet50:v0", "model.safetensors")
    size = len(data)
    st, h, body = _get(url)
    assert st == 200 and body == data and int(h["Content-Length"]) == size
    st, h, body = _get(url, {"Range": "bytes=10-99"})
    assert st == 206 and body == data[10:100] and h["Content-Range"] == f"bytes 10-99/{size}"
    assert int(h["Content-Length"]) == 90
    st, h, body = _get(url, {"Range": f"bytes={size - 5}-"})
    assert st == 206 and body == data[-5:]
    st, h, body = _get(url, {"Range": "bytes=-7"})
    assert st == 206 and body == data[-7:]
    st, h, body = _get(url, {"Range": f"bytes={size + 10}-{size + 20}"})
    assert st == 416 and h["Content-Range"] == f"bytes */{size}"


def test_signed_urls_expire_and_are_tamper_proof(tmp_path):
    with Emulator(tmp_path / "state", url_lifetime_s=1) as emu:
        emu.store.add_org("acme")
        emu.store.create_registry("acme", "model")
        art, _ = publish(emu.store, "acme", "model", "c", {"f.txt": b"hello"})
        md5hex = emu.store.manifest(art)["contents"]["f.txt"]["digest"]
        md5hex = base64.b64decode(md5hex).hex()
        url = emu.signer.sign(emu.url, f"/_storage/blobs/{md5hex}")
        assert _get(url)[0] == 200
        assert _get(url.replace("sig=", "sig=0"))[0] == 403
        assert _get(f"{emu.url}/_storage/blobs/{md5hex}")[0] == 403
        deadline = time.time() + 5
        while _get(url)[0] == 200:
            assert time.time() < deadline, "signed URL never expired"
            time.sleep(0.1)
        st, _, body = _get(url)
        assert st == 403 and b"expired" in body


def test_artifacts_v2_requires_the_api_key(emu):
    url, data = _file_url(emu, "acme/wandb-registry-model/bert-base:v0", "config.json")
    md5hex = url.split("/_storage/blobs/")[1].split("?")[0]
    v2 = f"{emu.url}/artifactsV2/default/acme-org/wandb-registry-model/bert-base/QXJ0aWZhY3Q6MQ==/{md5hex}/config.json"
    assert _get(v2)[0] == 401
    auth = "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode()
    st, _, body = _get(v2, {"Authorization": auth})
    assert st == 200 and body == data


def test_graphql_refuses_bad_keys(emu):
    for key in ["short", None]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = "Basic " + base64.b64encode(f"api:{key}".encode()).decode()
        req = urllib.request.Request(f"{emu.url}/graphql", data=b'{"query":"{ viewer { id } }"}',
                                     headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(req, timeout=5)
        assert ei.value.code == 401


def test_state_survives_restart(tmp_path):
    state = tmp_path / "state"
    with Emulator(state) as emu:
        emu.store.add_org("acme")
        emu.store.create_registry("acme", "model")
        publish(emu.store, "acme", "model", "keep", {"a.txt": b"persisted"}, ["production"])
    with Emulator(state) as emu2:
        c = emu2.store.collection("acme-org", "wandb-registry-model", "keep")
        m = emu2.store.membership_by_alias(c, "production")
        art = emu2.store.artifacts[m.artifact_id]
        assert art.state == "COMMITTED" and "latest" in m.aliases
        assert emu2.store.manifest(art)["contents"]["a.txt"]["size"] == 9


def test_fault_injection_and_request_log(emu):
    url, data = _file_url(emu, "acme/wandb-registry-model/bert-base:v1", "pytorch_model.bin")
    ctl = f"{emu.url}/_emulator/faults"
    rule = [{"route": "blob", "status": 503, "times": 2}]
    urllib.request.urlopen(urllib.request.Request(ctl, data=json.dumps(rule).encode(), method="POST"), timeout=5)
    assert [_get(url)[0] for _ in range(3)] == [503, 503, 200]
    emu.faults.set([{"route": "blob", "truncate": 1000, "times": 1}])
    with pytest.raises(Exception):
        _get(url)  # claims the full length but closes early: the client sees an incomplete read
    emu.faults.set([{"route": "blob", "corrupt": True, "times": 1}])
    st, _, body = _get(url)
    assert st == 200 and len(body) == len(data) and body != data
    emu.faults.set([{"route": "blob", "rate_bps": 200_000, "times": 1}])
    t0 = time.monotonic()
    assert _get(url)[2] == data
    assert time.monotonic() - t0 >= len(data) / 200_000 * 0.8
    log = json.loads(urllib.request.urlopen(f"{emu.url}/_emulator/log", timeout=5).read())
    statuses = [e["status"] for e in log if e["route"] == "blob"]
    assert statuses[:3] == [503, 503, 200]
    ops = {e["operation"] for e in log if e["route"] == "graphql"}
    assert "ArtifactMembershipByName" in ops


def test_graphql_fault_by_operation_name(emu):
    emu.faults.set([{"route": "graphql", "operation": "ArtifactMembershipByName", "status": 404, "times": 1}])
    with pytest.raises(Exception):
        wandb.Api().artifact("acme/wandb-registry-model/bert-base:v0")
    assert wandb.Api().artifact("acme/wandb-registry-model/bert-base:v0").version == "v0"


def test_serve_command_prints_url_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "wandbfs.cli", "emulator", "serve", "--demo",
                             "--state", str(tmp_path / "s")], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("WANDB_BASE_URL=http://127.0.0.1:")
        base = line.split("=", 1)[1]
        assert json.loads(urllib.request.urlopen(f"{base}/_emulator/health", timeout=5).read()) == {"ok": True}
        assert _get(f"{base}/no/such/route")[0] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert (tmp_path / "s" / "state.json").exists()
