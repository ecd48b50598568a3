"""The plan language of the tool DAG: parsing (streamed too), every check a plan can fail
(with the message the planner is re-prompted with), reference substitution that keeps
types, and the grammar built from the tools."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from itc.runtime.tools import ToolRegistry, tool
from itc.strategies.tool_dag.check import PlanChecker, check_plan
from itc.strategies.tool_dag.execute import resolve
from itc.strategies.tool_dag.grammar import decision_grammar, plan_grammar
from itc.strategies.tool_dag.plan import PlanError, PlanParser, Ref, Template, parse_step


@tool
async def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@tool
async def search(query: str, top_k: int = 3) -> list[str]:
    """Search the documents."""
    return [query] * top_k


@tool
async def echo(value: Any) -> Any:
    """Return the value."""
    return value


@tool
async def pick(mode: Literal["fast", "slow"], values: list[int]) -> int:
    """Pick one of the values."""
    return values[0]


TOOLS = ToolRegistry([add, search, echo, pick])


def parsed(text: str) -> list[Any]:
    parser = PlanParser()
    return parser.feed(text) + parser.close()


def problems(text: str, references: bool = True) -> list[str]:
    return [str(p) for p in check_plan(parsed(text), TOOLS, references=references)[1]]


def test_a_plan_streamed_in_pieces_gives_each_line_as_soon_as_it_is_complete() -> None:
    parser = PlanParser()
    assert parser.feed('1. search("a') == []
    first = parser.feed('da", top_k=2)\n2. ad')
    assert [s.number for s in first] == [1]
    assert first[0].args == ("ada",) and first[0].kwargs == (("top_k", 2),)
    assert [s.tool for s in parser.feed("d($1, 2)\n3. join()")] == ["add"]
    assert not parser.joined
    assert [s.tool for s in parser.close()] == ["join"]
    assert parser.joined
    assert parser.feed("\n4. add(1, 2)\n") == []  # after the join: ignored
    assert parsed("Thought: first search\n\n1. echo(1)\njoin()")[-1].is_join


def test_parsers_share_no_state() -> None:
    one, two = PlanParser(), PlanParser()
    one.feed("1. echo(1)\n")
    assert two.steps == [] and two.text == ""


def test_arguments_are_json_with_references_in_lists_objects_and_strings() -> None:
    step = parse_step('4. echo([$1, ${2}, {"k": $3, "n": [1.5, null, true]}], x="$1 + $2 = $$3")')
    assert step is not None
    assert step.args == ([Ref(1), Ref(2), {"k": Ref(3), "n": [1.5, None, True]}],)
    assert step.kwargs == (("x", Template((Ref(1), " + ", Ref(2), " = $3"))),)
    assert step.refs == [1, 2, 3]
    assert parse_step('1. echo("costs $$5")').args == ("costs $5",)  # type: ignore[union-attr]


def test_multi_reference_substitution_keeps_types() -> None:
    results = {1: [1, 2], 2: {"k": "v"}, 3: 3, 4: 2.5, 5: "text"}
    value = [Ref(1), Ref(3), {"d": Ref(2), "f": Ref(4)}]
    assert resolve(value, results) == [[1, 2], 3, {"d": {"k": "v"}, "f": 2.5}]
    assert isinstance(resolve(Ref(3), results), int)
    assert resolve(Ref(1), results) is not results[1]  # a copy: no tool changes another's input
    template = Template((Ref(3), " + ", Ref(4), " of ", Ref(5), " in ", Ref(1), Ref(2)))
    assert resolve(template, results) == '3 + 2.5 of text in [1, 2]{"k": "v"}'


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1. echo(True)", "strings take double quotes; true, false and null are lowercase"),
        ("1. add($1 + $2)", 'to combine results, write them inside a string: "$1 + $2"'),
        ("echo(1)", "a tool call needs its line number"),
        ("1. echo(a=1, 2)", "a positional argument after a named one"),
        ("1. echo(a=1, a=2)", "a= is given twice"),
        ('1. echo("open)', "expected a JSON value or a reference"),
        ("1. echo(NaN)", "not a number JSON allows"),
        ("the plan is to add", "expected `N. tool(arguments)` or `N. join()`"),
    ],
)
def test_syntax_errors_name_the_line_and_what_to_write(line: str, message: str) -> None:
    with pytest.raises(PlanError) as error:
        parse_step(line, 7)
    assert str(error.value).startswith(f"line 7 `{line}`")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (
            "1. nope(1)\n2. join()",
            "line 1 `1. nope(1)`: unknown tool 'nope'; the tools are: add, echo, pick, search",
        ),
        (
            '1. add("x", 2)\n2. join()',
            'line 1 `1. add("x", 2)`: add(a: float, b: float): a: Input should be a valid number',
        ),
        (
            "1. add(1, 2, 3)\n2. join()",
            "add(a: float, b: float) takes 2 arguments but 3 were given",
        ),
        ("1. add(1, c=2)\n2. join()", "add(a: float, b: float) has no argument 'c'"),
        ("1. add(1, a=2)\n2. join()", "is given 'a' twice"),
        ("1. add(1)\n2. join()", "add(a: float, b: float): b: Field required"),
        ('1. pick("medium", [1])\n2. join()', "mode: Input should be 'fast' or 'slow'"),
        ("1. echo(1)\n2. add($2, 1)\n3. join()", "line 2 `2. add($2, 1)`: uses its own result $2"),
        ("1. echo($2)\n2. echo(1)\n3. join()", "line 1 `1. echo($2)`: uses $2, a later line"),
        (
            "1. echo(1)\n2. echo($9)\n3. join()",
            "line 2 `2. echo($9)`: uses $9, but there is no line 9",
        ),
        ("1. echo($0)\n2. join()", "uses $0, but the lines are numbered from 1"),
        (
            "1. echo($2)\n2. echo($1)\n3. join()",
            "line 1 `1. echo($2)`: lines $1 -> $2 -> $1 form a cycle",
        ),
        ("1. echo(1)\n3. echo(2)\n4. join()", "line 2 `3. echo(2)`: is numbered 3; expected 2"),
        (
            "1. echo(1)\n2. echo(2)",
            "line 3: the plan ends without a join line: finish it with `3. join()`",
        ),
        ("1. echo(1)\n2. join(1)", "line 2 `2. join(1)`: join() takes no arguments"),
    ],
)
def test_every_check_gives_a_message_naming_the_line(plan: str, message: str) -> None:
    found = problems(plan)
    assert any(message in p for p in found), found


def test_a_bad_line_does_not_make_every_later_line_misnumbered() -> None:
    found = problems("1. nope(1)\n2. echo(1)\n3. join()")
    assert len(found) == 1 and "unknown tool" in found[0]


def test_references_to_literal_checked_arguments_wait_for_run_time() -> None:
    calls, found = check_plan(parsed('1. search("x")\n2. add($1, 1)\n3. join()'), TOOLS)
    assert found == []
    assert [c.refs for c in calls] == [(), (1,)]
    assert calls[1].arguments == {"a": Ref(1), "b": 1}


def test_a_round_of_independent_calls_refuses_references() -> None:
    found = problems("1. echo(1)\n2. echo($1)\n3. join()", references=False)
    assert len(found) == 1 and "cannot use each other's results" in found[0]


def test_the_streaming_checker_stops_at_a_forward_reference_before_the_line_exists() -> None:
    checker = PlanChecker(TOOLS, max_calls=2)
    parser = PlanParser()
    assert checker.add(parser.feed("1. echo(1)\n")[0]) is not None
    with pytest.raises(PlanError, match="uses \\$3, a later line"):
        checker.add(parser.feed("2. echo($3)\n")[0])
    checker = PlanChecker(TOOLS, max_calls=1)
    checker.add(parse_step("1. echo(1)", 1))  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="at most 1 calls"):
        checker.add(parse_step("2. echo(2)", 2))  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="ends without a join line"):
        PlanChecker(TOOLS).finish()


def test_the_grammar_numbers_lines_and_offers_only_references_upward() -> None:
    grammar = plan_grammar(TOOLS, max_calls=3)
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    assert rules["root"] == "line1"
    assert rules["line1"] == '"1. " call_0 "\\n" (line2 | "2. join()")'
    assert rules["line3"] == '"3. " call_2 "\\n" "4. join()"'
    assert rules["ref_2"] == '"$" ("2" | "1")'
    assert "ref" not in rules["tool_add_0"]  # the first line cannot refer to anything
    assert rules["tool_search_1"] == (
        '"search(" (string_1 | ref_1) (", top_k=" (integer | ref_1))? ")"'
    )
    assert rules["tool_pick_0"].startswith('"pick(" ("\\"fast\\"" | "\\"slow\\"")')
    assert "{0,60}" in rules["string_0"]
    flat = plan_grammar(TOOLS, references=False, answer_chars=50)
    assert "ref_" not in flat and 'line1 | "Answer: "' in flat
    assert "Replan" in decision_grammar(True) and "Replan" not in decision_grammar(False)
    with pytest.raises(ValueError, match="named 'join'"):
        plan_grammar(ToolRegistry([tool(name="join")(echo.function)]))  # type: ignore[arg-type]
