"""Demo data: seed_demo is idempotent; simulate publishes its scenario's mix at the asked rate over real MQTT."""

import io
import subprocess
import sys

from django.core.management import call_command

from apps.alerts.models import Threshold
from apps.demo.simulator import SCENARIOS
from apps.devices.models import Device, Location, Metric
from apps.telemetry.models import Reading

from .support import ROOT, eventually


def test_it_seeds_demo_master_data_idempotently(transactional_db):
    for _ in range(2):
        call_command("seed_demo", "--devices", "30", stdout=io.StringIO())
    assert Device.objects.filter(device_id__startswith="sim-").count() == 30
    assert Device.objects.get(device_id="sim-00001").device_type.primary_metric.key == "temperature"
    assert set(Device.objects.get(device_id="sim-00030").device_type.metrics.values_list("key", flat=True)) == {
        "temperature",
        "humidity",
        "pcv_temperature",
        "perceived_temperature",
    }
    assert Metric.objects.get(key="perceived_temperature").expression.startswith("temperature + 0.33 * (humidity / 100")
    assert Location.objects.values("factory").distinct().count() == 2
    assert Threshold.objects.count() == 3


def test_it_knows_the_seed_reports_scenarios():
    assert {name: s.devices for name, s in SCENARIOS.items()} == {"factory": 1000, "city": 10000, "farm": 5000}
    factory = SCENARIOS["factory"]
    assert factory.natural_rate(1000) == 1000 * (0.2 / 1 + 0.5 / 10 + 0.3 / 60)
    assert sorted(set(factory.intervals(1000))) == [1, 10, 60] and len(factory.intervals(1000)) == 1000


def test_it_simulates_a_scenario_at_the_asked_rate(hub, unique):
    call_command("seed_demo", "--devices", "20", stdout=io.StringIO())
    hub.ingest("--source", "mqtt", "--client-id", f"sim-ingest-{unique}")
    run = subprocess.run(
        [sys.executable, "manage.py", "simulate", "--devices", "20", "--rate", "200", "--duration", "3", "--scenario", "city"],
        cwd=ROOT,
        env=hub.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    published = int(run.stdout.split("done, ")[1].split(" published")[0].replace(",", ""))
    assert 540 <= published <= 660
    eventually(lambda: Reading.objects.count() >= published * 3, timeout=60, message="all simulated readings")
    assert Reading.objects.values("device").distinct().count() == 20
