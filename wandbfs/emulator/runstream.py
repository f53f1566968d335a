"""What one ``file_stream`` POST does to a run: history and events lines at their offsets
(a retried chunk rewrites, never duplicates), the last summary line, the console's length."""

from __future__ import annotations

import json
from typing import Any

from wandbfs.emulator.records import Run


def splice(lines: list[str], offset: int, content: list[str]) -> list[str]:
    """``content`` written at line ``offset`` (past the end: appended, never a gap)."""
    start = min(max(offset, 0), len(lines))
    return lines[:start] + content + lines[start + len(content):]


def check_stream_files(files: Any) -> None:
    """A file_stream ``files`` map is ``{name: {"offset": int, "content": [str]}}`` and a
    summary line is a JSON object; anything else is refused whole (ValueError)."""
    if not isinstance(files, dict):
        raise ValueError("files must be an object")
    for fname, chunk in files.items():
        content = chunk.get("content") if isinstance(chunk, dict) else None
        if not isinstance(content, list) or not all(isinstance(c, str) for c in content) \
                or not isinstance(chunk.get("offset", 0), int):
            raise ValueError(f"bad chunk for {fname}")
    summary = (files.get("wandb-summary.json") or {}).get("content") or []
    if summary and not isinstance(json.loads(summary[-1]), dict):
        raise ValueError("wandb-summary.json must be a JSON object")


def stream_file(r: Run, fname: str, offset: int, content: list[str]) -> None:
    """One file's chunk of a file_stream POST, kept on the run it belongs to."""
    if fname == "wandb-history.jsonl":
        r.history = splice(r.history, offset, content)
    elif fname == "wandb-events.jsonl":
        r.events = splice(r.events, offset, content)
    elif fname == "wandb-summary.json" and content:
        r.summary = content[-1]
    elif fname == "output.log":
        r.log_line_count = max(r.log_line_count, offset + len(content))
