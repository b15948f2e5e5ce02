"""Recompute a calculated metric over a stored time range from the stored readings of its inputs
(`manage.py recalculate`), the way ingest computes it (apps.telemetry.calculations)."""

from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

from django.db import transaction

from apps.devices.expressions import parse_expression
from apps.devices.models import Device, Metric

from .calculations import StateTables, TypeCalculations, calculate
from .models import Reading
from .rollups import recompute_range
from .selectors import stored_inputs
from .store import ReadingColumns, store_readings


@dataclass
class Recalculated:
    """What one step of a recalculation did."""

    end: object  # datetime the step reached
    stored: int
    failures: list  # (device_id, ts, error)


def calculation_of(metric):
    """The metric's expression as a TypeCalculations of that one metric, its inputs read as stored."""
    expression = parse_expression(metric.expression)
    metrics = {m.key: m for m in Metric.objects.filter(key__in=expression.inputs)}
    return TypeCalculations.of({**metrics, metric.key: metric}, {metric.key: expression})


def devices_calculating(metric, input_pks, calculations):
    """pk → CalculatingDevice of the devices whose type lists the metric and all its inputs."""
    devices = Device.objects.filter(device_type__metrics=metric)
    for pk in set(input_pks):
        devices = devices.filter(device_type__metrics=pk)
    return {pk: CalculatingDevice(pk, device_id, calculations) for pk, device_id in devices.values_list("pk", "device_id")}


class CalculatingDevice(NamedTuple):
    """What apps.telemetry.calculations.calculate takes of a device."""

    pk: int
    device_id: str
    calculations: TypeCalculations


def recalculate(*, metric, start, end, step):
    """Replace the metric's stored values in [start, end) with values computed from the stored inputs,
    one `step` at a time (a transaction each), then refresh the rollups; yields a Recalculated per step."""
    calculations = calculation_of(metric)
    [calculation] = calculations.calculations
    devices = devices_calculating(metric, calculations.inputs, calculations)
    states = StateTables()
    earlier = stored_inputs(
        devices=devices, input_pks=calculations.inputs, start=start - timedelta(seconds=calculation.max_age), end=start
    )
    # The inputs' values as the range begins; what this computes before the range is not kept.
    calculate(ReadingColumns.of(earlier), devices=devices, states=states)
    cursor = start
    while cursor < end:
        step_end = min(cursor + step, end)
        step_readings = stored_inputs(devices=devices, input_pks=calculations.inputs, start=cursor, end=step_end)
        calculated, step_failures = calculate(ReadingColumns.of(step_readings), devices=devices, states=states)
        failures = [(devices[device_pk].device_id, ts, error) for device_pk, ts, _, error in step_failures]
        with transaction.atomic():
            Reading.objects.filter(metric=metric, device_id__in=devices, time__gte=cursor, time__lt=step_end).delete()
            stored = store_readings([row for part in calculated for row in part.rows()])
        cursor = step_end
        yield Recalculated(end=cursor, stored=stored, failures=failures)
    recompute_range(start, end)
