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

Cost: this runs for every reading of an input (bench_ingest --only calculated). One calculated
metric at a time, the walk over every device's readings only collects the values each computation
takes, in a column per input, and the expression then computes the whole batch's values in one call
(Expression.evaluate_many). A device whose readings in the batch are all of one input (single-metric
messages) needs no walk: which of them compute is a filter on their times.
"""

import logging
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter

import orjson

from apps.devices.expressions import ExpressionError, dependency_order, parse_expression

log = logging.getLogger(__name__)

# Of a reading (ts, metric_pk, value, where: its row index); sorted by TIME alone, equal times keep their order.
TIME, METRIC, VALUE, INDEX = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(3)
UNKNOWN = (-math.inf, None)  # (ts, value) of an input without a value: older than any time


@dataclass(frozen=True, slots=True)
class Calculation:
    """One calculated metric of a device type, compiled."""

    metric_pk: int
    key: str
    inputs: tuple  # metric pks, in the order the expression takes their values
    slot_of: dict  # input metric pk → its position in inputs
    evaluate_many: Callable  # apps.devices.expressions.Expression.evaluate_many
    max_age: float  # seconds

    @classmethod
    def of(cls, *, metric, expression, input_pks):
        """metric: the calculated Metric; expression: its parsed Expression; input_pks: key → pk of its inputs."""
        inputs = tuple(input_pks[name] for name in expression.inputs)
        return cls(
            metric_pk=metric.pk,
            key=metric.key,
            inputs=inputs,
            slot_of={pk: slot for slot, pk in enumerate(inputs)},
            evaluate_many=expression.evaluate_many,
            max_age=float(metric.max_input_age),
        )

    def collect(self, device_pk, state, readings, computations):
        """Walk one device's `readings` of this metric's inputs [(ts, metric_pk, value, row index)],
        in time order, from `state` {metric_pk: (ts, value)}, adding every time the metric is
        computed to `computations`.

        It is computed at a time when, the readings of that time applied, every input has a value at
        or before it and within max_age: one of them is then of that time (a reading that does not
        hide a newer value was applied; one that would leaves its input newer than the time)."""
        if not readings:  # none of this metric's inputs (or an expression without any, which never computes)
            return
        times, values = map(list, zip(*[state.get(pk, UNKNOWN) for pk in self.inputs]))
        metrics = set(map(METRIC, readings))
        if len(metrics) == 1 and len(set(map(TIME, readings))) == len(readings):
            self.collect_one_input(device_pk, readings, self.slot_of[metrics.pop()], times, values, computations)
            return
        slot_of = self.slot_of
        max_age = self.max_age
        columns, computed_times, indexes = computations.columns, computations.times, computations.indexes
        before = len(computed_times)
        last = len(readings) - 1
        for i, (ts, metric_pk, value, index) in enumerate(readings):
            slot = slot_of[metric_pk]
            if times[slot] <= ts:  # a late reading does not hide a newer value
                times[slot] = ts
                values[slot] = value
            if i < last and readings[i + 1][0] == ts:
                continue  # apply the other readings of this time first: one computation per time
            if min(times) >= ts - max_age and max(times) <= ts:
                for column, input_value in zip(columns, values):
                    column.append(input_value)
                computed_times.append(ts)
                indexes.append(index)
        computations.devices += [device_pk] * (len(computed_times) - before)

    def collect_one_input(self, device_pk, readings, slot, times, values, computations):
        """collect's walk where all of a device's readings are of one input, each of its own time
        (single-metric messages): the other inputs keep their values from the state, so the times
        computed are those from the newest value known (a reading before it would hide it) to the
        other inputs' oldest plus max_age, and the walk is a filter."""
        newest = max(times)
        until = min(times[:slot] + times[slot + 1 :], default=math.inf) + self.max_age
        chosen = [reading for reading in readings if newest <= reading[0] <= until]
        for position, column in enumerate(computations.columns):
            column += map(VALUE, chosen) if position == slot else [values[position]] * len(chosen)
        computations.times += map(TIME, chosen)
        computations.indexes += map(INDEX, chosen)
        computations.devices += [device_pk] * len(chosen)


@dataclass(slots=True)
class Computations:
    """The computations of one calculated metric over a batch, column by column: lists of numbers,
    no object per computation (the garbage collector walks every one that is kept)."""

    columns: list  # a list per input: its value in each computation
    devices: list = field(default_factory=list)  # device pk of each computation
    times: list = field(default_factory=list)  # its time (epoch s)
    indexes: list = field(default_factory=list)  # the row index of the reading that triggered it


