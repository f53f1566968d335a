"""Relay connections and the Mongo-style filters W&B's list fields take."""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Callable, Sequence, TypeVar

from wandbfs.emulator.executor import GraphQLFailure, Node
from wandbfs.emulator.records import Artifact, Collection, Membership, Project
from wandbfs.emulator.store import Store

T = TypeVar("T")


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


_MISSING = object()


def lookup(doc: dict[str, Any], key: str) -> Any:
    """``doc[key]``, a dotted key (``metadata.epochs``, ``config.lr``) walked through nested
    dicts as Mongo does; a key that is itself in ``doc`` wins. ``_MISSING`` when absent."""
    if key in doc:
        return doc[key]
    cur: Any = doc
    for part in key.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


def _comparable(a: Any, b: Any) -> bool:
    """Mongo compares numbers with numbers and strings with strings (type bracketing); ISO
    timestamps are strings, so ``created_at {"$gte": "2024-01-01"}`` compares them as text."""
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return (isinstance(a, num) and isinstance(b, num)) or (isinstance(a, str) and isinstance(b, str))


def _cmp(op: str, val: Any, arg: Any) -> bool:
    if not _comparable(val, arg):
        return False
    return {"$gt": val > arg, "$gte": val >= arg, "$lt": val < arg, "$lte": val <= arg}[op]


def _eq(val: Any, arg: Any) -> bool:
    """Equality as Mongo has it: an array matches an element or the whole array; ``null``
    matches a missing field."""
    if val is _MISSING:
        return arg is None
    if isinstance(val, list) and not isinstance(arg, list):
        return any(_eq(v, arg) for v in val)
    if isinstance(val, bool) != isinstance(arg, bool):
        return False
    return bool(val == arg)


def _regex(val: Any, arg: Any, options: str = "") -> bool:
    if isinstance(val, list):
        return any(_regex(v, arg, options) for v in val)
    if not isinstance(val, str):
        return False
    flags = re.IGNORECASE if "i" in options else 0
    try:
        return re.search(str(arg), val, flags | (re.MULTILINE if "m" in options else 0)) is not None
    except re.error as e:
        raise GraphQLFailure(f"invalid regex {arg!r}: {e}") from e


def _elements(val: Any) -> list[Any]:
    return val if isinstance(val, list) else [val]


def _op(op: str, val: Any, arg: Any, cond: dict[str, Any]) -> bool:
    """One field operator against the field's value (``_MISSING`` if absent)."""
    if op == "$eq":
        return _eq(val, arg)
    if op == "$ne":
        return not _eq(val, arg)
    if op in ("$in", "$nin"):
        if not isinstance(arg, list):
            raise GraphQLFailure(f"{op} needs an array")
        hit = any(_eq(val, a) for a in arg)
        return hit if op == "$in" else not hit
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return val is not _MISSING and any(_cmp(op, v, arg) for v in _elements(val))
    if op == "$exists":
        return (val is not _MISSING) == bool(arg)
    if op == "$regex":
        return val is not _MISSING and _regex(val, arg, str(cond.get("$options", "")))
    if op == "$options":
        return True  # read with $regex
    if op == "$not":
        return not _field(val, arg)
    if op == "$contains":
        return isinstance(val, str) and str(arg) in val or isinstance(val, list) and arg in val
    if op == "$size":
        return isinstance(val, list) and len(val) == arg
    if op == "$all":
        return isinstance(val, list) and all(any(_eq(v, a) for v in val) for a in _elements(arg))
    raise GraphQLFailure(f"unknown operator {op!r} in filter")


def _field(val: Any, cond: Any) -> bool:
    """A field's condition: a dict of ``$`` operators, or a value it must equal."""
    if isinstance(cond, dict) and cond and all(isinstance(k, str) and k.startswith("$") for k in cond):
        return all(_op(op, val, arg, cond) for op, arg in cond.items())
    if isinstance(cond, dict) and any(isinstance(k, str) and k.startswith("$") for k in cond):
        raise GraphQLFailure(f"filter mixes operators and fields: {cond!r}")
    return _eq(val, cond)


def _clauses(arg: Any, op: str) -> list[Any]:
    if not isinstance(arg, list) or not all(isinstance(c, dict) for c in arg):
        raise GraphQLFailure(f"{op} needs an array of filters")
    return arg


