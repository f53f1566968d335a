"""The bench's SDK side, run as a child process with a hermetic environment.

    python -m wandbfs.bench.sdkjobs publish SPEC.json    # wandb.init + log_artifact + link_artifact
    python -m wandbfs.bench.sdkjobs download SPEC.json   # wandb.Api().artifact(name).download(root)

Each prints JSON lines on stdout. Timings are taken inside the process, after ``import
wandb``, so they compare W&B work with W&B work, not interpreter start-up.
"""

from __future__ import annotations

import json
import sys
import time


def publish(spec: dict) -> None:
    import wandb

    run = wandb.init(entity=spec.get("entity", "alice"), project=spec.get("project", "bench-source"),
                     job_type="publish")
    try:
        for item in spec["versions"]:
            t0 = time.perf_counter()
            art = wandb.Artifact(item["source_name"], type=item.get("type", "model"))
            art.add_dir(item["dir"])
            run.log_artifact(art)
            art.wait()  # link in order, so vN is the N-th version we published
            run.link_artifact(art, f"{spec['org']}/wandb-registry-{spec['registry']}/{item['collection']}",
                              aliases=item.get("aliases", []))
            print(json.dumps({"collection": item["collection"], "seconds": time.perf_counter() - t0}), flush=True)
    finally:
        run.finish()


def download(spec: dict) -> None:
    t0 = time.perf_counter()
    import wandb

    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    api = wandb.Api()
    per = []
    for name, root in zip(spec["names"], spec["roots"]):
        t = time.perf_counter()
        api.artifact(name).download(root=root)
        per.append(time.perf_counter() - t)
    print(json.dumps({"seconds": time.perf_counter() - t1, "import_seconds": t_import, "per": per}), flush=True)


def main(argv: list[str]) -> int:
    cmd, path = argv[0], argv[1]
    with open(path) as f:
        spec = json.load(f)
    {"publish": publish, "download": download}[cmd](spec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
