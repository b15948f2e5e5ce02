"""Calculated metrics in ingest: a batch's readings → the calculated readings they trigger.

A reading of an input of a calculated metric triggers it: the value is computed from that reading
and the latest value of each other input at or before the reading's time and no older than the
metric's max_input_age, and stamped with the reading's time. Ingest calculates a batch a slice of
messages at a time (apps.telemetry.pipeline.store_slices). "Latest" is what the slice itself brings
(a message with temperature and humidity computes from both) and, before it, what the slices
before it brought and the latest values (apps.telemetry.latest), read once per batch for each
device concerned (InputStates). Readings of one device in a slice are walked in time order;
readings of one time are applied together, so a message with several inputs computes each
calculated metric once. Calculated metrics that use calculated metrics come after them (dependency
order) and are computed from their new values.

Idempotent under redelivery: a redelivered reading computes the same value for the same key, or
nothing where the values known now are newer than it (a reading older than the latest value of
its own metric, from an earlier batch or slice, computes nothing: `recalculate` fills such gaps
from the stored readings).

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
from itertools import groupby, repeat
from operator import itemgetter

import orjson

from apps.devices.expressions import ExpressionError, dependency_order, parse_expression

log = logging.getLogger(__name__)

# Of a row (device_pk, metric_pk, ts, value), and of a reading (ts, metric_pk, value) of collect's walk.
ROW_DEVICE, ROW_TS, ROW_VALUE = itemgetter(0), itemgetter(2), itemgetter(3)
TIME = itemgetter(0)
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

    def collect(self, device_pk, state, inputs, computations):
        """Add every time this metric is computed for one device to `computations`, from `state`
        {metric_pk: (ts, value)} and the device's rows of this metric's inputs, `inputs` {metric_pk: rows}.

        It is computed at a time when, the readings of that time applied in time order, every input
        has a value at or before it and within max_age: one of them is then of that time (a reading
        that does not hide a newer value was applied; one that would leaves its input newer than the time)."""
        present = [pk for pk in self.inputs if pk in inputs]
        if not present:  # none of this metric's inputs (or an expression without any, which never computes)
            return
        known = [state.get(pk, UNKNOWN) for pk in self.inputs]
        if len(present) == 1:
            rows = inputs[present[0]]
            if len(rows) > 1:
                rows.sort(key=ROW_TS)
            if len(rows) == 1 or len(set(map(ROW_TS, rows))) == len(rows):
                self.collect_one_input(device_pk, rows, self.slot_of[present[0]], known, computations)
                return
        times, values = map(list, zip(*known))
        readings = sorted([(ts, metric_pk, value) for pk in present for _, metric_pk, ts, value in inputs[pk]], key=TIME)
        slot_of = self.slot_of
        max_age = self.max_age
        columns, computed_times = computations.columns, computations.times
        before = len(computed_times)
        last = len(readings) - 1
        for i, (ts, metric_pk, value) in enumerate(readings):
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
        computations.devices += repeat(device_pk, len(computed_times) - before)

    def collect_one_input(self, device_pk, rows, slot, known, computations):
        """collect's walk where a device's rows are all of one input, in time order, each of its own
        time (single-metric messages): the other inputs keep their values from the state, so the
        times computed are those from the newest value known (a reading before it would hide it) to
        the other inputs' oldest plus max_age, and the walk is a filter."""
        newest = max(map(TIME, known))
        until = min([ts for position, (ts, _) in enumerate(known) if position != slot], default=math.inf) + self.max_age
        if not (newest <= rows[0][2] and rows[-1][2] <= until):
            rows = [row for row in rows if newest <= row[2] <= until]
        count = len(rows)
        for position, column in enumerate(computations.columns):
            column += map(ROW_VALUE, rows) if position == slot else repeat(known[position][1], count)
        computations.times += map(ROW_TS, rows)
        computations.devices += repeat(device_pk, count)

    def compute(self, devices, calculated, failures):
        """Compute this metric for `devices` {device_pk: (state, inputs {metric_pk: rows})}: its rows
        go to calculated[(device_pk, metric_pk)] in time order, (device_pk, ts, key, error) of a
        failure to `failures`. Collected over all the devices, evaluated in one call."""
        computations = Computations(columns=[[] for _ in self.inputs])
        for device_pk, (state, inputs) in devices.items():
            self.collect(device_pk, state, inputs, computations)
        results, failed = self.evaluate_many(computations.columns)
        computed_devices, times = computations.devices, computations.times
        failures += [(computed_devices[position], times[position], self.key, error) for position, error in failed.items()]
        rows = zip(computed_devices, repeat(self.metric_pk), times, results)
        metric_pk = self.metric_pk
        for device_pk, device_rows in groupby(rows, key=ROW_DEVICE):  # a device's computations are in a row
            if failed:
                device_rows = [row for row in device_rows if row[3] is not None]
            if device_rows := list(device_rows):
                calculated[(device_pk, metric_pk)] = device_rows


@dataclass(slots=True)
class Computations:
    """The computations of one calculated metric over a batch, column by column: lists of numbers,
    no object per computation (the garbage collector walks every one that is kept)."""

    columns: list  # a list per input: its value in each computation
    times: list = field(default_factory=list)  # the time (epoch s) of each computation
    devices: list = field(default_factory=list)  # the device pk of each computation


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

    def compute(self, devices, calculated, failures):
        """devices: device_pk → (state {metric_pk: (ts, value)}, its rows of the inputs {metric_pk:
        rows}); put the calculated rows in calculated[(device_pk, metric_pk)] (time order) and
        (device_pk, ts, key, error) of each failure in `failures`.

        One calculated metric after the other, over all the devices; the values of one that a later
        calculated metric uses join its devices' inputs."""
        for calculation in self.calculations:
            calculation.compute(devices, calculated, failures)
            metric_pk = calculation.metric_pk
            if metric_pk in self.inputs:
                for device_pk, (_, inputs) in devices.items():
                    if (rows := calculated.get((device_pk, metric_pk))) is not None:
                        inputs[metric_pk] = inputs.get(metric_pk, []) + rows


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


