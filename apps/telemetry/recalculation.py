"""Recompute a calculated metric over a stored time range from the stored readings of its inputs
(`manage.py recalculate`), the way ingest computes it (apps.telemetry.calculations)."""

from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction

from apps.devices.expressions import parse_expression
from apps.devices.models import Device, Metric

from .calculations import Calculation, TypeCalculations
from .models import Reading
from .rollups import recompute_range
from .store import store_readings


@dataclass
class Recalculated:
    """What one step of a recalculation did."""

    end: object  # datetime the step reached
    stored: int
    failures: list  # (device_id, ts, error)


def calculation_of(metric):
    """The metric's expression as a TypeCalculations of that one metric, its inputs read as stored."""
    expression = parse_expression(metric.expression)
    input_pks = dict(Metric.objects.filter(key__in=expression.inputs).values_list("key", "pk"))
    calculation = Calculation(
        metric_pk=metric.pk,
        key=metric.key,
        inputs=tuple(input_pks[name] for name in expression.inputs),
        evaluate=expression.evaluate,
        max_age=float(metric.max_input_age),
    )
    return TypeCalculations(calculations=(calculation,), inputs=frozenset(calculation.inputs), input_keys=input_pks)


def devices_calculating(metric, input_pks):
    """pk → device_id of the devices whose type lists the metric and all its inputs."""
    devices = Device.objects.filter(device_type__metrics=metric)
    for pk in set(input_pks):
        devices = devices.filter(device_type__metrics=pk)
    return dict(devices.values_list("pk", "device_id"))


def stored_inputs(*, devices, input_pks, start, end):
    """device pk → [(ts, metric_pk, value, ts)] of the inputs stored in [start, end), in time order (the
    time stands in for ingest's row index: a failure names it)."""
    readings = {}
    rows = (
        Reading.objects.filter(device_id__in=devices, metric_id__in=input_pks, time__gte=start, time__lt=end)
        .order_by("device_id", "time")
        .values_list("device_id", "time", "metric_id", "value")
    )
    for device_pk, at, metric_pk, value in rows.iterator(chunk_size=20_000):
        ts = at.timestamp()
        readings.setdefault(device_pk, []).append((ts, metric_pk, value, ts))
    return readings


def recalculate(*, metric, start, end, step):
    """Replace the metric's stored values in [start, end) with values computed from the stored inputs,
    one `step` at a time (a transaction each), then refresh the rollups; yields a Recalculated per step."""
    calculations = calculation_of(metric)
    [calculation] = calculations.calculations
    devices = devices_calculating(metric, calculation.inputs)
    states = {pk: {} for pk in devices}
    earlier = stored_inputs(
        devices=devices, input_pks=calculation.inputs, start=start - timedelta(seconds=calculation.max_age), end=start
    )
    for device_pk, readings in earlier.items():  # the inputs' values as the range begins
        for ts, metric_pk, value, _ in readings:
            states[device_pk][metric_pk] = (ts, value)
    cursor = start
    while cursor < end:
        step_end = min(cursor + step, end)
        rows, failures = [], []
        for device_pk, readings in stored_inputs(
            devices=devices, input_pks=calculation.inputs, start=cursor, end=step_end
        ).items():
            device_failures = []
            calculations.compute(device_pk, states[device_pk], readings, rows, device_failures)
            failures += [(devices[device_pk], ts, error) for ts, _, error in device_failures]
        with transaction.atomic():
            Reading.objects.filter(metric=metric, device_id__in=devices, time__gte=cursor, time__lt=step_end).delete()
            stored = store_readings(rows)
        cursor = step_end
        yield Recalculated(end=cursor, stored=stored, failures=failures)
    recompute_range(start, end)
