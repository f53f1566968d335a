"""A schemaless GraphQL executor.

W&B's schema is not public, so the emulator cannot use a schema-first server. Instead a
query is parsed with graphql-core (a real parser: aliases, fragments, variables and
directives all behave as in GraphQL) and walked against plain Python resolver objects.
Any field the client selects that no resolver serves becomes ``null`` and is recorded in
``ExecutionResult.missing``, so tests can fail when the SDK asks for something we lack.
A mutation no resolver serves is different: a ``null`` payload would read as success to
the SDK (most of its mutations ignore the result), so it answers a GraphQL error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from graphql import parse
from graphql.language import ast

# A resolver object is a Node: a typename, optional interfaces and a field map.
# Field values are plain data or callables ``f(args: dict) -> value``.


class Node:
    """One GraphQL object value. Subclass or build with fields=..."""

    typename: str = "Object"
    interfaces: tuple[str, ...] = ()

    def __init__(self, typename: str | None = None, fields: Mapping[str, Any] | None = None,
                 interfaces: tuple[str, ...] = ()) -> None:
        if typename:
            self.typename = typename
        if interfaces:
            self.interfaces = interfaces
        self._fields = dict(fields or {})

    def resolve(self, name: str, args: dict[str, Any]) -> Any:
        """Return the field's value, or raise ``Unserved`` when this node does not serve it."""
        if name in self._fields:
            v = self._fields[name]
            return v(args) if callable(v) else v
        meth = getattr(self, "f_" + name, None)
        if meth is None:
            raise Unserved(name)
        return meth(**args) if args else meth()


class Unserved(LookupError):
    """A field this node does not serve (the executor reports it missing, or an unimplemented
    mutation as an error). Its own type: a KeyError inside a resolver is a bug, not this."""


class GraphQLFailure(Exception):
    """Raised by a resolver to put a message in the response's ``errors`` list; ``code``
    goes in its ``extensions`` and ``status`` is the HTTP status of the whole answer, as W&B
    sends a permission error (403, ``{"code": "PERMISSION_ERROR"}``)."""

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass
class ExecutionResult:
    data: dict[str, Any] | None
    errors: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    operation_name: str | None = None
    operation_type: str | None = None
    status: int = 200      # the HTTP status the answer goes out with


class _Ctx:
    def __init__(self, doc: ast.DocumentNode, variables: dict[str, Any], operation: str = "query") -> None:
        self.fragments = {d.name.value: d for d in doc.definitions
                          if isinstance(d, ast.FragmentDefinitionNode)}
        self.variables = variables
        self.operation = operation
        self.missing: list[str] = []
        self.errors: list[dict[str, Any]] = []
        self.status = 200


def _value(node: ast.ValueNode, variables: dict[str, Any]) -> Any:
    if isinstance(node, ast.VariableNode):
        return variables.get(node.name.value)
    if isinstance(node, ast.IntValueNode):
        return int(node.value)
    if isinstance(node, ast.FloatValueNode):
        return float(node.value)
    if isinstance(node, (ast.StringValueNode, ast.EnumValueNode)):
        return node.value
    if isinstance(node, ast.BooleanValueNode):
        return node.value
    if isinstance(node, ast.NullValueNode):
        return None
    if isinstance(node, ast.ListValueNode):
        return [_value(v, variables) for v in node.values]
    if isinstance(node, ast.ObjectValueNode):
        return {f.name.value: _value(f.value, variables) for f in node.fields}
    raise ValueError(f"unsupported value {node.kind}")


def _included(sel: ast.SelectionNode, ctx: _Ctx) -> bool:
    for d in sel.directives or ():
        cond = bool(_value(d.arguments[0].value, ctx.variables)) if d.arguments else True
        if d.name.value == "include" and not cond:
            return False
        if d.name.value == "skip" and cond:
            return False
    return True


