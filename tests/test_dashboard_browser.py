"""The dashboard in real headless Chromium, against daphne, ingest and a Celery worker on real services."""

import math
import socket
import sys
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from apps.alerts.models import Alert
from apps.dashboard.browser import headless_chromium
from apps.telemetry.models import DeadLetter, Reading
from apps.telemetry.rollups import recompute_range

from .support import ARTIFACTS, eventually, free_port, now_ms


@pytest.fixture
def browser():
    with headless_chromium() as driver:
        yield driver


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


def level_counts(browser):
    """(count, shown) of the warning pill of the factory, building, floor and tile of dev-1."""
    pills = browser.find_elements(By.CSS_SELECTOR, "[data-counts] > header [data-level=warning]")
    return [(p.get_attribute("data-count"), p.is_displayed()) for p in pills]


def test_it_shows_a_published_value_live_in_its_colour(live_hub, browser, publisher):
    log_in(browser, live_hub)
    assert cell_state(browser, "dev-1|temperature")[0] == "–"
    publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 31.2, "humidity": 40})
    # Within 2 s of publishing: the value, coloured as a warning (30 < 31.2 < 35).
    WebDriverWait(browser, 2).until(lambda b: cell_state(b, "dev-1|temperature")[0] == "31.2")
    text, classes = cell_state(browser, "dev-1|temperature")
    assert "warning" in classes
    assert "none" in cell_state(browser, "dev-1|humidity")[1]  # no humidity threshold
    # The warning alert opened by the worker reaches the feed, the header totals and the counts
    # of every level of the tree live.
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "total-warning").text == "1 warning")
    assert "dev-1 temperature" in browser.find_element(By.ID, "alert-feed").text
    WebDriverWait(browser, 2).until(lambda b: level_counts(b) == [("1", True)] * 4)
    screenshot(browser, "overview")
    # Back to normal: the alert resolves and every count goes back to zero (and out of sight).
    publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 22.0})
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "total-warning").text == "0 warning")
    WebDriverWait(browser, 2).until(lambda b: level_counts(b) == [("0", False)] * 4)


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
    # The form posts and the page reloads: a row found on the old page may go stale while read.
    WebDriverWait(browser, 10, ignored_exceptions=[StaleElementReferenceException]).until(
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
    shapes = browser.execute_script(
        "return document.getElementById('chart-temperature').layout.shapes.map(s => [s.y0, s.fillcolor])"
    )
    assert [s[0] for s in shapes] == [30, 35]
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-temperature .shapelayer path")
    # A new reading streams into the chart.
    publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 26.0})
    WebDriverWait(browser, 5).until(
        lambda b: b.execute_script("return document.getElementById('chart-temperature').data[0].y.length") == 11
    )
    screenshot(browser, "device")


def test_it_draws_a_month_of_history_from_hourly_rollups_with_a_min_max_band(live_hub, browser, plant):
    # A daily cycle every 3 hours for 29 days, two readings 4 apart per hourly bucket: min, max and avg differ.
    device, temperature, humidity = plant["devices"][0], plant["temperature"], plant["humidity"]
    newest = (timezone.now() - timedelta(hours=1)).replace(minute=10, second=0, microsecond=0)
    hours = [newest - timedelta(hours=h) for h in range(0, 29 * 24, 3)]

    def value(base, at, spread):
        return round(base + 3 * math.sin(at.timestamp() / 86400 * 2 * math.pi) + at.day % 5 / 2, 2) + spread

    Reading.objects.bulk_create(
        Reading(device=device, metric=metric, time=t + timedelta(minutes=spread * 5), value=value(base, t, spread))
        for t in hours
        for spread in (0, 4)
        for metric, base in ((temperature, 22.0), (humidity, 45.0))
    )
    recompute_range(hours[-1], newest + timedelta(hours=1))
    log_in(browser, live_hub)
    browser.get(f"{live_hub}/devices/dev-1/?range=30d")
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#chart-temperature .main-svg"))
    traces = browser.execute_script(
        "return document.getElementById('chart-temperature').data.map(t => [t.name, t.y, t.fill || null])"
    )
    assert [(name, len(y), fill) for name, y, fill in traces] == [
        ("min", len(hours), None),
        ("max", len(hours), "tonexty"),
        ("avg", len(hours), None),
    ]
    (_, low, _), (_, high, _), (_, avg, _) = traces
    assert [hi - lo for lo, hi in zip(low, high, strict=True)] == pytest.approx([4] * len(hours))
    assert avg == pytest.approx([lo + 2 for lo in low])
    # The band is drawn, and so are the threshold bands above 30 and 35 °C.
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-temperature path.js-fill")
    shapes = browser.execute_script("return document.getElementById('chart-temperature').layout.shapes.map(s => s.y0)")
    assert shapes == [30, 35]
    assert "hourly average" in browser.find_element(By.CSS_SELECTOR, ".range .hint").text
    screenshot(browser, "device-history")


