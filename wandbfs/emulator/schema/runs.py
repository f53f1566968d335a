"""Runs: what a run logged, used and produced."""

from __future__ import annotations

from typing import Any

from wandbfs.emulator.executor import Node
from wandbfs.emulator.store import VIEWER, Run
from wandbfs.emulator.schema.paging import connection
from wandbfs.emulator.schema.context import Ctx, shows


@shows(Run)
class RunNode(Node):
    typename = "Run"

    def __init__(self, ctx: Ctx, r: Run) -> None:
        super().__init__()
        self.ctx, self.r = ctx, r

    def f_id(self) -> str: return self.r.id
    def f_name(self) -> str: return self.r.name
    def f_displayName(self) -> str: return self.r.display_name or self.r.name
    def f_projectId(self) -> int: return self.ctx.store.project(self.r.entity, self.r.project).num  # type: ignore[union-attr]
    def f_project(self) -> Node: return self.ctx.node(self.ctx.store.project(self.r.entity, self.r.project))  # type: ignore[arg-type]
    def f_tags(self) -> list[str]: return self.r.tags
    def f_sweepName(self) -> None: return None
    def f_state(self) -> str: return self.r.state
    def f_config(self) -> str: return self.r.config
    def f_group(self) -> None: return None
    def f_jobType(self) -> str | None: return self.r.job_type
    def f_commit(self) -> None: return None
    def f_readOnly(self) -> bool: return False
    def f_createdAt(self) -> str: return self.r.created_at
    def f_heartbeatAt(self) -> str: return self.r.heartbeat_at
    def f_description(self) -> None: return None
    def f_notes(self) -> None: return None
    def f_systemMetrics(self) -> str: return "{}"
    def f_summaryMetrics(self) -> str: return self.r.summary
    def f_historyLineCount(self) -> int: return 0
    def f_logLineCount(self) -> int: return 0
    def f_eventsLineCount(self) -> int: return 0
    def f_historyTail(self) -> str: return "[]"
    def f_eventsTail(self) -> str: return "[]"
    def f_historyKeys(self) -> str: return "{}"
    def f_wandbConfig(self, keys: list[str] | None = None) -> str: return "{}"
    def f_user(self) -> Node: return Node("User", {"name": VIEWER, "username": VIEWER})

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
