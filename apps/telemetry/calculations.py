"""Calculated metrics in ingest: a batch's readings → the calculated readings they trigger.

A reading of an input of a calculated metric triggers it: the value is computed from that reading
and the latest value of each other input at or before the reading's time and no older than the
metric's max_input_age, and stamped with the reading's time. Ingest calculates a batch a part of
whole messages at a time, as they are validated (apps.telemetry.pipeline.BatchWriter). "Latest" is
what the part itself brings (a message with temperature and humidity computes from both) and, before
it, the StateTable of the device's inputs: what the parts and batches before it brought, and the latest values
(apps.telemetry.latest) that ingest read (apps.telemetry.pipeline.CalculationInputs). Readings of
one device are taken in time order; readings of one time are applied together, so a message with
several inputs computes each calculated metric once. Calculated metrics that use calculated metrics
come after them (dependency order) and are computed from their new values.

Idempotent under redelivery: a redelivered reading computes the same value for the same key, or
nothing where the values known now are newer than it (a reading older than the latest value of
its own metric computes nothing: `recalculate` fills such gaps from the stored readings).

Cost: this runs for every reading of an input (bench_ingest --only calculated). The readings are
numpy arrays, and each step is one numpy call over all of them: sorting by device and time (readings
of one input alone need no sort), carrying each input's latest value forward, choosing the times that
compute, evaluating the expression (apps.devices.expressions); a device's row in the StateTable and
its type's calculations are found through lookup tables indexed by device pk. A walk over each
device's readings in Python cost about 3 µs per device and part, more than the rest of the
calculation together. Ingest calculates GIL_HELD_ROWS readings at a time, and calls no numpy
function that gives the GIL away whatever the size (take, arange: apps.telemetry.store).
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import reduce

import numpy as np

from apps.devices.expressions import ExpressionError, dependency_order, parse_expression

from .store import GIL_HELD_ROWS, ReadingColumns

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

    def __len__(self):
        return len(self.times)


def time_order(times, groups=None):
    """Indices that order readings by time, or by group (an array of ints) and then time; readings
    of one time in the order they came. Sorted by Python: numpy's sorts release the GIL
    (apps.telemetry.store.GIL_HELD_ROWS). A group's readings mostly come in time order already, so
    sorting by group alone mostly does."""
    keys = (times if groups is None else groups).tolist()
    order = np.array(sorted(range(len(keys)), key=keys.__getitem__), np.int64)
    if groups is not None:
        ordered_groups, ordered_times = groups[order], times[order]
        if ((ordered_groups[1:] == ordered_groups[:-1]) & (ordered_times[1:] < ordered_times[:-1])).any():
            keys = list(zip(keys, times.tolist()))
            order = np.array(sorted(range(len(keys)), key=keys.__getitem__), np.int64)
    return order


def lookup(table, keys):
    """table[keys] for non-negative int keys, where `table` ends in -1: a key beyond it gives -1.
    (Not table.take: numpy's take gives the GIL away whatever the size.)"""
    return table[np.minimum(keys, len(table) - 1)]


POSITIONS = np.arange(4 * GIL_HELD_ROWS)
POSITIONS.flags.writeable = False


def positions(count):
    """np.arange(count), without calling it where the hot path calls this: numpy's arange gives the GIL away."""
    return POSITIONS[:count] if count <= len(POSITIONS) else np.arange(count)


def with_entries(table, keys, values):
    """The lookup table with table[keys] = values (keys: a list of ints), extended where a key is
    beyond it by half as many entries again, all -1 (8 bytes an entry, up to the largest device pk
    met; the last entry stays -1)."""
    largest = max(keys)
    if largest >= len(table) - 1:
        table = np.concatenate([table, np.full(largest + largest // 2 + 2 - len(table), -1, np.int64)])
    table[keys] = values
    return table


class StateTable:
    """The latest value of each metric that some calculated metrics use or compute, for every
    device ingest has met: a row per device, a column per metric (TypeCalculations.columns), kept
    as cells row × width + column of flat arrays (numpy indexes those without releasing the GIL):
    the time (epoch s, -inf where no value is known) and the value. read_at: when each device's
    latest values document was read (time.monotonic(), apps.telemetry.pipeline.CalculationInputs)."""

    def __init__(self, metric_pks, calculated):
        self.width = len(metric_pks)
        self.metric_pks = np.array(metric_pks, np.int64)  # column → metric pk
        self.calculated = np.array([pk in calculated for pk in metric_pks], bool)  # column → whether it is a calculated metric's
        self.count = 0  # devices (rows) in the table
        self.row_by_pk = np.full(1, -1, np.int64)  # device pk → its row, -1 where none (a lookup table)
        self.device_pks = np.zeros(0, np.int64)
        self.times = np.zeros(0)
        self.values = np.zeros(0)
        self.read_at = np.zeros(0)

    def rows(self, device_pks):
        """The rows of these devices (an array of pks), added where new."""
        rows = lookup(self.row_by_pk, device_pks)
        new = rows < 0
        if new.any():
            self.add(list(dict.fromkeys(device_pks[new].tolist())))
            rows = lookup(self.row_by_pk, device_pks)
        return rows

    def add(self, device_pks):
        """Rows for these devices (a list of pks not in the table). The arrays grow by doubling:
        devices that come a few at a time do not copy the whole table each time."""
        first, end = self.count, self.count + len(device_pks)
        if end > len(self.device_pks):
            self.grow(2 * end)
        self.row_by_pk = with_entries(self.row_by_pk, device_pks, list(range(first, end)))
        self.device_pks[first:end] = device_pks
        self.count = end

    def grow(self, capacity):
        """Room for `capacity` devices; the rows beyond the devices known hold nothing."""
        added = capacity - len(self.device_pks)
        self.device_pks = np.concatenate([self.device_pks, np.zeros(added, np.int64)])
        self.times = np.concatenate([self.times, np.full(added * self.width, -np.inf)])
        self.values = np.concatenate([self.values, np.full(added * self.width, np.nan)])
        self.read_at = np.concatenate([self.read_at, np.full(added, -np.inf)])

    def cells(self, rows, columns):
        return rows * self.width + columns

    def keep_newer(self, readings):
        """Make the newest of `readings` of each cell its state, unless the state is newer (a
        reading of the state's own time replaces it). → (cells, times, values) of the cells
        changed, as they were before."""
        cells, times, values = self.cells(readings.rows, readings.columns), readings.times, readings.values
        if (times[1:] < times[:-1]).any():  # in time order: of several readings of a cell, the newest is set last
            order = time_order(times)
            cells, times, values = cells[order], times[order], values[order]
        changed = times >= self.times[cells]
        if not changed.all():
            cells, times, values = cells[changed], times[changed], values[changed]
        before = (cells, self.times[cells], self.values[cells])
        self.times[cells] = times
        self.values[cells] = values
        return before

    def restore(self, before):
        """Undo keep_newer, given what it returned (a cell set twice has its first value twice)."""
        cells, times, values = before
        self.times[cells] = times
        self.values[cells] = values


NO_CALCULATIONS = -2  # StateTables.kind_by_pk of a device whose type has no calculated metrics


class StateTables:
    """The StateTable of each set of metrics (device types whose calculations use and compute the same share one),
    and the TypeCalculations of each device met (found in `devices` the first time; forget_kinds
    when those may have changed)."""

    def __init__(self):
        self.tables = {}  # TypeCalculations.columns → StateTable
        self.forget_kinds()

    def forget_kinds(self):
        self.kinds = []  # the TypeCalculations met
        self.kind_by_pk = np.full(1, -1, np.int64)  # device pk → its index in kinds, NO_CALCULATIONS, or -1: not met

    def kinds_of(self, device_pks, devices):
        """device pks (an array) → the index in `kinds` of each one's TypeCalculations, or NO_CALCULATIONS.

        devices: device pk → DeviceInfo (apps.telemetry.device_cache) of the devices not met before."""
        kinds = lookup(self.kind_by_pk, device_pks)
        unknown = kinds == -1
        if unknown.any():
            new = list(dict.fromkeys(device_pks[unknown].tolist()))
            self.kind_by_pk = with_entries(self.kind_by_pk, new, [self.kind_index(devices[pk].calculations) for pk in new])
            kinds = lookup(self.kind_by_pk, device_pks)
        return kinds

    def kind_index(self, calculations):
        if calculations is None:
            return NO_CALCULATIONS
        for index, kind in enumerate(self.kinds):
            if kind is calculations:
                return index
        self.kinds.append(calculations)
        return len(self.kinds) - 1

    def table_rows(self, calculations, device_pks, devices):
        """Devices of one type (an array of pks; devices: pk → DeviceInfo) → (the StateTable of its
        calculations, their rows)."""
        table = self.tables.get(calculations.columns)
        if table is None:
            table = StateTable(calculations.columns, {calculation.metric_pk for calculation in calculations.calculations})
            self.tables[calculations.columns] = table
        return table, table.rows(device_pks)

    def advance(self, table, readings):
        """Move the table past readings of its metrics (measured or calculated)."""
        table.keep_newer(readings)


@dataclass(frozen=True, slots=True)
class Calculation:
    """One calculated metric of a device type, compiled."""

    metric_pk: int
    key: str
    columns: tuple  # the StateTable columns of its inputs, in the order the expression takes their values
    column: int  # its own column in the StateTable
    is_input: bool  # whether another calculated metric of the type uses it
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
        selection = reduce(np.logical_or, [readings.columns == column for column in self.columns])
        if not selection.all():
            if not selection.any():
                return None
            readings = readings.take(selection)
        if (readings.columns == readings.columns[0]).all():
            return self.evaluated(*self.one_input(table, readings))
        return self.evaluated(*self.walk(table, readings))

    def walk(self, table, readings):
        """→ (rows, times, input_times, input_values, applied) of the readings in time order per
        device: each input's time and value are its latest reading's so far, or its state's;
        applied: whether the reading is the last of its time (the others of the time are applied)."""
        order = time_order(readings.times, readings.rows)  # by device, then time
        rows, columns, times, values = (array[order] for array in readings.arrays())
        count = len(rows)
        indices = positions(count)
        device_starts = np.ones(count, bool)
        device_starts[1:] = rows[1:] != rows[:-1]
        first = np.maximum.accumulate(np.where(device_starts, indices, 0))  # the device's first reading
        input_times, input_values = [], []
        for column in self.columns:
            latest = np.maximum.accumulate(np.where(columns == column, indices, -1))  # its input's latest reading so far
            cells = table.cells(rows, column)
            state_times = table.times[cells]
            newer = (latest >= first) & (times[latest] >= state_times)  # a late reading does not hide a newer value
            input_times.append(np.where(newer, times[latest], state_times))
            input_values.append(np.where(newer, values[latest], table.values[cells]))
        last_of_time = np.ones(count, bool)  # the readings of one time are applied together: one computation
        last_of_time[:-1] = device_starts[1:] | (times[1:] != times[:-1])
        return rows, times, input_times, input_values, last_of_time

    def one_input(self, table, readings):
        """walk's result where all the readings are of one input (single-metric messages): the other
        inputs keep their states, so no reading depends on another and their order does not matter.
        (Two readings of one device and time both compute, where walk takes the later: the COPY then
        keeps the first of each, the reading and the value computed from it.)"""
        input_times, input_values = [], []
        for column in self.columns:
            cells = table.cells(readings.rows, column)
            if column == readings.columns[0]:  # a reading older than the state computes nothing: its time is not the newest
                input_times.append(np.maximum(readings.times, table.times[cells]))
                input_values.append(readings.values)
            else:
                input_times.append(table.times[cells])
                input_values.append(table.values[cells])
        return readings.rows, readings.times, input_times, input_values, True

    def evaluated(self, rows, times, input_times, input_values, applied):
        """The values at the times where every input is `applied` (readings of one time together),
        at or before the time and within max_age → compute's result."""
        oldest, newest = reduce(np.minimum, input_times), reduce(np.maximum, input_times)
        computes = applied & (oldest >= times - self.max_age) & (newest <= times)
        if not computes.all():
            input_values = [input_column[computes] for input_column in input_values]
            rows, times = rows[computes], times[computes]
        results, failed = self.evaluate_many(input_values)
        failures = [(rows[position], times[position], error) for position, error in failed.items()]
        if failed:
            kept = np.isfinite(results)
            rows, times, results = rows[kept], times[kept], results[kept]
        return Readings(rows, np.full(len(rows), self.column), times, results), failures


@dataclass(frozen=True, slots=True, eq=False)
class TypeCalculations:
    """A device type's calculated metrics in dependency order, and the metrics they use."""

    calculations: tuple  # Calculation
    inputs: tuple  # pks of the metrics some calculation uses, sorted
    input_keys: dict  # metric key → pk of every metric some calculation uses
    columns: tuple  # pks of the metrics some calculation uses or computes, sorted: the columns of its StateTable
    column_by_pk: np.ndarray  # metric pk → its column, a lookup table (lookup): -1 for the metrics without one

    @classmethod
    def of(cls, metrics, expressions):
        """metrics: key → Metric; expressions: calculated metric key → its Expression, in dependency order."""
        input_keys = {name: metrics[name].pk for expression in expressions.values() for name in expression.inputs}
        inputs = tuple(sorted(set(input_keys.values())))
        columns = tuple(sorted({*inputs, *(metrics[key].pk for key in expressions)}))
        column_of = {pk: column for column, pk in enumerate(columns)}
        column_by_pk = np.full(max(columns) + 2, -1, np.int64)
        column_by_pk[list(columns)] = range(len(columns))
        calculations = tuple(
            Calculation(
                metric_pk=metrics[key].pk,
                key=key,
                columns=tuple(column_of[input_keys[name]] for name in expression.inputs),
                column=column_of[metrics[key].pk],
                is_input=metrics[key].pk in inputs,
                evaluate_many=expression.evaluate_many,
                max_age=float(metrics[key].max_input_age),
            )
            for key, expression in expressions.items()
        )
        return cls(
            calculations=calculations,
            inputs=inputs,
            input_keys=input_keys,
            columns=columns,
            column_by_pk=column_by_pk,
        )

    def compute(self, table, readings):
        """Readings of the inputs of devices of the type → ({Calculation: Readings of its values},
        failures [(row, ts, metric key, error)]).

        One calculated metric after the other; the values of one that a later one uses join the readings."""
        computed, failures = {}, []
        for calculation in self.calculations:
            result = calculation.compute(table, readings)
            if result is None:
                continue
            values, failed = result
            computed[calculation] = values
            failures += [(row, ts, calculation.key, error) for row, ts, error in failed]
            if calculation.is_input:
                readings = readings + values
        return computed, failures


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


def calculate(readings, *, devices, states):
    """Validated readings (ReadingColumns of whole messages; ingest's hold at most GIL_HELD_ROWS
    of them: apps.telemetry.store) → (the calculated readings, a list of ReadingColumns, failures
    [(device_pk, ts, metric key, error)]).

    devices: device_pk → DeviceInfo; states: the StateTables the readings start from, moved on by them."""
    calculated, failures = [], []
    if not len(readings):
        return calculated, failures
    kinds = states.kinds_of(readings.devices, devices)
    for kind in {int(kinds[0])} if (kinds == kinds[0]).all() else set(kinds.tolist()):  # mostly one type
        if kind == NO_CALCULATIONS:
            continue
        calculations = states.kinds[kind]
        device_pks, columns, times, values = (
            readings.devices,
            lookup(calculations.column_by_pk, readings.metrics),
            readings.times,
            readings.values,
        )
        selection = (kinds == kind) & (columns >= 0)
        if not selection.all():
            if not selection.any():  # none of the type's inputs
                continue
            device_pks, columns, times, values = (array[selection] for array in (device_pks, columns, times, values))
        table, rows = states.table_rows(calculations, device_pks, devices)
        inputs = Readings(rows, columns, times, values)
        computed, type_failures = calculations.compute(table, inputs)
        states.advance(table, inputs)
        for calculation, result in computed.items():
            if not len(result):
                continue
            states.advance(table, result)
            computed_pks = table.device_pks[result.rows]
            calculated.append(
                ReadingColumns(computed_pks, np.full(len(computed_pks), calculation.metric_pk), result.times, result.values)
            )
        failures += [(int(table.device_pks[row]), float(ts), key, error) for row, ts, key, error in type_failures]
    return calculated, failures


def calculate_past_batch(rows, *, devices, read_stored):
    """calculate_batch for readings of the past (CSV import): the other inputs' values are the
    stored readings at or before each reading's time, not the latest values.

    read_stored(devices=, input_pks=, start=, end=) → the rows of those inputs stored in [start,
    end) (apps.telemetry.selectors.stored_inputs). The stored readings only give values: a metric
    is computed at the times of the batch's readings, as ingest computes it."""
    types = {device.calculations for device in devices.values()} - {None}
    if not types or not rows:
        return [], []
    input_pks = frozenset().union(*(calculations.inputs for calculations in types))
    max_age = max(calculation.max_age for calculations in types for calculation in calculations.calculations)
    times = [ts for _, _, ts, _ in rows]
    stored = read_stored(
        devices=list(devices),
        input_pks=input_pks,
        start=datetime.fromtimestamp(min(times) - max_age, tz=UTC),
        end=datetime.fromtimestamp(max(times), tz=UTC) + timedelta(microseconds=1),  # the last reading's time included
    )
    past = ReadingColumns.of(rows + stored)  # of one time, a stored reading wins
    calculated, failures = calculate(past, devices=devices, states=StateTables())
    batch_times = {(device_pk, ts) for device_pk, _, ts, _ in rows}
    at_batch_times = [row for part in calculated for row in part.rows() if row[::2] in batch_times]
    return [ReadingColumns.of(at_batch_times)], [failure for failure in failures if failure[:2] in batch_times]
