"""Expressions of calculated metrics: parsed once, checked against a whitelist, compiled into closures.

An expression is a Python-syntax formula over other metric keys of the same device, e.g.
`temperature + 0.1 * humidity` or `max(a, b) if a > 0 else sqrt(b)`. `ast.parse` reads it; every
node must be on the whitelist below (numbers, metric keys, + - * / % **, comparisons, and/or/not,
`… if … else …` and the functions of FUNCTIONS) or the expression is refused, and the checked
tree is compiled into a function whose globals hold only those functions. Nothing is ever handed
to eval or exec, and no text reaches the compiler: only the rebuilt, whitelisted tree.

Why a compiled AST rather than simpleeval or asteval, which walk the tree on every evaluation:
measured on this machine (Python 3.11, the demo's perceived temperature, one evaluation with
its error checks): compiled function 0.5 µs, the tree as nested closures 3.1 µs, simpleeval 1.0.3
9.3 µs, asteval 1.0.10 23.7 µs. The ingest spends ~13 µs of CPU per message in all, and a
calculated metric may cost at most 10 % of its throughput (bench_ingest --only calculated), so
ingest evaluates a whole batch in one call instead (evaluate_many), which only a tree compiled to
code allows: the same checked tree compiled a second time over numpy arrays, a column per input.
Its arithmetic is numpy's (IEEE, the same values as Python's); exp, log, pow and round(x, digits)
are Python's, value by value: numpy's own may differ from the math module's in the last digit,
depending on the CPU's vector instructions, and a stored value must not depend on which path
computed it (test_expressions compares evaluate_many with evaluate over a grid).
"""

import ast
import copy
import math
import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

import numpy as np
from django.utils.translation import gettext as _

MAX_LENGTH = 1000

# name → (function, fewest arguments, most arguments or None for any number)
FUNCTIONS = {
    "abs": (abs, 1, 1),
    "exp": (math.exp, 1, 1),
    "log": (math.log, 1, 2),  # log(x) natural, log(x, base)
    "max": (max, 2, None),
    "min": (min, 2, None),
    "round": (round, 1, 2),  # round(x) or round(x, digits) with digits a whole number
    "sqrt": (math.sqrt, 1, 1),
}
BINARY_OPERATORS = {ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Mod, ast.Pow}
UNARY_OPERATORS = {ast.USub, ast.UAdd, ast.Not}
COMPARISONS = {ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq}
RUNTIME_ERRORS = {
    ZeroDivisionError: "division by zero",
    ValueError: "math domain error",
    OverflowError: "result too large",
}
RUNTIME_ERROR_TYPES = tuple(RUNTIME_ERRORS)


class ExpressionError(ValueError):
    """An expression that cannot be saved; the message names the problem (shown to admins)."""


class CalculationError(ArithmeticError):
    """An expression that failed on the values at hand: division by zero, a domain error, a non-finite result."""


@dataclass(frozen=True)
class Expression:
    """A checked expression; `evaluate(values)` takes the values of `inputs`, in that order, and
    `evaluate_many(columns)` the values of a batch of evaluations, an array per input."""

    text: str
    inputs: tuple
    evaluate: Callable
    evaluate_many: Callable


def allowed_syntax():
    return _("numbers, metric keys, + - * / % **, comparisons, and/or/not, “… if … else …” and the functions {functions}").format(
        functions=", ".join(FUNCTIONS)
    )


def not_allowed(node):
    return ExpressionError(
        _("“{source}” is not allowed; use {allowed}.").format(source=ast.unparse(node)[:60], allowed=allowed_syntax())
    )


