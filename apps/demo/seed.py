"""Demo data: a plant of two factories, three measured metrics with global thresholds, a calculated
perceived temperature and simulated sensors sim-00001…, for the demo (runhub), the benchmarks and `manage.py seed_demo`."""

from django.db import transaction

from apps.alerts.models import Threshold
from apps.devices.models import Device, DeviceType, Location, Metric

DEMO_METRICS = [
    ("temperature", "°C", "Temperature"),
    ("humidity", "%", "Relative humidity"),
    ("pcv_temperature", "°C", "Process cooling water temperature"),
]
# Perceived temperature: Steadman's apparent temperature as the Australian Bureau of Meteorology
# publishes it, AT = Ta + 0.33 e − 0.70 ws − 4.00 with the water vapour pressure
# e = rh / 100 × 6.105 exp(17.27 Ta / (237.7 + Ta)) in hPa (Steadman, R. G., 1994: Norms of apparent
# temperature in Australia. Aust. Met. Mag. 43, 1–16; http://www.bom.gov.au/info/thermal_stress/),
# here indoors, wind speed ws = 0. Calculated in ingest from each sensor's temperature and humidity.
PERCEIVED_TEMPERATURE = (
    "perceived_temperature",
    "°C",
    "Perceived temperature",
    "temperature + 0.33 * (humidity / 100 * 6.105 * exp(17.27 * temperature / (237.7 + temperature))) - 4.0",
)
# (metric, warning_min, warning_max, critical_min, critical_max, hysteresis)
DEMO_THRESHOLDS = [
    ("temperature", None, 30.0, None, 35.0, 0.5),
    ("humidity", 25.0, 65.0, 15.0, 80.0, 1.0),
    ("pcv_temperature", None, 75.0, None, 85.0, 1.0),
]
DEMO_LAYOUT = [
    # factory, building, floor, areas
    ("Plant North", "Assembly", "1", ["Line A", "Line B", "Paint shop"]),
    ("Plant North", "Assembly", "2", ["Offices", "Server room"]),
    ("Plant North", "Warehouse", "1", ["Cold store", "Dispatch"]),
    ("Plant South", "Foundry", "1", ["Furnaces", "Casting"]),
    ("Plant South", "Utilities", "B1", ["Boiler room", "Cooling tower"]),
]


def demo_device_id(n):
    return f"sim-{n:05d}"


@transaction.atomic
def seed_demo(*, devices):
    """Create demo locations, metrics, a device type and `devices` devices sim-00001…; idempotent."""
    metrics = {}
    for key, unit, label in DEMO_METRICS:
        metrics[key], _ = Metric.objects.get_or_create(key=key, defaults={"unit": unit, "label": label})
    key, unit, label, expression = PERCEIVED_TEMPERATURE
    metrics[key], _ = Metric.objects.get_or_create(key=key, defaults={"unit": unit, "label": label, "expression": expression})
    device_type, _ = DeviceType.objects.get_or_create(
        name="env-sensor", defaults={"primary_metric": metrics["temperature"], "expected_interval": 60}
    )
    device_type.metrics.add(*metrics.values())
    locations = []
    for factory, building, floor, areas in DEMO_LAYOUT:
        for area in areas:
            loc_id = f"{factory.split()[-1][:1]}-{building[:3].upper()}-{floor}-{area.replace(' ', '')[:6].upper()}"
            location, _ = Location.objects.get_or_create(
                loc_id=loc_id,
                defaults={"factory": factory, "building": building, "floor": floor, "area": area, "name": f"{building} {area}"},
            )
            locations.append(location)
    existing = set(Device.objects.filter(device_id__startswith="sim-").values_list("device_id", flat=True))
    Device.objects.bulk_create(
        [
            Device(
                device_id=demo_device_id(n),
                name=f"Sensor {n}",
                device_type=device_type,
                location=locations[(n - 1) % len(locations)],
            )
            for n in range(1, devices + 1)
            if demo_device_id(n) not in existing
        ],
        batch_size=5000,
    )
    for key, wmin, wmax, cmin, cmax, hysteresis in DEMO_THRESHOLDS:
        Threshold.objects.get_or_create(
            metric=metrics[key],
            device=None,
            location=None,
            device_type=None,
            defaults={
                "warning_min": wmin,
                "warning_max": wmax,
                "critical_min": cmin,
                "critical_max": cmax,
                "hysteresis": hysteresis,
            },
        )
    return device_type
