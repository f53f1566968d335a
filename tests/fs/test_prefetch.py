"""``wandbfs prefetch`` fills the shared cache so a mount reads without downloading."""

from __future__ import annotations

from tests.fs.conftest import blob_gets, run_cli


def test_prefetch_by_name_then_mount_reads_from_cache(emu, mount, mount_env, fresh_cache):
    r = run_cli(["prefetch", "-q", "--cache-dir", str(fresh_cache),
                 "acme/wandb-registry-model/bert-base:production"], mount_env)
    assert r.returncode == 0, r.stderr
    assert "3 files" in r.stdout
    fetched = len(blob_gets(emu))
    assert fetched == 3
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage")
    for p in (m.path / "acme/model/bert-base/production").iterdir():
        p.read_bytes()
    assert len(blob_gets(emu)) == fetched  # nothing more downloaded


def test_prefetch_by_mount_path_and_subfolder(emu, mount, mount_env, fresh_cache):
    m = mount("--cache-dir", str(fresh_cache), "--no-lineage")
    r = run_cli(["prefetch", "-q", "--cache-dir", str(fresh_cache),
                 str(m.path / "acme/dataset/imagenet-mini/production/train")], mount_env)
    assert r.returncode == 0, r.stderr
    assert "5 files" in r.stdout  # v0 (production) has train/part-000..004 and splits/val/labels.csv
    assert len(blob_gets(emu)) == 5


def test_prefetch_errors_are_one_line(mount_env, tmp_path):
    for target in ["acme/wandb-registry-model/nope:v0", str(tmp_path)]:
        r = run_cli(["prefetch", "-q", target], mount_env)
        assert r.returncode == 1 and r.stderr.startswith("wandbfs: ") and len(r.stderr.strip().splitlines()) == 1