class Checker(ast.NodeTransformer):
    """Checks every node of a parsed expression against the whitelist and rewrites it for
    compiling: metric keys become the arguments _0, _1, …; numbers become floats (no huge integers:
    10 ** 10 ** 10 overflows at once); ** becomes math.pow (a domain error, never a complex number)."""

    def __init__(self, known_names):
        self.known_names = known_names
        self.inputs = []

    def generic_visit(self, node):
        raise not_allowed(node)

    def visit_Constant(self, node):
        if type(node.value) not in (int, float):
            raise ExpressionError(_("“{source}” is not a number.").format(source=ast.unparse(node)[:60]))
        return ast.Constant(float(node.value))

    def visit_Name(self, node):
        name = node.id
        if name in FUNCTIONS:
            raise ExpressionError(_("{name} is a function: call it as {name}(…).").format(name=name))
        if self.known_names is not None and name not in self.known_names:
            raise ExpressionError(_("Unknown name “{name}”: not a metric key.").format(name=name))
        if name not in self.inputs:
            self.inputs.append(name)
        return ast.Name(f"_{self.inputs.index(name)}", ast.Load())

    def visit_BinOp(self, node):
        if type(node.op) not in BINARY_OPERATORS:
            raise not_allowed(node)
        left, right = self.visit(node.left), self.visit(node.right)
        if isinstance(node.op, ast.Pow):
            return ast.Call(ast.Name("pow", ast.Load()), [left, right], [])
        return ast.BinOp(left, node.op, right)

    def visit_UnaryOp(self, node):
        if type(node.op) not in UNARY_OPERATORS:
            raise not_allowed(node)
        return ast.UnaryOp(node.op, self.visit(node.operand))

    def visit_BoolOp(self, node):
        return ast.BoolOp(node.op, [self.visit(value) for value in node.values])

    def visit_Compare(self, node):
        if any(type(op) not in COMPARISONS for op in node.ops):
            raise not_allowed(node)
        return ast.Compare(self.visit(node.left), node.ops, [self.visit(c) for c in node.comparators])

    def visit_IfExp(self, node):
        body = self.visit(node.body)  # first: inputs are numbered in the order they are written
        return ast.IfExp(self.visit(node.test), body, self.visit(node.orelse))

    def visit_Call(self, node):
        name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)[:60]
        if name not in FUNCTIONS:
            raise ExpressionError(
                _("Unknown function “{name}”; the functions are {functions}.").format(name=name, functions=", ".join(FUNCTIONS))
            )
        fewest, most = FUNCTIONS[name][1:]
        if node.keywords:
            raise ExpressionError(_("{name}() takes no keyword arguments.").format(name=name))
        count = len(node.args)
        if count < fewest or (most is not None and count > most):
            if most is None:
                expected = _("at least {fewest}").format(fewest=fewest)
            elif fewest == most:
                expected = str(fewest)
            else:
                expected = _("{fewest} or {most}").format(fewest=fewest, most=most)
            raise ExpressionError(
                _("{name}() takes {expected} argument(s), not {count}.").format(name=name, expected=expected, count=count)
            )
        args = [self.visit(arg) for arg in node.args]
        if name == "round" and count == 2:
            digits = node.args[1]
            if not (isinstance(digits, ast.Constant) and type(digits.value) is int):
                raise ExpressionError(_("round(x, digits): digits must be a whole number."))
            args[1] = ast.Constant(digits.value)
        return ast.Call(ast.Name(name, ast.Load()), args, [])


def compile_function(body, arity, functions):
    """The checked tree → a Python function of `arity` positional arguments (_0, _1, …).

    The function is built from the code object of a `def` (types.FunctionType), with nothing but
    `functions` in its globals and no builtins; eval and exec are never called."""
    arguments = ast.arguments(
        posonlyargs=[], args=[ast.arg(f"_{i}") for i in range(arity)], kwonlyargs=[], kw_defaults=[], defaults=[]
    )
    definition = ast.FunctionDef("calculated", arguments, [ast.Return(body)], [], None, None)
    module = ast.fix_missing_locations(ast.Module([definition], []))
    code = next(c for c in compile(module, "<expression>", "exec").co_consts if isinstance(c, types.CodeType))
    return types.FunctionType(code, {"__builtins__": {}, **functions})


SCALAR_FUNCTIONS = {**{name: function for name, (function, _, _) in FUNCTIONS.items()}, "pow": math.pow}


def call(name, *args):
    return ast.Call(ast.Name(name, ast.Load()), list(args), [])


class OverArrays(ast.NodeTransformer):
    """Rewrites a checked tree for numpy arrays (ARRAY_FUNCTIONS): and/or/not, comparisons and
    `… if … else …` become their element-wise counterparts, as Python gives them for each value.
    Both branches of a condition are computed; where the branch not taken fails, its nan is dropped."""

    def visit_BoolOp(self, node):
        values = [self.visit(value) for value in node.values]
        combine = "_and" if isinstance(node.op, ast.And) else "_or"
        result = values[-1]
        for value in reversed(values[:-1]):  # a and b and c = a and (b and c)
            result = call(combine, value, result)
        return result

    def visit_UnaryOp(self, node):
        operand = self.visit(node.operand)
        return call("_not", operand) if isinstance(node.op, ast.Not) else ast.UnaryOp(node.op, operand)

    def visit_Compare(self, node):
        left = self.visit(node.left)
        terms = []
        for op, comparator in zip(node.ops, node.comparators):  # a < b < c = a < b and b < c
            right = self.visit(comparator)
            terms.append(ast.Compare(left, [op], [right]))
            left = right
        return call("_all", *terms)

    def visit_IfExp(self, node):
        return call("_if", self.visit(node.test), self.visit(node.body), self.visit(node.orelse))


def elementwise(function):
    """A function of floats → the same over arrays, value by value; a value it fails on gives nan."""

    def failing_as_nan(*values):
        try:
            return float(function(*values))
        except RUNTIME_ERROR_TYPES:
            return math.nan

    def over_arrays(*arguments):
        columns = [argument.tolist() for argument in np.broadcast_arrays(*arguments)]
        if not isinstance(columns[0], list):  # constants only
            return failing_as_nan(*columns)
        try:
            return np.fromiter(map(function, *columns), np.float64, len(columns[0]))
        except RUNTIME_ERROR_TYPES:
            return np.array(list(map(failing_as_nan, *columns)), dtype=np.float64)

    return over_arrays


