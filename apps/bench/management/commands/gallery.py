"""`manage.py gallery`: the screenshots of docs/screenshots/, from a seeded demo, in English and Korean.

Starts `manage.py runhub` on a throwaway SQLite database with its embedded MQTT broker (the
demo a new user runs), pushes one sensor into a critical alert that falls back to a warning,
then photographs every dashboard page and the admin's main lists in headless Chromium at the three screens
(390×844, 820×1180, 1920×1080) in each language: docs/screenshots/<language>/<page>-<screen>.png.
Needs the development requirements (selenium) and chromium with chromedriver.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from django.conf import settings
from django.core.management.base import BaseCommand
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from apps.bench.benchmarks import free_port
from apps.bench.browser import VIEWPORTS, headless_chromium, set_viewport

INFRASTRUCTURE = ["DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "KAFKA_BOOTSTRAP_SERVERS", "MQTT_ADMIN_URL", "MQTT_URL"]
HOT_DEVICE = "sim-00003"
LIVE = ".conn.live"  # a dashboard page is ready once its live connection is
CHANGE_LIST = "#changelist"
# page → (path, the element that shows it is ready)
PAGES = {
    "overview": ("/", LIVE),
    "kiosk": ("/?kiosk=1", LIVE),
    "device": (f"/devices/{HOT_DEVICE}/", LIVE),
    "device-history": (f"/devices/{HOT_DEVICE}/?range=24h", LIVE),
    "alerts": ("/alerts/?state=all", LIVE),
    "health": ("/health/", LIVE),
    "alarm-kpis": ("/alarms/kpis/", "#chart-per-10min .main-svg"),  # drawn by Plotly
    "admin-devices": ("/admin/devices/device/", CHANGE_LIST),
    "admin-locations": ("/admin/devices/location/", CHANGE_LIST),
    "admin-thresholds": ("/admin/alerts/threshold/", CHANGE_LIST),
    "admin-alerts": ("/admin/alerts/alert/", CHANGE_LIST),
}


class Command(BaseCommand):
    help = "Regenerate docs/screenshots/ (English and Korean, three screens) from a seeded demo."

    def add_arguments(self, parser):
        parser.add_argument("--out", default=str(settings.BASE_DIR / "docs" / "screenshots"))
        parser.add_argument("--warm-up", type=float, default=20, help="seconds of simulated readings before the pictures")

    def handle(self, *args, out, warm_up, **options):
        out = Path(out)
        with tempfile.TemporaryDirectory(prefix="iothub-gallery-") as scratch:
            web_port, mqtt_port = free_port(), free_port()
            env = {k: v for k, v in os.environ.items() if k not in INFRASTRUCTURE}
            env.update(
                DATABASE_URL=f"sqlite:///{scratch}/demo.sqlite3", MQTT_URL=f"mqtt://127.0.0.1:{mqtt_port}", PYTHONUNBUFFERED="1"
            )
            log = open(Path(scratch) / "runhub.log", "w+")
            hub = subprocess.Popen(
                [sys.executable, "manage.py", "runhub", "--port", str(web_port)],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                password = self.wait_for_login(hub, Path(log.name))
                self.stdout.write(f"gallery: demo up on port {web_port}; {warm_up:g} s of readings")
                self.heat_up(mqtt_port, warm_up)
                self.photograph(f"http://127.0.0.1:{web_port}", password, out)
            finally:
                hub.send_signal(signal.SIGTERM)
                hub.wait(30)
                log.close()

    def wait_for_login(self, hub, log_path, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"log in as admin / (\S+)", log_path.read_text())
            if found:
                return found.group(1)
            if hub.poll() is not None:
                raise RuntimeError(f"runhub stopped:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        raise RuntimeError("runhub printed no login")

    def heat_up(self, mqtt_port, warm_up):
        """A critical reading of one sensor, then a warning one: an alert that was critical."""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="iothub-gallery", protocol=mqtt.MQTTv311)
        client.connect("127.0.0.1", mqtt_port)
        client.loop_start()
        for value in (37.4, 36.8, 32.5):
            info = client.publish(
                f"sensors/{HOT_DEVICE}", orjson.dumps({"ts": int(time.time() * 1000), "temperature": value}), qos=1
            )
            info.wait_for_publish(10)
            time.sleep(warm_up / 3)
        client.disconnect()
        client.loop_stop()

    def photograph(self, base, password, out):
        for language, _name in settings.LANGUAGES:
            folder = out / language
            folder.mkdir(parents=True, exist_ok=True)
            with headless_chromium(language=language) as driver:
                driver.get(f"{base}/accounts/login/")
                driver.find_element(By.NAME, "username").send_keys("admin")
                driver.find_element(By.NAME, "password").send_keys(password)
                driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
                WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".conn.live"))
                for screen in VIEWPORTS:
                    set_viewport(driver, screen)
                    for page, (path, ready) in PAGES.items():
                        driver.get(base + path)
                        WebDriverWait(driver, 20).until(lambda d, ready=ready: d.find_elements(By.CSS_SELECTOR, ready))
                        time.sleep(2.5)  # charts drawn, live values and health figures in
                        driver.save_screenshot(str(folder / f"{page}-{screen}.png"))
                        self.stdout.write(f"gallery: {language}/{page}-{screen}.png")
