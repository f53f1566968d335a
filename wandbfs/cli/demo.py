"""``scripts/demo``: the emulator with sample registries, mounted with wandbfs and browsed.

``scripts/demo`` leaves the emulator and the mount running so you can explore them;
``scripts/demo stop`` unmounts and stops the emulator.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DEMO_KEY = "demo-" + "0" * 40
DEMO_DIR = Path(os.environ.get("WANDBFS_DEMO_DIR", "/tmp/wandbfs-demo"))


def demo_env(base_url: str) -> dict[str, str]:
    d = DEMO_DIR
    return dict(os.environ, WANDB_BASE_URL=base_url, WANDB_API_KEY=DEMO_KEY, WANDB_SILENT="true",
                WANDB_CACHE_DIR=str(d / "cache"), WANDB_DIR=str(d), WANDB_CONFIG_DIR=str(d / "config"),
                WANDB_DATA_DIR=str(d / "data"), WANDB_ARTIFACT_DIR=str(d / "artifacts"),
                WANDBFS_STATE_DIR=str(d / "state"), WANDB_CONSOLE="off")


def start_emulator() -> str:
    log = open(DEMO_DIR / "emulator.out", "w")
    proc = subprocess.Popen([sys.executable, "-m", "wandbfs.cli", "emulator", "serve", "--demo",
                             "--state", str(DEMO_DIR / "emulator-state")],
                            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    line = proc.stdout.readline().strip() if proc.stdout else ""
    if not line.startswith("WANDB_BASE_URL="):
        proc.kill()
        raise SystemExit("demo: the emulator did not start (see %s)" % (DEMO_DIR / "emulator.out"))
    (DEMO_DIR / "emulator.pid").write_text(str(proc.pid))
    return line.split("=", 1)[1]


def run(cmd: list[str], env: dict[str, str]) -> None:
    print(f"$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, env=env, check=True)


def stop() -> None:
    mnt = DEMO_DIR / "mnt"
    env = demo_env("")
    subprocess.run([sys.executable, "-m", "wandbfs.cli", "unmount", str(mnt)], env=env)
    pidfile = DEMO_DIR / "emulator.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass
        pidfile.unlink()
    print("demo stopped")


def main() -> None:
    if sys.argv[1:] == ["stop"]:
        stop()
        return
    if (DEMO_DIR / "emulator.pid").exists():
        stop()
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    base = start_emulator()
    env = demo_env(base)
    print(f"W&B emulator (sample org 'acme') at {base}")
    mnt = DEMO_DIR / "mnt"
    mnt.mkdir(exist_ok=True)
    t0 = time.monotonic()
    run([sys.executable, "-m", "wandbfs.cli", "mount", str(mnt), "--project", "wandbfs-demo"], env)
    print(f"(mounted in {time.monotonic() - t0:.1f}s)\n")
    run(["ls", str(mnt / "acme")], env)
    run(["ls", "-l", str(mnt / "acme/model/resnet50")], env)
    run(["ls", "-l", str(mnt / "acme/model/resnet50/production") + "/"], env)
    run(["cat", str(mnt / "acme/model/resnet50/production/config.json")], env)
    print()
    run(["sha256sum", str(mnt / "acme/wandb-registry-model/resnet50:latest/model.safetensors")], env)
    print()   # project artifacts: the runs' own, by the name the W&B UI shows
    run(["ls", str(mnt / "@alice/demo-source")], env)
    run(["ls", str(mnt / "alice/demo-source/resnet50-source:v0") + "/"], env)
    print(f"""
wandbfs is mounted at {mnt}. Try:
  ls -l '{mnt}/acme/Fine-tuned Models/llama-ft'
  find {mnt}/acme/dataset/imagenet-mini/v2 | head
  ls -l {mnt}/@alice/demo-source/model/resnet50-source     # a project's artifacts, by type
To use the wandbfs command yourself:
  export WANDB_BASE_URL={base} WANDB_API_KEY={DEMO_KEY} WANDBFS_STATE_DIR={DEMO_DIR / "state"}
  wandbfs status; wandbfs info {mnt}/acme/model/resnet50/production/config.json; wandbfs lineage
To unmount and stop the emulator:  scripts/demo stop
""")


if __name__ == "__main__":
    main()