def test_it_shows_pipeline_health_live(live_hub, browser, publisher):
    publisher("sensors/dev-1", b"{broken json")
    eventually(lambda: DeadLetter.objects.exists(), message="dead letter")
    log_in(browser, live_hub)
    browser.get(f"{live_hub}/health/")
    # The latest dead letters, from the database.
    latest = browser.find_element(By.CSS_SELECTOR, "table.dead-letters").text
    assert "malformed JSON" in latest and "sensors/dev-1" in latest and "{broken json" in latest

    def messages_per_s_shown(b):
        publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 22.0 + now_ms() % 7, "humidity": 40.0})
        return float(b.find_element(By.ID, "stat-messages_per_s").text.replace(",", "")) > 0

    # Live: the ingest reports every 5 s, the page polls every 2 s.
    WebDriverWait(browser, 12, poll_frequency=0.5).until(messages_per_s_shown)
    processes = browser.find_element(By.ID, "processes").text
    assert "browser-ingest-" in processes and "mqtt" in processes
    assert "malformed JSON" in browser.find_element(By.ID, "dead-letter-reasons").text
    # The sparklines keep what the page has polled.
    WebDriverWait(browser, 20, poll_frequency=0.5).until(
        lambda b: (
            publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 23.0})
            or b.execute_script("return document.getElementById('spark-messages_per_s').data[0].y.length") >= 8
        )
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#spark-messages_per_s path.js-fill")
    screenshot(browser, "health")


def test_it_shelves_an_alert_from_the_console_and_shows_it_apart(live_hub, browser, plant):
    alert = Alert.objects.create(
        device=plant["devices"][0],
        metric=plant["temperature"],
        level="critical",
        opened_at=timezone.now(),
        first_value=36.0,
        peak_value=36.0,
        last_value=36.0,
    )
    log_in(browser, live_hub)
    browser.get(f"{live_hub}/alerts/")
    row = browser.find_element(By.CSS_SELECTOR, f'#alert-rows tr[data-alert="{alert.pk}"]')
    row.find_element(By.CSS_SELECTOR, "select[name=minutes] option[value='60']").click()
    row.find_element(By.CSS_SELECTOR, "form.shelve input[name=note]").send_keys("pump swap")
    row.find_element(By.CSS_SELECTOR, "button.shelve").click()
    WebDriverWait(browser, 10, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, f'#shelved-rows tr[data-alert="{alert.pk}"]')
    )
    assert not browser.find_elements(By.CSS_SELECTOR, f'#alert-rows tr[data-alert="{alert.pk}"]')
    assert "pump swap" in browser.find_element(By.ID, "shelved-rows").text
    for width, height in [(390, 844), (820, 1180), (1920, 1080)]:
        browser.set_window_size(width, height)
        screenshot(browser, f"alerts-shelved-{width}")
    alert.refresh_from_db()
    assert alert.state == "shelved"
