"""Calculated metrics in ingest: a batch's readings → the calculated readings they trigger.

A reading of an input of a calculated metric triggers it: the value is computed from that reading
and the latest value of each other input at or before the reading's time and no older than the
metric's max_input_age, and stamped with the reading's time. "Latest" is what the batch itself
brings (a message with temperature and humidity computes from both) and, before it, the latest
values (apps.telemetry.latest), read once per batch for the devices concerned. Readings of one
device are walked in time order; readings of one time are applied together, so a message with
several inputs computes each calculated metric once. Calculated metrics that use calculated
metrics come after them (dependency order) and are computed from their new values.

Idempotent under redelivery: a redelivered reading computes the same value for the same key, or
nothing where the values known now are newer than it (a reading older than the latest value of
its own metric computes nothing: `recalculate` fills such gaps from the stored readings).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from apps.devices.expressions import CalculationError, ExpressionError, dependency_order, parse_expression

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Calculation:
    """One calculated metric of a device type, compiled."""

    metric_pk: int
    key: str
    inputs: tuple  # metric pks, in the order evaluate takes their values
    evaluate: Callable
    max_age: float  # seconds


@dataclass(frozen=True, slots=True)
class TypeCalculations:
    """A device type's calculated metrics in dependency order, and which metrics trigger which."""

    calculations: tuple  # Calculation
    inputs: frozenset  # pks of the metrics some calculation uses
    input_keys: dict  # metric key → pk of every metric some calculation uses

    def latest_state(self, document):
        """The latest values document of a device (apps.telemetry.latest) → {metric_pk: (ts, value)} of the inputs."""
        if not document:
            return {}
        latest = orjson.loads(document)
        return {pk: (item["ts"] / 1000, item["value"]) for key, pk in self.input_keys.items() if (item := latest.get(key))}

    def compute(self, device_pk, state, readings, rows, failures):
        """Walk one device's `readings` [(ts, metric_pk, value, row index)] in time order, starting from
        `state` {metric_pk: (ts, value)}; append calculated rows to `rows` and (row index, key, error)
        to `failures`.

        Once the readings of one time are applied, each calculated metric (in dependency order) is
        computed if one of its inputs has a value of that time (a reading, or a result just computed)
        and all of them have one at or before it and within max_age. Written out in one loop: it runs
        for every reading of an input (bench_ingest --only calculated)."""
        readings.sort()
        calculations = self.calculations
        last = len(readings) - 1
        for i, (ts, metric_pk, value, index) in enumerate(readings):
            known = state.get(metric_pk)
            if known is None or known[0] <= ts:  # a late reading does not hide a newer value
                state[metric_pk] = (ts, value)
            if i < last and readings[i + 1][0] == ts:
                continue  # apply the other readings of this time first: one computation per time
            for calculation in calculations:
                oldest = ts - calculation.max_age
                values = []
                fresh = False
                for pk in calculation.inputs:
                    known = state.get(pk)
                    if known is None or known[0] > ts or known[0] < oldest:
                        break
                    fresh = fresh or known[0] == ts
                    values.append(known[1])
                else:
                    if not fresh:
                        continue
                    try:
                        result = calculation.evaluate(values)
                    except CalculationError as error:
                        failures.append((index, calculation.key, str(error)))
                        continue
                    rows.append((device_pk, calculation.metric_pk, ts, result))
                    state[calculation.metric_pk] = (ts, result)


def type_calculations(type_name, metrics):
    """metrics: key → Metric of one device type → its TypeCalculations, or None without calculated metrics.

    A calculated metric whose inputs are not all metrics of the type is left out (and logged): it
    could never be computed for these devices."""
    expressions = {}
    for key, metric in metrics.items():
        if not metric.is_calculated:
            continue
        try:
            expression = parse_expression(metric.expression, known_names=metrics.keys())
        except ExpressionError as error:
            log.warning("calculated metric %s is not computed for device type %s: %s", key, type_name, error)
            continue
        expressions[key] = expression
    if not expressions:
        return None
    order = dependency_order({key: e.inputs for key, e in expressions.items()})
    calculations = tuple(
        Calculation(
            metric_pk=metrics[key].pk,
            key=key,
            inputs=tuple(metrics[name].pk for name in expressions[key].inputs),
            evaluate=expressions[key].evaluate,
            max_age=float(metrics[key].max_input_age),
        )
        for key in order
    )
    input_keys = {name: metrics[name].pk for e in expressions.values() for name in e.inputs}
    return TypeCalculations(calculations=calculations, inputs=frozenset(input_keys.values()), input_keys=input_keys)


def calculate_batch(rows, *, devices, read_latest):
    """A validated batch's rows → (calculated rows, failures [(row index, metric key, error)]).

    devices: device_pk → DeviceInfo; read_latest(device_ids) → their latest values documents, or
    None while Redis is away (then only the batch's own readings are inputs)."""
    concerned = {pk: device for pk, device in devices.items() if device.calculations is not None}
    if not concerned:
        return [], []
    inputs_of = {pk: device.calculations.inputs for pk, device in concerned.items()}
    readings = {}
    for index, (device_pk, metric_pk, ts, value) in enumerate(rows):
        inputs = inputs_of.get(device_pk)
        if inputs is not None and metric_pk in inputs:
            readings.setdefault(device_pk, []).append((ts, metric_pk, value, index))
    if not readings:
        return [], []
    device_pks = list(readings)
    documents = read_latest([concerned[pk].device_id for pk in device_pks]) or [None] * len(device_pks)
    calculated, failures = [], []
    for device_pk, document in zip(device_pks, documents):
        calculations = concerned[device_pk].calculations
        calculations.compute(device_pk, calculations.latest_state(document), readings[device_pk], calculated, failures)
    return calculated, failures
