"""A calculator tool: arithmetic that is parsed, never run.

The expression is parsed into a syntax tree with Python's own parser (`ast.parse`, which
compiles and runs nothing) and walked over a small allowed set of nodes: numbers, `pi` and
`e`, + - * / // % ** (`^` is read as a power, as people write it), unary signs, parentheses
and a few functions. Anything else (a name, an attribute, a subscript, a string) is refused
with a message saying what. Numbers are exact fractions until an irrational step (a square
root that is not exact, a logarithm, a fractional power) makes them floats, so 0.1 + 0.2 is
0.3. Powers and results are bounded in size so that `9 ** 9 ** 9` is refused, not computed.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from typing import Annotated

from pydantic import Field

from itc.runtime.tools import Tool, tool

Number = Fraction | float

MAX_LENGTH = 500
"""Longest expression accepted, in characters."""
MAX_BITS = 4096
"""Largest numerator or denominator a result may have (about 1,200 decimal digits)."""

_SPELLINGS = {"^": "**", "×": "*", "·": "*", "÷": "/", "−": "-"}
_CONSTANTS: dict[str, Number] = {"pi": math.pi, "e": math.e}
_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot compute (the message says why)."""


def calculate(expression: str) -> int | float:
    """The value of an arithmetic expression: an int when it is a whole number, else a
    float. Raises CalculatorError for anything else."""
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"expression longer than {MAX_LENGTH} characters")
    text = expression.strip()
    for written, meant in _SPELLINGS.items():
        text = text.replace(written, meant)
    if not text:
        raise CalculatorError("empty expression")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise CalculatorError(f"not an arithmetic expression: {expression!r}") from error
    try:
        value = _value(tree.body)
        if isinstance(value, float):
            return value
        return int(value) if value.denominator == 1 else float(value)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("the result is too large") from None
    except RecursionError:
        raise CalculatorError("the expression is nested too deeply") from None


