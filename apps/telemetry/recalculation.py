"""Recompute a calculated metric over a stored time range from the stored readings of its inputs
(`manage.py recalculate`), the way ingest computes it (apps.telemetry.calculations)."""

from dataclasses import dataclass
from datetime import timedelta
from itertools import chain

from django.db import transaction

from apps.devices.expressions import parse_expression
from apps.devices.models import Device, Metric

from .calculations import Calculation, TypeCalculations, advance_states
from .models import Reading
from .rollups import recompute_range
from .selectors import stored_inputs
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
    calculation = Calculation.of(metric=metric, expression=expression, input_pks=input_pks)
    return TypeCalculations(calculations=(calculation,), inputs=frozenset(calculation.inputs), input_keys=input_pks)


def devices_calculating(metric, input_pks):
    """pk → device_id of the devices whose type lists the metric and all its inputs."""
    devices = Device.objects.filter(device_type__metrics=metric)
    for pk in set(input_pks):
        devices = devices.filter(device_type__metrics=pk)
    return dict(devices.values_list("pk", "device_id"))


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
    advance_states(states, earlier)  # the inputs' values as the range begins
    cursor = start
    while cursor < end:
        step_end = min(cursor + step, end)
        step_readings = stored_inputs(devices=devices, input_pks=calculation.inputs, start=cursor, end=step_end)
        calculated, step_failures = {}, []
        calculations.compute({pk: (states[pk], inputs) for pk, inputs in step_readings.items()}, calculated, step_failures)
        advance_states(states, step_readings)  # the inputs' values as the next step begins
        rows = list(chain.from_iterable(calculated.values()))
        failures = [(devices[device_pk], ts, error) for device_pk, ts, _, error in step_failures]
        with transaction.atomic():
            Reading.objects.filter(metric=metric, device_id__in=devices, time__gte=cursor, time__lt=step_end).delete()
            stored = store_readings(rows)
        cursor = step_end
        yield Recalculated(end=cursor, stored=stored, failures=failures)
    recompute_range(start, end)
