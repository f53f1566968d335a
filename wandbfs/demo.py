"""``scripts/demo``: the emulator with sample data, browsed with the wandb SDK."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

DEMO_KEY = "demo-" + "0" * 40


def start_emulator(state: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "wandbfs.cli", "emulator", "serve", "--demo",
                             "--state", str(state)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip() if proc.stdout else ""
    if not line.startswith("WANDB_BASE_URL="):
        proc.kill()
        raise SystemExit("demo: the emulator did not start")
    return proc, line.split("=", 1)[1]


def sdk_env(base_url: str, root: Path) -> dict[str, str]:
    env = dict(os.environ, WANDB_BASE_URL=base_url, WANDB_API_KEY=DEMO_KEY, WANDB_SILENT="true",
               WANDB_CACHE_DIR=str(root / "cache"), WANDB_DIR=str(root), WANDB_CONFIG_DIR=str(root / "config"),
               WANDB_DATA_DIR=str(root / "data"), WANDB_ARTIFACT_DIR=str(root / "artifacts"))
    return env


def show_with_sdk() -> None:
    import wandb

    api = wandb.Api()
    print("Registries of org 'acme', as wandb.Api() sees them:")
    for reg in api.registries(organization="acme"):
        print(f"  {reg.name!r}")
        for coll in api.registry(reg.name, "acme").collections():
            vers = sorted(coll.artifacts(), key=lambda a: a.version)
            shown = ", ".join(f"{a.version}[{'/'.join(sorted(a.aliases))}]" if a.aliases else a.version
                              for a in vers)
            print(f"    {coll.name}: {shown}")
    art = api.artifact("acme/wandb-registry-model/resnet50:production")
    print(f"acme/wandb-registry-model/resnet50:production -> {art.version}, files:")
    for path, entry in sorted(art.manifest.entries.items()):
        print(f"    {path}  ({entry.size} bytes)")


def main() -> None:
    root = Path(os.environ.get("WANDBFS_DEMO_DIR") or tempfile.mkdtemp(prefix="wandbfs-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    proc, base = start_emulator(root / "emulator-state")
    print(f"W&B emulator running at {base} (state in {root / 'emulator-state'})")
    try:
        env = sdk_env(base, root)
        os.environ.update(env)
        show_with_sdk()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