def input_rows(pairs, devices):
    """pairs: (device_pk, metric_pk) → rows → device_pk → {metric_pk: rows} of the metrics that are
    inputs of its type's calculated metrics."""
    inputs = {}
    for (device_pk, metric_pk), rows in pairs.items():
        calculations = devices[device_pk].calculations
        if calculations is not None and metric_pk in calculations.inputs:
            inputs.setdefault(device_pk, {})[metric_pk] = rows
    return inputs


def compute_by_type(devices, known):
    """known: device_pk → (state, inputs) for TypeCalculations.compute → (calculated {(device_pk,
    metric_pk): rows}, failures)."""
    by_type = defaultdict(dict)  # TypeCalculations → {device_pk: (state, inputs)}
    for device_pk, device_known in known.items():
        by_type[devices[device_pk].calculations][device_pk] = device_known
    calculated, failures = {}, []
    for calculations, of_type in by_type.items():
        calculations.compute(of_type, calculated, failures)
    return calculated, failures


class InputStates:
    """The latest value of every input of the devices of one ingest batch, device_pk → {metric_pk:
    (ts, value)}: from the latest values documents and the `carried` states (the newer value of
    each input counts), then moved on by the batch's own readings, slice after slice.

    read_documents(device_ids) → {device_id: its latest values document, or None}, for the devices
    that a slice brings first (apps.telemetry.pipeline.read_latest_documents). carried: device_pk
    → {metric_pk: (ts, value)} known besides the documents (apps.telemetry.pipeline.CalculationInputs),
    left as they are."""

    def __init__(self, read_documents, carried=None):
        self.read_documents = read_documents
        self.carried = carried or {}
        self.states = {}

    def of(self, device_pks, devices):
        """device_pks' states (all of them known afterwards)."""
        unread = [devices[pk] for pk in device_pks if pk not in self.states]
        if unread:
            documents = self.read_documents([device.device_id for device in unread])
            for device in unread:
                state = device.calculations.latest_state(documents.get(device.device_id))
                for metric_pk, (ts, value) in self.carried.get(device.pk, {}).items():
                    keep_newer(state, metric_pk, ts, value)
                self.states[device.pk] = state
        return self.states


def advance_states(states, inputs):
    """states: device_pk → {metric_pk: (ts, value)}, moved past `inputs`, device_pk → {metric_pk:
    rows} (calculated ones included): the newest row of each input becomes its state, unless the
    state is newer."""
    for device_pk, by_metric in inputs.items():
        state = states[device_pk]
        for metric_pk, rows in by_metric.items():
            _, _, ts, value = max(rows, key=ROW_TS)
            keep_newer(state, metric_pk, ts, value)


def keep_newer(state, metric_pk, ts, value):
    """Make (ts, value) the state {metric_pk: (ts, value)} of its input, unless the state is newer."""
    if state.get(metric_pk, UNKNOWN)[0] <= ts:
        state[metric_pk] = (ts, value)


def calculate_batch(pairs, *, devices, states):
    """A validated slice of a batch, its rows by pair {(device_pk, metric_pk): rows} → (the
    calculated rows by pair, failures [(device_pk, ts, metric key, error)]).

    devices: device_pk → DeviceInfo; states: the batch's InputStates, moved on by this slice."""
    inputs = input_rows(pairs, devices)
    if not inputs:
        return {}, []
    known = states.of(inputs, devices)
    result = compute_by_type(devices, {pk: (known[pk], by_metric) for pk, by_metric in inputs.items()})
    advance_states(states.states, inputs)  # after compute_by_type, which adds the calculated inputs of other calculated metrics
    return result


def calculate_past_batch(pairs, *, devices, read_stored):
    """calculate_batch for readings of the past (CSV import): the other inputs' values are the
    stored readings at or before each reading's time, not the latest values.

    read_stored(devices=, input_pks=, start=, end=) → device_pk → {metric_pk: rows} stored in
    [start, end) (apps.telemetry.selectors.stored_inputs). The stored readings only give values: a
    metric is computed at the times of the batch's readings, as ingest computes it."""
    inputs = input_rows(pairs, devices)
    if not inputs:
        return {}, []
    types = {devices[pk].calculations for pk in inputs}
    max_age = max(calculation.max_age for calculations in types for calculation in calculations.calculations)
    batch_times = {(pk, row[2]) for pk, by_metric in inputs.items() for rows in by_metric.values() for row in rows}
    times = [ts for _, ts in batch_times]
    stored = read_stored(
        devices=list(inputs),
        input_pks=frozenset().union(*(calculations.inputs for calculations in types)),
        start=datetime.fromtimestamp(min(times) - max_age, tz=UTC),
        end=datetime.fromtimestamp(max(times), tz=UTC) + timedelta(microseconds=1),  # the last reading's time included
    )
    known = {}
    for pk, by_metric in inputs.items():
        device_stored = stored.get(pk, {})
        known[pk] = ({}, {m: by_metric.get(m, []) + device_stored.get(m, []) for m in by_metric.keys() | device_stored.keys()})
    calculated, failures = compute_by_type(devices, known)
    at_batch_times = {}
    for pair, rows in calculated.items():
        if kept := [row for row in rows if (row[0], row[2]) in batch_times]:
            at_batch_times[pair] = kept
    return at_batch_times, [failure for failure in failures if failure[:2] in batch_times]
