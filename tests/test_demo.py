"""The README's first command: `manage.py runhub` on embedded defaults (SQLite, in-memory channel
layer, eager Celery, embedded MQTT broker, simulated sensors), as a real process."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar

from .support import ARTIFACTS, ROOT, eventually, free_port

INFRASTRUCTURE = ["DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "KAFKA_BOOTSTRAP_SERVERS", "MQTT_ADMIN_URL"]


def test_it_runs_the_whole_hub_with_zero_infrastructure(tmp_path):
    web_port, mqtt_port = free_port(), free_port()
    database = tmp_path / "demo.sqlite3"
    env = {k: v for k, v in os.environ.items() if k not in INFRASTRUCTURE}
    env.update(DATABASE_URL=f"sqlite:///{database}", MQTT_URL=f"mqtt://127.0.0.1:{mqtt_port}", PYTHONUNBUFFERED="1")
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "runhub.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runhub", "--port", str(web_port), "--rate", "50"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def password():
                assert proc.poll() is None, log_path.read_text()
                found = re.search(r"log in as admin / (\S+)", log_path.read_text())
                return found and found.group(1)

            admin_password = eventually(password, timeout=90, message="runhub's demo login")
            console = log_path.read_text()
            assert f"embedded MQTT broker on 127.0.0.1:{mqtt_port}, MQTT 3.1.1 only" in console
            base = f"http://127.0.0.1:{web_port}"
            assert f"dashboard {base}/  admin {base}/admin/  API docs {base}/api/docs/" in console

            # The printed login works and the dashboard lists the simulated sensors.
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
            page = opener.open(f"{base}/accounts/login/").read().decode()
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
            form = f"csrfmiddlewaretoken={token}&username=admin&password={admin_password}".encode()
            request = urllib.request.Request(f"{base}/accounts/login/", data=form, headers={"Referer": f"{base}/accounts/login/"})
            overview = opener.open(request).read().decode()
            assert "sim-00001" in overview and "Plant North" in overview

            # Simulated readings flow through the embedded broker into SQLite.
            def readings():
                with sqlite3.connect(database) as db:
                    return db.execute("SELECT count(*) FROM telemetry_reading").fetchone()[0] >= 100

            eventually(readings, timeout=60, message="100 simulated readings in SQLite")

            # The demo type's calculated metric is computed from the simulated temperature and humidity.
            def perceived_temperatures():
                with sqlite3.connect(database) as db:
                    return db.execute(
                        "SELECT count(*) FROM telemetry_reading JOIN devices_metric ON devices_metric.id = metric_id "
                        "WHERE devices_metric.key = 'perceived_temperature'"
                    ).fetchone()[0]

            eventually(perceived_temperatures, timeout=60, message="perceived temperatures calculated in the demo")

            # The integrator API answers from the same SQLite (the browser session logs it in too).
            def api(path):
                return json.loads(opener.open(f"{base}/api/v1/{path}").read())

            def live_values():
                devices = api("realtime/?factory=Plant+North")["measurements"]
                return [item for device in devices for item in device["metrics"].values() if item["value"] is not None]

            eventually(live_values, timeout=30, message="live values in the realtime answer")
            today = datetime.now(UTC).date()
            span = f"start_date={today - timedelta(days=1):%Y%m%d}&end_date={today + timedelta(days=1):%Y%m%d}"

            def hourly_buckets():
                results = api(f"aggregation/temperature/?{span}&interval=hour")["results"]
                return [bucket for location in results for bucket in location["buckets"]]

            buckets = eventually(hourly_buckets, timeout=60, message="hourly rollups of the simulated readings")
            assert all(bucket["count"] > 0 and bucket["min"] <= bucket["avg"] <= bucket["max"] for bucket in buckets)
            started = datetime.now(UTC) - timedelta(minutes=5)
            for bucket in buckets:  # the hour of the simulated readings, on a full hour
                start = datetime.fromisoformat(bucket["start"])
                assert start.minute == 0 and started - timedelta(hours=1) < start <= datetime.now(UTC), bucket

            # The addresses and login come back under the progress lines (every 30 s).
            def reminded():
                return log_path.read_text().count(f"log in as admin / {admin_password}") >= 2

            eventually(reminded, timeout=45, message="the login printed again")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
    assert code == 0, log_path.read_text()[-3000:]
    assert "ingest: stopped after" in log_path.read_text()
