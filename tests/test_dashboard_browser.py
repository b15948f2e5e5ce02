"""The dashboard in real headless Chromium, against daphne, ingest and a Celery worker on real services."""

import shutil
import socket
import sys
import tempfile

import pytest
from django.contrib.auth import get_user_model
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from apps.alerts.models import Alert
from apps.telemetry.models import Reading

from .conftest import ARTIFACTS, eventually, free_port, now_ms

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
]


@pytest.fixture
def browser():
    profile = tempfile.mkdtemp(prefix="iothub-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def live_hub(plant, hub, unique):
    """daphne + ingest + Celery worker on the test database; returns the base URL."""
    port = free_port()
    web = hub.start("-b", "127.0.0.1", "-p", str(port), "iothub.asgi:application", program=[sys.executable, "-m", "daphne"])
    hub.ingest("--source", "mqtt", "--client-id", f"browser-ingest-{unique}")
    hub.celery_worker()

    def web_answers():
        assert web.poll() is None
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    eventually(web_answers, message="daphne")
    get_user_model().objects.create_user("operator", password="operator-pw-1", is_staff=True)
    return f"http://127.0.0.1:{port}"


def log_in(browser, base):
    browser.get(f"{base}/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys("operator-pw-1")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))


def screenshot(browser, name):
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def cell_state(browser, key):
    cell = browser.find_element(By.CSS_SELECTOR, f'[data-cell="{key}"]')
    return cell.text, cell.get_attribute("class").split()


def test_it_shows_a_published_value_live_in_its_colour(live_hub, browser, publisher):
    log_in(browser, live_hub)
    assert cell_state(browser, "dev-1|temperature")[0] == "–"
    publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 31.2, "humidity": 40})
    # Within 2 s of publishing: the value, coloured as a warning (30 < 31.2 < 35).
    WebDriverWait(browser, 2).until(lambda b: cell_state(b, "dev-1|temperature")[0] == "31.2")
    text, classes = cell_state(browser, "dev-1|temperature")
    assert "warning" in classes
    assert "none" in cell_state(browser, "dev-1|humidity")[1]  # no humidity threshold
    # The warning alert opened by the worker reaches the feed and the header totals live.
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "total-warning").text == "1 warning")
    assert "dev-1 temperature" in browser.find_element(By.ID, "alert-feed").text
    screenshot(browser, "overview")


def test_it_shows_an_alert_and_acknowledges_it_from_the_console(live_hub, browser, publisher):
    log_in(browser, live_hub)
    browser.get(f"{live_hub}/alerts/")
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))
    publisher("sensors/dev-2", {"ts": now_ms(), "temperature": 37.0})
    alert = eventually(lambda: Alert.objects.filter(device__device_id="dev-2").first(), message="alert row")
    # The live feed shows it and raises the critical banner, without a reload.
    WebDriverWait(browser, 5).until(lambda b: b.find_elements(By.CSS_SELECTOR, f'tr[data-alert="{alert.pk}"]'))
    assert "CRITICAL" in browser.find_element(By.ID, "banner").text
    browser.refresh()
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-alert="{alert.pk}"]')
    row.find_element(By.NAME, "note").send_keys("fan replaced")
    screenshot(browser, "alerts")
    row.find_element(By.CSS_SELECTOR, "button.ack").click()
    WebDriverWait(browser, 10).until(
        lambda b: b.find_element(By.CSS_SELECTOR, f'tr[data-alert="{alert.pk}"] .state').text == "acknowledged"
    )
    alert.refresh_from_db()
    assert (alert.state, alert.acknowledged_by.username, alert.note) == ("acknowledged", "operator", "fan replaced")


def test_it_draws_the_device_chart_with_threshold_bands(live_hub, browser, publisher):
    start = now_ms() - 600_000
    for i in range(10):
        publisher("sensors/dev-1", {"ts": start + i * 60_000, "temperature": 25 + i, "humidity": 40 + i})
    eventually(lambda: Reading.objects.count() >= 20, message="20 readings")
    log_in(browser, live_hub)
    browser.get(f"{live_hub}/devices/dev-1/")
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#chart-temperature .main-svg"))
    points = browser.execute_script("return document.getElementById('chart-temperature').data[0].y.length")
    assert points == 10
    # Warning and critical bands above 30 and 35 °C are drawn as shapes.
    shapes = browser.execute_script("return document.getElementById('chart-temperature').layout.shapes.map(s => [s.y0, s.fillcolor])")
    assert [s[0] for s in shapes] == [30, 35]
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-temperature .shapelayer path")
    # A new reading streams into the chart.
    publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 26.0})
    WebDriverWait(browser, 5).until(
        lambda b: b.execute_script("return document.getElementById('chart-temperature').data[0].y.length") == 11
    )
    screenshot(browser, "device")