@dataclass(frozen=True, slots=True, eq=False)
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

    def compute(self, devices, rows, failures):
        """devices: device_pk → (state {metric_pk: (ts, value)}, its readings of the inputs
        [(ts, metric_pk, value, row index)]); append the calculated rows (device_pk, metric_pk, ts,
        value) to `rows` and (row index, key, error) to `failures`.

        One calculated metric after the other, over all the devices: its computations are collected,
        then evaluated in one call; a result that a later calculated metric uses joins its device's
        readings."""
        for _, readings in devices.values():
            readings.sort(key=TIME)
        for calculation in self.calculations:
            computations = Computations(columns=[[] for _ in calculation.inputs])
            own_inputs = calculation.slot_of.keys()
            others = own_inputs != self.inputs  # readings of other calculated metrics' inputs are left out
            for device_pk, (state, readings) in devices.items():
                if others:
                    readings = [reading for reading in readings if reading[1] in own_inputs]
                calculation.collect(device_pk, state, readings, computations)
            results, failed = calculation.evaluate_many(computations.columns)
            for position, error in failed.items():
                failures.append((computations.indexes[position], calculation.key, error))
            metric_pk = calculation.metric_pk
            computed = zip(computations.devices, computations.times, results, computations.indexes)
            if metric_pk not in self.inputs:
                rows += [(device_pk, metric_pk, ts, result) for device_pk, ts, result, _ in computed if result is not None]
                continue
            for device_pk, ts, result, index in computed:  # a later calculated metric uses it
                if result is not None:
                    rows.append((device_pk, metric_pk, ts, result))
                    devices[device_pk][1].append((ts, metric_pk, result, index))
            for _, readings in devices.values():
                readings.sort(key=TIME)


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
    input_keys = {name: metrics[name].pk for e in expressions.values() for name in e.inputs}
    calculations = tuple(Calculation.of(metric=metrics[key], expression=expressions[key], input_pks=input_keys) for key in order)
    return TypeCalculations(calculations=calculations, inputs=frozenset(input_keys.values()), input_keys=input_keys)


def input_readings(rows, devices):
    """device_pk → [(ts, metric_pk, value, row index)] of the rows that are inputs of its type's calculated metrics."""
    inputs_of = {pk: device.calculations.inputs for pk, device in devices.items() if device.calculations is not None}
    readings = defaultdict(list)
    if inputs_of:
        for index, (device_pk, metric_pk, ts, value) in enumerate(rows):
            inputs = inputs_of.get(device_pk)
            if inputs is not None and metric_pk in inputs:
                readings[device_pk].append((ts, metric_pk, value, index))
    return readings


def compute_by_type(devices, known):
    """known: device_pk → (state, readings) for TypeCalculations.compute → (calculated rows, failures)."""
    by_type = defaultdict(dict)  # TypeCalculations → {device_pk: (state, readings)}
    for device_pk, device_known in known.items():
        by_type[devices[device_pk].calculations][device_pk] = device_known
    calculated, failures = [], []
    for calculations, of_type in by_type.items():
        calculations.compute(of_type, calculated, failures)
    return calculated, failures


def calculate_batch(rows, *, devices, read_latest):
    """A validated batch's rows → (calculated rows, failures [(row index, metric key, error)]).

    devices: device_pk → DeviceInfo; read_latest(device_ids) → their latest values documents, or
    None while Redis is away (then only the batch's own readings are inputs)."""
    readings = input_readings(rows, devices)
    if not readings:
        return [], []
    device_pks = list(readings)
    documents = read_latest([devices[pk].device_id for pk in device_pks]) or [None] * len(device_pks)
    return compute_by_type(
        devices,
        {pk: (devices[pk].calculations.latest_state(document), readings[pk]) for pk, document in zip(device_pks, documents)},
    )


def calculate_past_batch(rows, *, devices, read_stored):
    """calculate_batch for readings of the past (CSV import): the other inputs' values are the
    stored readings at or before each reading's time, not the latest values.

    read_stored(devices=, input_pks=, start=, end=) → device_pk → [(ts, metric_pk, value, (device_pk, ts))]
    stored in [start, end) (apps.telemetry.selectors.stored_inputs). The stored readings only give
    values: a metric is computed at the times of the batch's readings, as ingest computes it."""
    readings = input_readings(rows, devices)
    if not readings:
        return [], []
    types = {devices[pk].calculations for pk in readings}
    max_age = max(calculation.max_age for calculations in types for calculation in calculations.calculations)
    batch_index = {(pk, ts): index for pk, device_readings in readings.items() for ts, _, _, index in device_readings}
    times = [ts for _, ts in batch_index]
    stored = read_stored(
        devices=list(readings),
        input_pks=frozenset().union(*(calculations.inputs for calculations in types)),
        start=datetime.fromtimestamp(min(times) - max_age, tz=UTC),
        end=datetime.fromtimestamp(max(times), tz=UTC) + timedelta(microseconds=1),  # the last reading's time included
    )
    calculated, failures = compute_by_type(devices, {pk: ({}, rs + stored.get(pk, [])) for pk, rs in readings.items()})
    failures = [(batch_index.get(index) if type(index) is tuple else index, key, error) for index, key, error in failures]
    return (
        [row for row in calculated if (row[0], row[2]) in batch_index],
        [failure for failure in failures if failure[0] is not None],
    )
