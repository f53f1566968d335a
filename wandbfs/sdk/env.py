"""A hermetic, fast-failing environment for the wandb SDK: tests, the bench, the demo.

Everything the SDK writes goes under one root, and its retry loops are cut to seconds
(see shared/reference/wandb-sdk-protocol.md §5: by default a dead server costs 20 s per
call and a 500 on file_stream days of retries).
"""

from __future__ import annotations

import os
from pathlib import Path

FAST_ENV = {
    "WANDB__GRAPHQL_RETRY_MAX": "1", "WANDB__GRAPHQL_RETRY_WAIT_MIN_SECONDS": "1",
    "WANDB__GRAPHQL_RETRY_WAIT_MAX_SECONDS": "1",
    "WANDB__FILE_STREAM_RETRY_MAX": "1", "WANDB__FILE_STREAM_RETRY_WAIT_MIN_SECONDS": "1",
    "WANDB__FILE_STREAM_RETRY_WAIT_MAX_SECONDS": "1",
    "WANDB__FILE_TRANSFER_RETRY_MAX": "1", "WANDB__FILE_TRANSFER_RETRY_WAIT_MIN_SECONDS": "1",
    "WANDB__FILE_TRANSFER_RETRY_WAIT_MAX_SECONDS": "1",
    "WANDB_HTTP_TIMEOUT": "10", "WANDB_INIT_TIMEOUT": "20", "WANDB_SILENT": "true",
    "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true", "WANDB_CONSOLE": "off",
    "WANDB__DISABLE_STATS": "true", "WANDB__DISABLE_META": "true",
    "WANDB__DISABLE_MACHINE_INFO": "true", "WANDB__SAVE_REQUIREMENTS": "false",
}


def hermetic_env(root: Path, base_url: str, api_key: str, *, http_timeout: int = 10,
                 init_timeout: int = 20, base: dict[str, str] | None = None) -> dict[str, str]:
    """Variables to add to (or, with ``base``, a whole) environment for an isolated SDK."""
    env = dict(base or {})
    env.update(FAST_ENV)
    env["WANDB_HTTP_TIMEOUT"] = str(http_timeout)
    env["WANDB_INIT_TIMEOUT"] = str(init_timeout)
    for var, sub in [("HOME", "home"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"),
                     ("WANDB_DATA_DIR", "data"), ("WANDB_DIR", "wandb"), ("WANDB_ARTIFACT_DIR", "artifacts"),
                     ("TMPDIR", "tmp")]:
        (root / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(root / sub)
    env["WANDB_BASE_URL"] = base_url
    env["WANDB_API_KEY"] = api_key
    return env


def without_wandb_vars() -> dict[str, str]:
    """This process's environment minus every WANDB_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
