"""The schemaless executor honours GraphQL semantics and reports unserved fields."""

from wandbfs.emulator.executor import Node, execute


def _root(kind: str) -> Node:
    thing = Node("Thing", {"id": "1", "name": "x", "child": Node("Kid", {"n": 3})}, interfaces=("Named",))
    return Node("Query", {"thing": thing, "echo": lambda args: args.get("v"), "things": [thing, thing]})


def test_aliases_fragments_variables_and_directives():
    q = """
    query Q($v: Int = 7, $yes: Boolean!) {
      a: echo(v: $v)
      thing { ...F ... on Named { name } skipped: id @skip(if: $yes) kept: id @include(if: $yes) }
      things { __typename }
    }
    fragment F on Thing { id child { n } }
    """
    res = execute(q, {"yes": True}, "Q", _root)
    assert res.data == {"a": 7, "thing": {"id": "1", "child": {"n": 3}, "name": "x", "kept": "1"},
                        "things": [{"__typename": "Thing"}, {"__typename": "Thing"}]}
    assert res.missing == [] and res.operation_name == "Q"


def test_fragment_on_other_type_is_ignored_and_unknown_fields_are_reported():
    res = execute("{ thing { ... on Other { id } nope child { zzz } } }", None, None, _root)
    assert res.data == {"thing": {"nope": None, "child": {"zzz": None}}}
    assert sorted(res.missing) == ["Kid.zzz", "Thing.nope"]


def test_unserved_mutation_is_an_error_naming_it_not_a_null_success():
    """A mutation no resolver serves must not read as success to the client."""
    def roots(kind: str) -> Node:
        return Node("Mutation", {"known": lambda args: Node("Payload", {"success": True})})

    res = execute("mutation M { result: frobnicate(input: {x: 1}) { success } known { success } }",
                  None, "M", roots)
    assert res.data == {"result": None, "known": {"success": True}}
    assert res.errors == [{"message": "mutation frobnicate is not implemented by the emulator",
                           "path": ["result"]}]
    assert res.missing == []
    # An unserved field *inside* a served mutation's payload is still reported as missing.
    res = execute("mutation { known { success nope } }", None, None, roots)
    assert res.errors == [] and res.missing == ["Payload.nope"]
