"""Expressions of calculated metrics (apps.devices.expressions): the whitelist, its messages,
evaluation equal to the same formula written in Python, runtime failures, dependency order."""

import itertools
import math

import numpy as np
import pytest

from apps.devices.expressions import (
    CalculationError,
    ExpressionError,
    check_dependencies,
    dependency_order,
    parse_expression,
)

KNOWN = {"temperature", "humidity", "pressure", "dew_point"}


@pytest.mark.parametrize(
    "text, inputs",
    [
        ("temperature + 0.1 * humidity", ("temperature", "humidity")),
        ("humidity * temperature - temperature", ("humidity", "temperature")),
        ("exp(temperature) + log(humidity) + log(humidity, 10) + sqrt(pressure)", ("temperature", "humidity", "pressure")),
        ("min(temperature, humidity, 3) + max(temperature, 1) + abs(-temperature)", ("temperature", "humidity")),
        ("round(temperature) + round(temperature, 2)", ("temperature",)),
        ("temperature if humidity > 50 else -temperature", ("temperature", "humidity")),
        ("1 if 0 < temperature <= 30 and not humidity == 1 or pressure != 2 else 0", ("temperature", "humidity", "pressure")),
        ("temperature ** 2 % 7", ("temperature",)),
    ],
)
def test_valid_expressions_and_their_inputs(text, inputs):
    assert parse_expression(text, known_names=KNOWN).inputs == inputs


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "The expression is empty."),
        ("temperature +", "Syntax error: the expression ends too soon (invalid syntax)."),
        ("temperature humidity", "Syntax error at character 13: invalid syntax."),
        ("wind + 1", "Unknown name “wind”: not a metric key."),
        ("pow(temperature, 2)", "Unknown function “pow”; the functions are abs, exp, log, max, min, round, sqrt."),
        ("__import__('os')", "Unknown function “__import__”"),
        ("temperature.real", "“temperature.real” is not allowed; use numbers, metric keys"),
        ("(1).__class__", "__class__” is not allowed"),
        ("[temperature][0]", "is not allowed"),
        ("(lambda: 1)()", "Unknown function “lambda: 1”"),
        ("lambda: 1", "“lambda: 1” is not allowed"),
        ("temperature // 2", "“temperature // 2” is not allowed"),
        ("temperature in (1, 2)", "is not allowed"),
        ("'a' + temperature", "“'a'” is not a number."),
        ("True + temperature", "“True” is not a number."),
        ("exp + 1", "exp is a function: call it as exp(…)."),
        ("exp(temperature, 2)", "exp() takes 1 argument(s), not 2."),
        ("log()", "log() takes 1 or 2 argument(s), not 0."),
        ("max(temperature)", "max() takes at least 2 argument(s), not 1."),
        ("round(temperature, ndigits=2)", "round() takes no keyword arguments."),
        ("round(temperature, humidity)", "round(x, digits): digits must be a whole number."),
        ("x := 1", "Syntax error"),
        ("temperature + " * 300 + "1", "longer than 1000 characters"),
    ],
)
def test_invalid_expressions_name_the_problem(text, message):
    with pytest.raises(ExpressionError) as error:
        parse_expression(text, known_names=KNOWN)
    assert message in str(error.value)


def test_deep_nesting_is_refused_not_crashing():
    with pytest.raises(ExpressionError, match="nested too deeply|longer than"):
        parse_expression("(" * 999 + "1" + ")" * 999)


def test_values_equal_the_formula_in_python():
    text = "temperature + 0.33 * (humidity / 100 * 6.105 * exp(17.27 * temperature / (237.7 + temperature))) - 4.0"
    expression = parse_expression(text, known_names=KNOWN)
    for temperature in (-20.0, 0.0, 12.5, 23.4, 41.0):
        for humidity in (0.0, 35.5, 80.0, 100.0):
            expected = temperature + 0.33 * (humidity / 100 * 6.105 * math.exp(17.27 * temperature / (237.7 + temperature))) - 4.0
            assert expression.evaluate([temperature, humidity]) == expected
    choose = parse_expression("round(temperature, 1) if humidity > 50 else min(temperature, humidity) ** 2", known_names=KNOWN)
    assert choose.evaluate([3.14159, 60.0]) == 3.1
    assert choose.evaluate([3.0, 2.0]) == 4.0


@pytest.mark.parametrize(
    "text, values, message",
    [
        ("temperature / humidity", [1.0, 0.0], "division by zero"),
        ("temperature % humidity", [1.0, 0.0], "division by zero"),
        ("log(temperature)", [-1.0], "math domain error"),
        ("sqrt(temperature)", [-4.0], "math domain error"),
        ("temperature ** 0.5", [-8.0], "math domain error"),
        ("exp(temperature)", [1000.0], "result too large"),
        ("10 ** 10 ** 10", [], "result too large"),
        ("temperature * 1e308 * 10", [1.0], "non-finite result"),
    ],
)
def test_runtime_failures_raise_calculation_error(text, values, message):
    expression = parse_expression(text, known_names=KNOWN)
    with pytest.raises(CalculationError, match=message):
        expression.evaluate(values)


GRID = [-1000.0, -8.0, -1.0, -0.5, 0.0, 0.1, 0.5, 1.0, 2.675, 3.3, 10.0, 17.27, 23.4, 42.42, 57.3, 100.0, 1e308]


@pytest.mark.parametrize(
    "text",
    [
        "temperature + 0.33 * (humidity / 100 * 6.105 * exp(17.27 * temperature / (237.7 + temperature))) - 4.0",
        "temperature / humidity",
        "temperature % humidity",
        "temperature ** humidity",
        "log(temperature) + log(temperature, humidity) + sqrt(temperature)",
        "exp(temperature) * 1e308",
        "round(temperature) + round(temperature, 2) - abs(humidity)",
        "min(temperature, humidity, 3) + max(temperature, humidity)",
        "sqrt(temperature) if temperature > 0 else -1",
        "temperature and humidity",
        "temperature or humidity",
        "not temperature",
        "-(temperature > humidity) + (0 < temperature <= humidity)",
        "1 if temperature < humidity and not humidity == 1 or temperature != 2 else 0",
    ],
)
def test_evaluating_many_at_once_gives_what_evaluating_each_gives(text):
    """evaluate_many (ingest, over numpy arrays) stores the very values, and names the very
    failures, that evaluate gives one by one."""
    expression = parse_expression(text, known_names=KNOWN)
    evaluations = list(itertools.product(GRID, repeat=len(expression.inputs)))
    results, failures = expression.evaluate_many([np.array(column) for column in zip(*evaluations)])
    for position, values in enumerate(evaluations):
        try:
            expected = expression.evaluate(values)
        except CalculationError as error:
            assert failures.get(position) == str(error), values
        else:
            assert position not in failures and results[position] == expected, values


def test_self_reference_and_cycles():
    with pytest.raises(ExpressionError, match="refers to its own metric “dew_point”"):
        check_dependencies("dew_point", ("temperature", "dew_point"), {})
    graph = {"a": ("b",), "b": ("temperature",)}
    with pytest.raises(ExpressionError, match="Cycle between calculated metrics: b → a → b."):
        check_dependencies("b", ("a",), graph)
    check_dependencies("c", ("a", "b"), graph)  # a chain, no cycle


def test_dependency_order_puts_inputs_first():
    order = dependency_order({"c": ("a", "b"), "a": ("temperature",), "b": ("a",)})
    assert order == ["a", "b", "c"]