def _type_matches(obj: Node, cond: ast.NamedTypeNode | None) -> bool:
    if cond is None:
        return True
    name = cond.name.value
    return name == obj.typename or name in obj.interfaces


def _collect(obj: Node, selections: ast.SelectionSetNode, ctx: _Ctx,
             out: list[ast.FieldNode]) -> None:
    for sel in selections.selections:
        if not _included(sel, ctx):
            continue
        if isinstance(sel, ast.FieldNode):
            out.append(sel)
        elif isinstance(sel, ast.InlineFragmentNode):
            if _type_matches(obj, sel.type_condition):
                _collect(obj, sel.selection_set, ctx, out)
        elif isinstance(sel, ast.FragmentSpreadNode):
            frag = ctx.fragments[sel.name.value]
            if _type_matches(obj, frag.type_condition):
                _collect(obj, frag.selection_set, ctx, out)


def _complete(value: Any, fnode: ast.FieldNode, ctx: _Ctx, path: str) -> Any:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_complete(v, fnode, ctx, f"{path}[]") for v in value]
    if isinstance(value, Node):
        if fnode.selection_set is None:
            raise GraphQLFailure(f"{path}: object needs a selection")
        return _object(value, fnode.selection_set, ctx, path)
    if fnode.selection_set is not None and isinstance(value, dict):
        # Plain dicts are allowed as light objects.
        return _object(Node(value.get("__typename", "Object"), value), fnode.selection_set,
                       ctx, path)
    return value


def _object(obj: Node, sset: ast.SelectionSetNode, ctx: _Ctx, path: str) -> dict[str, Any]:
    fields: list[ast.FieldNode] = []
    _collect(obj, sset, ctx, fields)
    result: dict[str, Any] = {}
    for f in fields:
        name = f.name.value
        key = f.alias.value if f.alias else name
        sub = f"{path}.{name}" if path else name
        if name == "__typename":
            result[key] = obj.typename
            continue
        args = {a.name.value: _value(a.value, ctx.variables) for a in f.arguments or ()}
        try:
            raw = obj.resolve(name, args)
        except Unserved:
            if not path and ctx.operation == "mutation":
                ctx.errors.append({"message": f"mutation {name} is not implemented by the emulator",
                                   "path": [key]})
            else:
                ctx.missing.append(f"{obj.typename}.{name}")
            result[key] = None
            continue
        except GraphQLFailure as e:
            err: dict[str, Any] = {"message": str(e), "path": sub.split(".")}
            if e.code:
                err["extensions"] = {"code": e.code}
            ctx.errors.append(err)
            ctx.status = max(ctx.status, e.status or 200)
            result[key] = None
            continue
        if key in result and isinstance(result[key], dict):
            merged = _complete(raw, f, ctx, sub)
            if isinstance(merged, dict):
                result[key].update(merged)
                continue
        result[key] = _complete(raw, f, ctx, sub)
    return result


def execute(query: str, variables: dict[str, Any] | None, operation_name: str | None,
            roots: Callable[[str], Node]) -> ExecutionResult:
    """Run one GraphQL request; ``roots('query'|'mutation')`` gives the root object."""
    doc = parse(query)
    ops = [d for d in doc.definitions if isinstance(d, ast.OperationDefinitionNode)]
    if operation_name:
        ops = [o for o in ops if o.name and o.name.value == operation_name] or ops
    if not ops:
        return ExecutionResult(None, [{"message": "no operation"}])
    op = ops[0]
    variables = dict(variables or {})
    for vd in op.variable_definitions or ():
        vname = vd.variable.name.value
        if vname not in variables and vd.default_value is not None:
            variables[vname] = _value(vd.default_value, {})
    op_type = op.operation.value
    ctx = _Ctx(doc, variables, op_type)
    data = _object(roots(op_type), op.selection_set, ctx, "")
    return ExecutionResult(data, ctx.errors, ctx.missing,
                           op.name.value if op.name else None, op_type, ctx.status)
