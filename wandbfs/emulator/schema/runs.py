"""Runs: what a run logged, used and produced, and how ``api.runs`` finds them.

A run's history, events and summary are what the SDK streamed over ``file_stream``
(Store.stream_run keeps them); its files are what it uploaded through ``createRunFiles``.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import re
from datetime import datetime
from typing import Any

from wandbfs.emulator.executor import GraphQLFailure, Node
from wandbfs.emulator.records import VIEWER, Run, gid, now_iso
from wandbfs.emulator.store import Store
from wandbfs.emulator.schema.paging import connection, match_filter, order_by, _json
from wandbfs.emulator.schema.context import Ctx, shows

# Where the metric paths of a run's filter/order live (``config.lr``, ``summary_metrics.acc``).
_METRIC_ROOTS = ("config", "summary_metrics", "summaryMetrics")


def _loads(text: str | None) -> dict[str, Any]:
    try:
        v = json.loads(text or "{}")
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


def _unwrapped_config(raw: dict[str, Any]) -> dict[str, Any]:
    """W&B stores config as ``{key: {"value": v, "desc": ...}}``; filters see ``v``."""
    return {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in raw.items()}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Every dotted path into ``value`` as its own key (``config.opt.name``)."""
    out[prefix] = value
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)


def _seconds(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def run_doc(r: Run) -> dict[str, Any]:
    """A run as W&B's run filters and orders see it (the fields ``Api.runs`` documents).

    Both spellings the SDK's docs use are keys (``display_name`` and ``displayName``,
    ``created_at`` and ``createdAt``). ``config`` keeps W&B's stored form, so
    ``config.lr.value`` reaches the value as on W&B, and ``config.lr`` is a key of its
    own: W&B documents both. ``summary_metrics.*`` reaches into the summary.
    """
    raw_config, summary = _loads(r.config), _loads(r.summary)
    start, beat = _seconds(r.created_at), _seconds(r.heartbeat_at)
    doc: dict[str, Any] = {
        "name": r.name, "display_name": r.display_name, "displayName": r.display_name,
        "state": r.state, "tags": list(r.tags), "group": None, "jobType": r.job_type,
        "job_type": r.job_type, "createdAt": r.created_at, "created_at": r.created_at,
        "heartbeatAt": r.heartbeat_at, "heartbeat_at": r.heartbeat_at, "username": VIEWER,
        "entity": r.entity, "project": r.project, "sweep": None, "host": None,
        "duration": beat - start if start is not None and beat is not None else None,
        "config": raw_config, "summary_metrics": summary, "summaryMetrics": summary,
    }
    for k, v in _unwrapped_config(raw_config).items():
        _flatten(f"config.{k}", v, doc)
    return doc


def select_runs(store: Store, entity: str, project: str, filters: Any, order: str | None) -> list[Run]:
    """A project's runs that match ``filters`` (W&B's Mongo-style JSON), in ``order``.

    ``order`` is ``[+|-]field`` (the SDK sends ``+created_at`` unless told otherwise);
    runs that tie keep creation order in the requested direction. Ordering by a config or
    summary path no run has leaves creation order (W&B sorts nulls, it does not refuse).
    """
    flt = _json(filters)
    runs = [r for r in store.runs_in(entity, project) if match_filter(run_doc(r), flt)]
    if not order:
        return runs
    base = list(reversed(runs)) if order.startswith("-") else runs
    try:
        return order_by(base, run_doc, order)
    except GraphQLFailure:
        if order.lstrip("+-").split(".")[0] in _METRIC_ROOTS:
            return base
        raise


def _rows(r: Run) -> list[dict[str, Any]]:
    return [_loads(line) for line in r.history]


def _sample(items: list[Any], samples: int | None) -> list[Any]:
    """At most ``samples`` items, evenly spaced, first and last kept (W&B samples history
    down to the requested count; below it every row comes back)."""
    if samples is None or len(items) <= samples:
        return items
    if samples <= 1:
        return items[-1:] if samples == 1 else []
    step = (len(items) - 1) / (samples - 1)
    return [items[round(i * step)] for i in range(samples)]


def _in_steps(row: dict[str, Any], lo: int | None, hi: int | None) -> bool:
    step = row.get("_step")
    if lo is None and hi is None:
        return True
    if not isinstance(step, int):
        return False
    return (lo is None or step >= lo) and (hi is None or step < hi)


def _type_name(v: Any) -> str:
    """The type names W&B's ``historyKeys.typeCounts`` use (media dicts by their ``_type``)."""
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return str(v.get("_type") or "map")
    return "nil"


def history_keys(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``historyKeys`` (a JSON object, not a string): every key with how often each type was
    logged, and ``lastStep`` (absent with no history; the SDK reads that as -1)."""
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        for k, v in row.items():
            t = counts.setdefault(k, {})
            t[_type_name(v)] = t.get(_type_name(v), 0) + 1
    out: dict[str, Any] = {"keys": {k: {"typeCounts": [{"type": t, "count": n} for t, n in tc.items()]}
                                    for k, tc in counts.items()}}
    steps = [row["_step"] for row in rows if isinstance(row.get("_step"), int)]
    if steps:
        out["lastStep"] = max(steps)
    return out


def _like(pattern: str) -> re.Pattern[str]:
    """MySQL ``LIKE`` (what ``run.files(pattern=...)`` documents): ``%`` any run, ``_`` one."""
    parts = [".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL)


@shows(Run)
class RunNode(Node):
    typename = "Run"

    def __init__(self, ctx: Ctx, r: Run) -> None:
        super().__init__()
        self.ctx, self.r = ctx, r

    def f_id(self) -> str: return self.r.id
    def f_name(self) -> str: return self.r.name
    def f_displayName(self) -> str: return self.r.display_name or self.r.name

    def f_projectId(self) -> str:
        """The schema says ID: the project's number, as a string."""
        p = self.ctx.store.project(self.r.entity, self.r.project)
        return str(p.num) if p else ""

    def f_project(self) -> Node: return self.ctx.node(self.ctx.store.project(self.r.entity, self.r.project))  # type: ignore[arg-type]
    def f_tags(self) -> list[str]: return self.r.tags
    def f_sweepName(self) -> None: return None
    def f_state(self) -> str: return self.r.state
    def f_config(self) -> str: return self.r.config
    def f_group(self) -> None: return None
    def f_jobType(self) -> str | None: return self.r.job_type
    def f_commit(self) -> None: return None
    def f_host(self) -> None: return None
    def f_exitcode(self) -> int | None: return self.r.exitcode
    def f_readOnly(self) -> bool: return False
    def f_createdAt(self) -> str: return self.r.created_at
    def f_heartbeatAt(self) -> str: return self.r.heartbeat_at
    def f_updatedAt(self) -> str: return self.r.heartbeat_at
    def f_description(self) -> None: return None
    def f_notes(self) -> None: return None
    def f_summaryMetrics(self) -> str: return self.r.summary
    def f_historyLineCount(self) -> int: return len(self.r.history)
    def f_logLineCount(self) -> int: return self.r.log_line_count
    def f_eventsLineCount(self) -> int: return len(self.r.events)
    def f_historyTail(self) -> str: return json.dumps(self.r.history[-10:])
    def f_eventsTail(self) -> str: return json.dumps(self.r.events[-10:])
    def f_historyKeys(self) -> dict[str, Any]: return history_keys(_rows(self.r))
    def f_wandbConfig(self, keys: list[str] | None = None) -> str: return "{}"
    def f_user(self) -> Node: return Node("User", {"id": gid("User", VIEWER), "name": VIEWER, "username": VIEWER})

    def f_systemMetrics(self) -> str:
        """The latest system-metrics line (``wandb-events.jsonl``), as W&B keeps it."""
        return self.r.events[-1] if self.r.events else "{}"

    def f_history(self, samples: int | None = None, minStep: int | None = None,
                  maxStep: int | None = None, **_: Any) -> list[str]:
        """History rows as JSON lines, within ``[minStep, maxStep)`` (wandb-core's
        HistoryPage), sampled down to ``samples`` (``run.history()``)."""
        lines = [line for line, row in zip(self.r.history, _rows(self.r)) if _in_steps(row, minStep, maxStep)]
        return _sample(lines, samples)

    def f_parquetHistory(self, liveKeys: list[str] | None = None, **_: Any) -> Node:
        """What ``scan_history`` asks first: W&B's exported parquet files plus the rows not yet
        exported (``liveData``, one object per row with its ``_step``). The emulator exports
        nothing, so every row is live; with ``liveKeys`` a row carries only those keys."""
        rows = [r for r in _rows(self.r) if isinstance(r.get("_step"), int)]
        if liveKeys:
            want = set(liveKeys) | {"_step"}
            rows = [{k: v for k, v in r.items() if k in want} for r in rows]
        return Node("RunParquetHistory", {"parquetUrls": [], "liveData": rows})

    def f_events(self, samples: int | None = None, **_: Any) -> list[str]:
        return _sample(list(self.r.events), samples)

    def f_sampledHistory(self, specs: list[Any], **_: Any) -> list[list[dict[str, Any]]]:
        """One list per spec ``{"keys": [...], "samples": n, "minStep", "maxStep"}``: the rows
        that have every key, with only those keys (as W&B: keys logged at different steps give
        no rows). A spec's ``maxStep`` is inclusive: wandb-core's SampledHistoryPage asks
        ``minStep 0, maxStep 2, samples 3`` for steps 0-2 (HistoryPage's ``maxStep`` is not)."""
        out = []
        rows = _rows(self.r)
        for spec in specs:
            s = _json(spec) or {}
            keys = list(dict.fromkeys(s.get("keys") or []))
            hi = s.get("maxStep")
            picked = [{k: row[k] for k in keys} for row in rows
                      if all(k in row for k in keys) and _in_steps(row, s.get("minStep"), None if hi is None else hi + 1)]
            out.append(_sample(picked, s.get("samples")))
        return out

    def f_fileCount(self) -> int: return len(self.r.files)

    def f_files(self, names: list[str] | None = None, after: str | None = None, first: int | None = None,
                pattern: str | None = None, **_: Any) -> Node:
        """The run's uploaded files by name; ``names`` wins over ``pattern``."""
        wanted = sorted(self.r.files)
        if names:
            wanted = [n for n in wanted if n in set(names)]
        elif pattern:
            rx = _like(pattern)
            wanted = [n for n in wanted if rx.fullmatch(n)]
        return connection(wanted, lambda n: RunFileNode(self.ctx, self.r, n), after, first)

    def f_inputArtifacts(self, after: str | None = None, first: int | None = None, **_: Any) -> Node:
        seen: list[str] = []
        for u in self.ctx.store.uses_by_run(self.r):
            if u.artifact_id not in seen:
                seen.append(u.artifact_id)
        return connection(seen, lambda i: self.ctx.node(self.ctx.store.artifacts[i]), after, first)

    def f_outputArtifacts(self, after: str | None = None, first: int | None = None, **_: Any) -> Node:
        arts = [a for a in self.ctx.store.artifacts.values()
                if a.created_by == [self.r.entity, self.r.project, self.r.name]]
        return connection(arts, lambda a: self.ctx.node(a), after, first)


class RunFileNode(Node):
    """A file a run uploaded (``run.files()``), its bytes in the blob store by md5."""

    typename = "File"

    def __init__(self, ctx: Ctx, r: Run, name: str) -> None:
        super().__init__()
        self.ctx, self.r, self.name = ctx, r, name
        self.md5hex = r.files[name]

    def _stat(self) -> Any:
        try:
            return self.ctx.store.blobs.path(self.md5hex).stat()
        except (KeyError, OSError):
            return None

    def f_id(self) -> str: return gid("File", f"{self.r.id}:{self.name}")
    def f_name(self) -> str: return self.name
    def f_displayName(self) -> str: return self.name.rsplit("/", 1)[-1]
    def f_md5(self) -> str: return base64.b64encode(bytes.fromhex(self.md5hex)).decode()
    def f_digest(self) -> str: return self.f_md5()

    def f_sizeBytes(self) -> int:
        st = self._stat()
        return st.st_size if st else 0

    def f_mimetype(self) -> str:
        return mimetypes.guess_type(self.name)[0] or "application/octet-stream"

    def f_updatedAt(self) -> str:
        """When the bytes were stored (blobs are written once, by the upload)."""
        st = self._stat()
        return now_iso(st.st_mtime) if st else self.r.heartbeat_at

    def f_url(self, upload: bool = False) -> str:
        """A signed URL to read the file (``upload: true``: to write it again). W&B's ``url``
        is an API path that redirects to storage; the emulator hands out storage directly."""
        if upload:
            key = base64.urlsafe_b64encode(self.name.encode()).decode()
            return self.ctx.upload_url("run", f"{self.r.id}/{key}")
        return self.ctx.blob_url(self.md5hex)

    def f_directUrl(self) -> str: return self.ctx.blob_url(self.md5hex)
