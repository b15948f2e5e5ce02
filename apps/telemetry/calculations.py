"""Calculated metrics in ingest: a batch's readings → the calculated readings they trigger.

A reading of an input of a calculated metric triggers it: the value is computed from that reading
and the latest value of each other input at or before the reading's time and no older than the
metric's max_input_age, and stamped with the reading's time. Ingest calculates a batch a slice of
messages at a time (apps.telemetry.pipeline.store_slices). "Latest" is what the slice itself brings
(a message with temperature and humidity computes from both) and, before it, the StateTable of the
device's inputs: what the slices and batches before it brought, and the latest values
(apps.telemetry.latest) that ingest read (apps.telemetry.pipeline.CalculationInputs). Readings of
one device are taken in time order; readings of one time are applied together, so a message with
several inputs computes each calculated metric once. Calculated metrics that use calculated metrics
come after them (dependency order) and are computed from their new values.

Idempotent under redelivery: a redelivered reading computes the same value for the same key, or
nothing where the values known now are newer than it (a reading older than the latest value of
its own metric computes nothing: `recalculate` fills such gaps from the stored readings).

Cost: this runs for every reading of an input (bench_ingest --only calculated). The slice's
readings are numpy arrays, and each step is one numpy call over all of them: sorting by device and
time, carrying each input's latest value forward, choosing the times that compute, evaluating the
expression (apps.devices.expressions). A walk over each device's readings in Python cost about 3 µs
per device and slice, more than the rest of the calculation together.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from apps.devices.expressions import ExpressionError, dependency_order, parse_expression

from .store import ReadingColumns

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Readings:
    """Readings of one device type's inputs, as arrays: each one's StateTable row (its device),
    column (its metric), time (epoch s) and value."""

    rows: np.ndarray
    columns: np.ndarray
    times: np.ndarray
    values: np.ndarray

    def take(self, selection):
        return Readings(self.rows[selection], self.columns[selection], self.times[selection], self.values[selection])

    def __add__(self, other):
        return Readings(*(np.concatenate(pair) for pair in zip(self.arrays(), other.arrays())))

    def arrays(self):
        return self.rows, self.columns, self.times, self.values


class StateTable:
    """The latest value of each input metric of some calculated metrics for every device ingest
    has met: a row per device, a column per metric (TypeCalculations.inputs), the time (epoch s,
    -inf where no value is known) and the value. read_at: when each device's latest values document
    was read (time.monotonic(), apps.telemetry.pipeline.CalculationInputs)."""

    def __init__(self, width):
        self.row_of = {}  # device pk → row
        self.device_pks = np.zeros(0, np.int64)
        self.times = np.full((0, width), -np.inf)
        self.values = np.full((0, width), np.nan)
        self.read_at = np.full(0, -np.inf)

    def rows(self, device_pks):
        """The rows of these devices, added where new."""
        new = [pk for pk in dict.fromkeys(device_pks) if pk not in self.row_of]
        if new:
            first = len(self.device_pks)
            self.row_of.update(zip(new, range(first, first + len(new))))
            width = self.times.shape[1]
            self.device_pks = np.concatenate([self.device_pks, np.array(new, np.int64)])
            self.times = np.concatenate([self.times, np.full((len(new), width), -np.inf)])
            self.values = np.concatenate([self.values, np.full((len(new), width), np.nan)])
            self.read_at = np.concatenate([self.read_at, np.full(len(new), -np.inf)])
        return np.array([self.row_of[pk] for pk in device_pks], np.int64)

    def keep_newer(self, readings):
        """Make the newest of `readings` of each (row, column) its state, unless the state is newer
        (a reading of the state's own time replaces it). → (rows, columns, times, values) of the
        cells changed, as they were before."""
        rows, columns, times, values = (
            array[np.lexsort((readings.times, readings.columns, readings.rows))] for array in readings.arrays()
        )
        newest = np.ones(len(rows), bool)  # the last reading of each cell
        newest[:-1] = (rows[1:] != rows[:-1]) | (columns[1:] != columns[:-1])
        rows, columns, times, values = rows[newest], columns[newest], times[newest], values[newest]
        changed = times >= self.times[rows, columns]
        rows, columns = rows[changed], columns[changed]
        before = (rows, columns, self.times[rows, columns], self.values[rows, columns])
        self.times[rows, columns] = times[changed]
        self.values[rows, columns] = values[changed]
        return before

    def restore(self, before):
        """Undo keep_newer, given what it returned."""
        rows, columns, times, values = before
        self.times[rows, columns] = times
        self.values[rows, columns] = values


class StateTables:
    """The StateTable of each set of input metrics (device types with the same inputs share one)."""

    def __init__(self):
        self.tables = {}  # TypeCalculations.inputs → StateTable

    def table_rows(self, calculations, devices):
        """devices (DeviceInfo) of one type → (the StateTable of its calculations' inputs, their rows)."""
        table = self.tables.get(calculations.inputs)
        if table is None:
            table = self.tables[calculations.inputs] = StateTable(len(calculations.inputs))
        return table, table.rows([device.pk for device in devices])

    def advance(self, table, readings):
        """Move the table past readings of its inputs (calculated ones included)."""
        table.keep_newer(readings)


@dataclass(frozen=True, slots=True)
class Calculation:
    """One calculated metric of a device type, compiled."""

    metric_pk: int
    key: str
    columns: tuple  # the StateTable columns of its inputs, in the order the expression takes their values
    column: int  # its own column, where another calculated metric of the type uses it; else -1
    evaluate_many: object  # apps.devices.expressions.Expression.evaluate_many
    max_age: float  # seconds

    def compute(self, table, readings):
        """The values this metric takes at the times of `readings` (of the type's inputs), from
        them and the states of `table` → (Readings of its values in its own column, failures
        [(row, ts, error)]), or None where none of its inputs comes.

        It is computed at a time when, the readings of that time applied, every input has a value
        at or before it and within max_age: one of them is then of that time (a reading that does
        not hide a newer value was applied; one that would leaves its input newer than the time)."""
        if not self.columns:  # an expression without inputs never computes
            return None
        selection = np.isin(readings.columns, self.columns)
        if not selection.any():
            return None
        mine = readings.take(selection)
        order = np.lexsort((mine.times, mine.rows))  # by device, then time; readings of one time in the order they came
        rows, columns, times, values = (array[order] for array in mine.arrays())
        count = len(rows)
        positions = np.arange(count)
        device_starts = np.ones(count, bool)
        device_starts[1:] = rows[1:] != rows[:-1]
        first = np.maximum.accumulate(np.where(device_starts, positions, 0))  # the device's first reading
        input_times, input_values = [], []
        for column in self.columns:
            latest = np.maximum.accumulate(np.where(columns == column, positions, -1))  # its input's latest reading so far
            state_times = table.times[rows, column]
            newer = (latest >= first) & (times[latest] >= state_times)  # a late reading does not hide a newer value
            input_times.append(np.where(newer, times[latest], state_times))
            input_values.append(np.where(newer, values[latest], table.values[rows, column]))
        last_of_time = np.ones(count, bool)  # the readings of one time are applied together: one computation
        last_of_time[:-1] = device_starts[1:] | (times[1:] != times[:-1])
        oldest, newest = np.minimum.reduce(input_times), np.maximum.reduce(input_times)
        computes = last_of_time & (oldest >= times - self.max_age) & (newest <= times)
        results, failed = self.evaluate_many([input_column[computes] for input_column in input_values])
        rows, times = rows[computes], times[computes]
        failures = [(rows[position], times[position], error) for position, error in failed.items()]
        if failed:
            kept = np.isfinite(results)
            rows, times, results = rows[kept], times[kept], results[kept]
        return Readings(rows, np.full(len(rows), self.column), times, results), failures


@dataclass(frozen=True, slots=True, eq=False)
class TypeCalculations:
    """A device type's calculated metrics in dependency order, and the metrics they use."""

    calculations: tuple  # Calculation
    inputs: tuple  # pks of the metrics some calculation uses, sorted: the columns of its StateTable
    input_keys: dict  # metric key → pk of every metric some calculation uses

    @classmethod
    def of(cls, metrics, expressions):
        """metrics: key → Metric; expressions: calculated metric key → its Expression, in dependency order."""
        input_keys = {name: metrics[name].pk for expression in expressions.values() for name in expression.inputs}
        inputs = tuple(sorted(set(input_keys.values())))
        column_of = {pk: column for column, pk in enumerate(inputs)}
        calculations = tuple(
            Calculation(
                metric_pk=metrics[key].pk,
                key=key,
                columns=tuple(column_of[input_keys[name]] for name in expression.inputs),
                column=column_of.get(metrics[key].pk, -1),
                evaluate_many=expression.evaluate_many,
                max_age=float(metrics[key].max_input_age),
            )
            for key, expression in expressions.items()
        )
        return cls(calculations=calculations, inputs=inputs, input_keys=input_keys)

    def columns_of(self, metric_pks):
        """An array of metric pks → their StateTable columns, -1 for a metric no calculation uses."""
        columns = np.full(len(metric_pks), -1, np.int64)
        for column, pk in enumerate(self.inputs):
            columns[metric_pks == pk] = column
        return columns

    def compute(self, table, readings):
        """Readings of the inputs of devices of the type → ({Calculation: Readings of its values},
        failures [(row, ts, metric key, error)], the readings and the calculated values that are inputs).

        One calculated metric after the other; the values of one that a later one uses join the readings."""
        computed, failures = {}, []
        for calculation in self.calculations:
            result = calculation.compute(table, readings)
            if result is None:
                continue
            values, failed = result
            computed[calculation] = values
            failures += [(row, ts, calculation.key, error) for row, ts, error in failed]
            if calculation.column >= 0:
                readings = readings + values
        return computed, failures, readings


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
    return TypeCalculations.of(metrics, {key: expressions[key] for key in order})


def calculate_batch(rows, *, devices, states):
    """Validated rows of a batch (device_pk, metric_pk, ts, value) → (the calculated readings as
    ReadingColumns, failures [(device_pk, ts, metric key, error)]).

    devices: device_pk → DeviceInfo; states: the StateTables the rows start from, moved on by them."""
    readings = ReadingColumns.of(rows)
    devices_of_readings, at = np.unique(readings.devices, return_inverse=True)
    by_type = defaultdict(list)  # TypeCalculations → positions in devices_of_readings
    infos = [devices[pk] for pk in devices_of_readings.tolist()]
    for position, device in enumerate(infos):
        if device.calculations is not None:
            by_type[device.calculations].append(position)
    parts, failures = [], []
    for calculations, positions in by_type.items():
        table, table_rows = states.table_rows(calculations, [infos[position] for position in positions])
        device_rows = np.full(len(infos), -1, np.int64)
        device_rows[positions] = table_rows
        rows_of_readings, columns = device_rows[at], calculations.columns_of(readings.metrics)
        selection = (rows_of_readings >= 0) & (columns >= 0)
        if not selection.any():
            continue
        inputs = Readings(rows_of_readings, columns, readings.times, readings.values).take(selection)
        computed, type_failures, inputs = calculations.compute(table, inputs)
        states.advance(table, inputs)
        for calculation, values in computed.items():
            device_pks = table.device_pks[values.rows]
            parts.append(
                ReadingColumns(device_pks, np.full(len(values.rows), calculation.metric_pk), values.times, values.values)
            )
        failures += [(int(table.device_pks[row]), float(ts), key, error) for row, ts, key, error in type_failures]
    return ReadingColumns.join(parts), failures


def calculate_past_batch(rows, *, devices, read_stored):
    """calculate_batch for readings of the past (CSV import): the other inputs' values are the
    stored readings at or before each reading's time, not the latest values.

    read_stored(devices=, input_pks=, start=, end=) → the rows of those inputs stored in [start,
    end) (apps.telemetry.selectors.stored_inputs). The stored readings only give values: a metric
    is computed at the times of the batch's readings, as ingest computes it."""
    types = {device.calculations for device in devices.values()} - {None}
    if not types or not rows:
        return ReadingColumns.of([]), []
    input_pks = frozenset().union(*(calculations.inputs for calculations in types))
    max_age = max(calculation.max_age for calculations in types for calculation in calculations.calculations)
    times = [ts for _, _, ts, _ in rows]
    stored = read_stored(
        devices=list(devices),
        input_pks=input_pks,
        start=datetime.fromtimestamp(min(times) - max_age, tz=UTC),
        end=datetime.fromtimestamp(max(times), tz=UTC) + timedelta(microseconds=1),  # the last reading's time included
    )
    calculated, failures = calculate_batch(
        rows + stored, devices=devices, states=StateTables()
    )  # of one time, a stored reading wins
    batch_times = {(device_pk, ts) for device_pk, _, ts, _ in rows}
    at_batch_times = [row for row in calculated.rows() if row[::2] in batch_times]
    return ReadingColumns.of(at_batch_times), [failure for failure in failures if failure[:2] in batch_times]