def match_filter(doc: dict[str, Any], flt: Any) -> bool:
    """Whether ``doc`` matches a Mongo-style filter, as W&B's list fields read theirs.

    Every operator the SDK's filter models can send (wandb/_filters/operators.py:
    ``$and $or $nor $not $eq $ne $in $nin $gt $gte $lt $lte $exists $regex $contains
    $size $all``) is honoured; dotted keys reach into nested dicts (a version's metadata,
    a run's config). An operator W&B does not know is a GraphQL error, never "match all".
    """
    if not flt:
        return True
    if not isinstance(flt, dict):
        raise GraphQLFailure(f"a filter must be an object, not {flt!r}")
    for key, cond in flt.items():
        if key == "$and":
            ok = all(match_filter(doc, c) for c in _clauses(cond, key))
        elif key == "$or":
            ok = any(match_filter(doc, c) for c in _clauses(cond, key))
        elif key == "$nor":
            ok = not any(match_filter(doc, c) for c in _clauses(cond, key))
        elif key == "$not":
            ok = not match_filter(doc, cond)
        elif key.startswith("$"):
            raise GraphQLFailure(f"unknown operator {key!r} in filter")
        else:
            ok = _field(lookup(doc, key), cond)
        if not ok:
            return False
    return True


def _order_key(name: str) -> str:
    """``createdAt`` and ``created_at`` name one field (the SDK sends either)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def order_by(items: Sequence[T], doc: Callable[[T], dict[str, Any]], order: str | None) -> list[T]:
    """``items`` sorted by W&B's ``order`` argument: ``[+|-]field`` (``-createdAt``,
    ``+name``, ``created_at``), ties kept in their default order. No order: as given.
    A field the documents do not have is a GraphQL error, as an unknown column is on W&B."""
    if not order:
        return list(items)
    desc, name = order.startswith("-"), order.lstrip("+-")
    key = _order_key(name)
    docs = [(doc(i), i) for i in items]
    if docs and all(lookup(d, name) is _MISSING and lookup(d, key) is _MISSING for d, _ in docs):
        raise GraphQLFailure(f"cannot order by {name!r}")

    def sort_key(pair: tuple[dict[str, Any], T]) -> tuple[int, Any]:
        v = lookup(pair[0], name)
        v = lookup(pair[0], key) if v is _MISSING else v
        if v is _MISSING or v is None:
            return (1, 0, "")  # missing last (both ways, as W&B's NULLS LAST)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return (0, 0, v)
        return (0, 1, v if isinstance(v, str) else json.dumps(v, sort_keys=True))

    present = [p for p in docs if sort_key(p)[0] == 0]
    absent = [p for p in docs if sort_key(p)[0] == 1]
    present.sort(key=sort_key, reverse=desc)
    return [i for _, i in present + absent]


def _json(s: Any) -> Any:
    if s is None or s == "":
        return None
    return json.loads(s) if isinstance(s, str) else s


# ---- the documents W&B's filters and orders see, one per record kind ----------------------
# Field names are those the SDK's registry search validates (wandb/apis/public/registries/
# _utils.py BASIC_*_FILTER_FIELDS), with the camelCase spellings W&B's GraphQL uses beside them.

def _num(gql_id: str) -> int | str:
    """The database number inside a W&B id (``base64("Project:12")`` -> 12)."""
    try:
        tail = base64.b64decode(gql_id).decode().rsplit(":", 1)[1]
        return int(tail)
    except Exception:  # noqa: BLE001 - an id that is not ours stays as it is
        return gql_id


def _stamped(fields: dict[str, Any], created: str, updated: str) -> dict[str, Any]:
    fields.update({"created_at": created, "createdAt": created, "updated_at": updated, "updatedAt": updated})
    return fields


def project_doc(p: Project, entity_id: str) -> dict[str, Any]:
    """A registry (project) as registry filters see it; ``id`` is the number the SDK's own
    ``registry_filter_for`` sends (``{"id": 12}``)."""
    return _stamped({"id": p.num, "name": p.name, "description": p.description, "access": p.access,
                     "entity_id": _num(entity_id)}, p.created_at, p.updated_at)


def collection_doc(c: Collection) -> dict[str, Any]:
    n = _num(c.id)
    return _stamped({"id": n, "artifact_collection_id": n, "collection_id": n, "name": c.name,
                     "description": c.description, "tag": list(c.tags), "tags": list(c.tags),
                     "type": c.type_name}, c.created_at, c.updated_at)


def version_doc(store: Store, m: Membership) -> dict[str, Any]:
    """A version (membership) as version filters see it: its aliases, ``vN``, state, and its
    metadata parsed from the stored JSON so ``metadata.epochs`` reaches into it."""
    a: Artifact = store.artifacts[m.artifact_id]
    try:
        metadata = json.loads(a.metadata or "{}")
    except ValueError:
        metadata = {}
    version = f"v{m.version_index}"
    return _stamped({"id": a.num, "artifact_id": a.num, "version": version, "version_index": m.version_index,
                     "alias": list(m.aliases), "aliases": list(m.aliases),
                     "tag": [], "state": a.state, "metadata": metadata, "size": a.size,
                     "digest": a.digest, "linked_at": m.created_at}, a.created_at, a.updated_at)