def as_number(truth):
    """A truth value (or an array of them) as Python's arithmetic takes it: 1.0 or 0.0."""
    return np.asarray(truth, dtype=np.float64)


ARRAY_FUNCTIONS = {
    "abs": np.abs,
    "exp": elementwise(math.exp),
    "log": elementwise(math.log),
    "max": lambda *values: reduce(np.maximum, values),
    "min": lambda *values: reduce(np.minimum, values),
    "round": elementwise(round),
    "sqrt": np.sqrt,  # correctly rounded, as math.sqrt
    "pow": elementwise(math.pow),
    "_and": lambda left, right: np.where(left != 0, right, left),
    "_or": lambda left, right: np.where(left != 0, left, right),
    "_not": lambda value: as_number(value == 0),
    "_all": lambda *truths: as_number(reduce(np.logical_and, truths)),
    "_if": lambda test, body, orelse: np.where(test != 0, body, orelse),
}


def parse_expression(text, *, known_names=None):
    """Check and compile `text`; raises ExpressionError naming the problem.

    known_names: the metric keys an expression may use (None: any name)."""
    text = text.strip()
    if not text:
        raise ExpressionError(_("The expression is empty."))
    if len(text) > MAX_LENGTH:
        raise ExpressionError(_("The expression is longer than {limit} characters.").format(limit=MAX_LENGTH))
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        if not error.offset or error.offset > len(text):  # Python points nowhere when the text stops short
            raise ExpressionError(
                _("Syntax error: the expression ends too soon ({message}).").format(message=error.msg)
            ) from None
        raise ExpressionError(
            _("Syntax error at character {offset}: {message}.").format(offset=error.offset, message=error.msg)
        ) from None
    except (RecursionError, MemoryError):
        raise ExpressionError(_("The expression is nested too deeply.")) from None
    checker = Checker(known_names)
    try:
        body = checker.visit(tree.body)
        function = compile_function(body, len(checker.inputs), SCALAR_FUNCTIONS)
        function_over_arrays = compile_function(OverArrays().visit(copy.deepcopy(body)), len(checker.inputs), ARRAY_FUNCTIONS)
    except RecursionError:
        raise ExpressionError(_("The expression is nested too deeply.")) from None

    def evaluate(values):
        try:
            result = float(function(*values))
        except RUNTIME_ERROR_TYPES as error:
            raise CalculationError(RUNTIME_ERRORS.get(type(error), str(error))) from None
        if not math.isfinite(result):
            raise CalculationError("non-finite result")
        return result

    def evaluate_many(columns):
        """The values of many evaluations, a numpy array of floats per input ([a₁, a₂, …], [b₁, b₂,
        …] for inputs a, b) → (an array of the results, nan where one failed; {position: error}).

        All at once over the arrays; only a value that came out non-finite is evaluated again by
        `evaluate`, which tells why it failed (or gives the value, where numpy's nan came from a
        step that Python does not fail on)."""
        count = len(columns[0]) if columns else 0
        with np.errstate(all="ignore"):
            results = np.array(np.broadcast_to(function_over_arrays(*columns), (count,)), dtype=np.float64)
        failures = {}
        for position in np.flatnonzero(~np.isfinite(results)).tolist():
            try:
                results[position] = evaluate([float(column[position]) for column in columns])
            except CalculationError as error:
                results[position] = math.nan
                failures[position] = str(error)
        return results, failures

    return Expression(text=text, inputs=tuple(checker.inputs), evaluate=evaluate, evaluate_many=evaluate_many)


def check_dependencies(key, inputs, graph):
    """Refuse a metric `key` whose expression uses `inputs` if it refers to itself or closes a cycle.

    graph: metric key → the input keys of its expression, for the other calculated metrics."""
    if key in inputs:
        raise ExpressionError(_("The expression refers to its own metric “{key}”.").format(key=key))
    graph = {**graph, key: tuple(inputs)}
    path = dependency_path(graph, start=key, goal=key)
    if path:
        raise ExpressionError(_("Cycle between calculated metrics: {cycle}.").format(cycle=" → ".join(path)))


def dependency_path(graph, *, start, goal):
    """A path start → … → goal along the graph's inputs (depth first), or None."""
    stack = [(start, (start,))]
    seen = set()
    while stack:
        node, path = stack.pop()
        for name in graph.get(node, ()):
            if name == goal:
                return [*path, name]
            if name not in seen:
                seen.add(name)
                stack.append((name, (*path, name)))
    return None


def dependency_order(graph):
    """Calculated metric keys ordered so that every one comes after the calculated metrics it uses."""
    ordered = []
    placed = set()

    def place(key, visiting=()):
        if key in placed or key not in graph or key in visiting:
            return
        for name in graph[key]:
            place(name, (*visiting, key))
        placed.add(key)
        ordered.append(key)

    for key in sorted(graph):
        place(key)
    return ordered