def _value(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        return _number(node.value)
    if isinstance(node, ast.Name):
        if node.id not in _CONSTANTS:
            known = ", ".join(sorted([*_CONSTANTS, *_FUNCTIONS]))
            raise CalculatorError(f"unknown name {node.id!r}; the calculator knows {known}")
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _value(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        combine = _BINARY.get(type(node.op))
        if combine is not None:
            result = combine(left, right)
            return _checked(Fraction(result) if _exact(left, right) else result)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return _call(node.func.id, node)
    if isinstance(node, ast.Call):
        node = node.func  # `math.sqrt(2)`: refused for what it calls
    raise CalculatorError(f"{_what(node)} is not allowed in an arithmetic expression")


def _call(name: str, node: ast.Call) -> Number:
    function = _FUNCTIONS.get(name)
    if function is None:
        known = ", ".join(sorted(_FUNCTIONS))
        raise CalculatorError(f"unknown function {name!r}; the functions are {known}")
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise CalculatorError(f"{name}: only plain positional arguments are allowed")
    return _checked(function(*(_value(a) for a in node.args)))


def _what(node: ast.expr) -> str:
    names = {ast.Attribute: "attribute access", ast.Subscript: "indexing"}
    return names.get(type(node), f"{type(node).__name__} syntax")


def _number(value: object) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CalculatorError(f"{value!r} is not a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CalculatorError("number too large")
        return Fraction(repr(value))  # the decimal as written: 0.1 is 1/10
    return _checked(Fraction(value))


def _exact(*values: Number) -> bool:
    return all(isinstance(v, Fraction) for v in values)


def _checked(value: Number) -> Number:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CalculatorError("the result is too large (or not a number)")
        return value
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_BITS:
        raise CalculatorError(f"the result has more than {MAX_BITS} bits")
    return value


def _power(base: Number, exponent: Number) -> Number:
    if isinstance(exponent, Fraction) and exponent.denominator == 1:
        if isinstance(base, Fraction) and abs(base) not in (0, 1):
            bits = max(base.numerator.bit_length(), base.denominator.bit_length())
            if (bits - 1) * abs(exponent) > MAX_BITS:
                raise CalculatorError(f"the power's result would have more than {MAX_BITS} bits")
        if isinstance(base, Fraction):
            return base ** int(exponent)
        return float(base) ** int(exponent)
    if base < 0:
        raise CalculatorError("a negative number to a fractional power is not a real number")
    result = float(base) ** float(exponent)
    exact = _exact_root(base, exponent)
    return result if exact is None else exact


def _exact_root(base: Number, exponent: Number) -> Fraction | None:
    """The exact value of a fractional power when it has one (4 ** 0.5 is 2, 8 ** (2/3) is
    4), else None."""
    if not (isinstance(base, Fraction) and isinstance(exponent, Fraction)):
        return None
    if exponent.numerator.bit_length() > 16 or exponent.denominator > 64:
        return None
    degree = exponent.denominator
    top = _integer_root(base.numerator, degree)
    bottom = _integer_root(base.denominator, degree)
    if top is None or bottom is None:
        return None
    root = _power(Fraction(top, bottom), Fraction(exponent.numerator))
    return root if isinstance(root, Fraction) else None


def _integer_root(value: int, degree: int) -> int | None:
    """The whole `degree`-th root of `value` >= 0, if it has one."""
    if degree == 2:
        guess = math.isqrt(value)
    elif value.bit_length() <= 1000:
        guess = round(value ** (1 / degree))
    else:
        return None
    return next((c for c in (guess - 1, guess, guess + 1) if c >= 0 and c**degree == value), None)


def _sqrt(x: Number) -> Number:
    if x < 0:
        raise CalculatorError("square root of a negative number")
    exact = _exact_root(x, Fraction(1, 2)) if isinstance(x, Fraction) else None
    return math.sqrt(x) if exact is None else exact


def _log(x: Number, base: Number | None = None) -> float:
    if x <= 0 or (base is not None and (base <= 0 or base == 1)):
        raise CalculatorError("logarithm of a non-positive number (or to base 1)")
    return math.log(x) if base is None else math.log(x) / math.log(base)


def _round(x: Number, digits: Number | None = None) -> Number:
    if digits is None:
        return Fraction(round(x))
    if not (isinstance(digits, Fraction) and digits.denominator == 1 and abs(digits) <= 100):
        raise CalculatorError("round's digits must be a whole number up to 100")
    return round(x, int(digits))


def _extreme(pick: Callable[..., Number]) -> Callable[..., Number]:
    def function(*values: Number) -> Number:
        if not values:
            raise CalculatorError(f"{pick.__name__} needs at least one number")
        return pick(values)

    return function


def _arity(function: Callable[..., Number], low: int, high: int) -> Callable[..., Number]:
    def checked(*values: Number) -> Number:
        if not low <= len(values) <= high:
            wanted = str(low) if low == high else f"{low} to {high}"
            raise CalculatorError(f"expected {wanted} arguments, got {len(values)}")
        return function(*values)

    return checked


_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "abs": _arity(abs, 1, 1),
    "sqrt": _arity(_sqrt, 1, 1),
    "round": _arity(_round, 1, 2),
    "floor": _arity(lambda x: Fraction(math.floor(x)), 1, 1),
    "ceil": _arity(lambda x: Fraction(math.ceil(x)), 1, 1),
    "log": _arity(_log, 1, 2),
    "exp": _arity(lambda x: math.exp(x), 1, 1),
    "min": _extreme(min),
    "max": _extreme(max),
}


def calculator_tool(name: str = "calculator", latency: float = 0.0) -> Tool:
    """The calculator as a tool."""

    @tool(name=name)
    async def calculator(
        expression: Annotated[str, Field(description="e.g. (3 + 4.5) * 2 / sqrt(16)")],
    ) -> int | float:
        """Evaluates an arithmetic expression exactly: numbers, + - * / // % ** (or ^),
        parentheses, pi, e, sqrt, abs, round, floor, ceil, log, exp, min, max."""
        return calculate(expression)

    return replace(calculator, latency=latency)
