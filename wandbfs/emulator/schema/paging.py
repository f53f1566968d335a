"""Relay connections and the Mongo-style filters W&B's list fields take."""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Callable, Sequence

from wandbfs.emulator.executor import GraphQLFailure, Node


def _cursor(i: int) -> str:
    return base64.b64encode(f"cursor:{i}".encode()).decode()


def _offset(after: str | None) -> int:
    if not after:
        return 0
    try:
        return int(base64.b64decode(after).decode().split(":")[1]) + 1
    except Exception as e:  # noqa: BLE001 - a bad cursor is a client error
        raise GraphQLFailure(f"invalid cursor {after!r}") from e


def connection(items: Sequence[Any], make: Callable[[Any], Any], after: str | None = None,
               first: int | None = None, edge_extra: Callable[[Any], dict[str, Any]] | None = None
               ) -> Node:
    """A Relay connection with offset cursors; W&B pages every list this way."""
    start = _offset(after)
    end = len(items) if first is None else min(len(items), start + int(first))
    edges = []
    for i in range(start, end):
        fields: dict[str, Any] = {"node": make(items[i]), "cursor": _cursor(i)}
        if edge_extra:
            fields.update(edge_extra(items[i]))
        edges.append(Node("Edge", fields))
    page = Node("PageInfo", {"endCursor": _cursor(end - 1) if end > start else after,
                             "hasNextPage": end < len(items), "hasPreviousPage": start > 0,
                             "startCursor": _cursor(start) if end > start else None})
    return Node("Connection", {"edges": edges, "pageInfo": page, "totalCount": len(items)})


def match_filter(doc: dict[str, Any], flt: Any) -> bool:
    """The subset of W&B's Mongo-style filters the SDK sends ($eq $in $regex $and $or $ne)."""
    if not flt:
        return True
    for key, cond in flt.items():
        if key == "$and":
            if not all(match_filter(doc, c) for c in cond):
                return False
            continue
        if key == "$or":
            if not any(match_filter(doc, c) for c in cond):
                return False
            continue
        val = doc.get(key)
        if isinstance(cond, dict):
            for op, arg in cond.items():
                if op == "$eq" and val != arg:
                    return False
                if op == "$ne" and val == arg:
                    return False
                if op == "$in" and (val not in arg if not isinstance(val, list) else not set(val) & set(arg)):
                    return False
                if op == "$regex" and (val is None or not re.search(arg, str(val))):
                    return False
        elif isinstance(val, list):
            if cond not in val:
                return False
        elif val != cond:
            return False
    return True


def _json(s: Any) -> Any:
    if s is None or s == "":
        return None
    return json.loads(s) if isinstance(s, str) else s
