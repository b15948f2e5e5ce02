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

from apps.alerts import services
from apps.alerts.models import Alert
from apps.bench.browser import VIEWPORTS, headless_chromium, horizontal_overflow, page_problems, set_viewport
from apps.telemetry.models import DeadLetter, Reading
from apps.telemetry.rollups import recompute_range

from .support import ARTIFACTS, ROOT, eventually, free_port, now_ms


@pytest.fixture(scope="module")
def chromium():
    """One Chromium for the module's tests (starting one takes seconds)."""
    with headless_chromium() as driver:
        yield driver


@pytest.fixture
def browser(chromium):
    """The shared Chromium at the default desktop size, with no session, stored choices or old logs."""
    chromium.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    chromium.set_window_size(1400, 1000)
    chromium.delete_all_cookies()
    if chromium.current_url.startswith("http"):
        chromium.execute_script("localStorage.clear()")
    chromium.get("about:blank")  # no page of the last test's server left retrying its WebSocket
    page_problems(chromium)
    yield chromium


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


def log_in(browser, base, username="operator", password="operator-pw-1"):
    browser.get(f"{base}/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(password)
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
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "total-warning").get_attribute("data-count") == "1")
    assert "dev-1 temperature" in browser.find_element(By.ID, "alert-feed").text
    WebDriverWait(browser, 2).until(lambda b: level_counts(b) == [("1", True)] * 4)
    screenshot(browser, "overview")
    # Back to normal: the alert resolves and every count goes back to zero (and out of sight).
    publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 22.0})
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "total-warning").get_attribute("data-count") == "0")
    WebDriverWait(browser, 2).until(lambda b: level_counts(b) == [("0", False)] * 4)
    # The feed says "All quiet." again, as a reload does.
    WebDriverWait(browser, 5).until(lambda b: b.find_element(By.CSS_SELECTOR, "#alert-feed .quiet").is_displayed())
    assert_same_after_reload(browser, "#alert-feed")


def test_it_shows_an_alert_and_acknowledges_it_from_the_console(live_hub, browser, publisher):
    log_in(browser, live_hub)
    browser.get(f"{live_hub}/alerts/")
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))
    publisher("sensors/dev-2", {"ts": now_ms(), "temperature": 37.0})
    alert = eventually(lambda: Alert.objects.filter(device__device_id="dev-2").first(), message="alert row")
    # The live feed shows it and raises the critical banner, without a reload.
    WebDriverWait(browser, 5).until(lambda b: b.find_elements(By.CSS_SELECTOR, f'tr[data-alert="{alert.pk}"]'))
    assert "Critical alert: critical dev-2 temperature = 37.0 open" in browser.find_element(By.ID, "banner").text
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


def test_a_shelved_alert_is_listed_apart_live_as_a_reload_shows_it(live_hub, browser, plant):
    """Shelved from the console, unshelved and shelved again elsewhere (the API, another console):
    the row moves between the console's two tables live, rendered as a reload renders it, and the
    console with a shelved alert fits every screen. A device of its own: no reading published to
    dev-1 by a test elsewhere on the shared broker can resolve the alert meanwhile."""
    from apps.devices.models import Device

    device = Device.objects.create(device_id="dev-shelved", device_type=plant["type"], location=plant["location"])
    alert = Alert.objects.create(
        device=device,
        metric=plant["temperature"],
        level="critical",
        opened_at=timezone.now(),
        first_value=36.0,
        peak_value=36.0,
        last_value=36.0,
    )
    row = f'tr[data-alert="{alert.pk}"]'
    log_in(browser, live_hub)
    browser.get(f"{live_hub}/alerts/")
    browser.find_element(By.CSS_SELECTOR, f"#alert-rows {row} select[name=minutes] option[value='60']").click()
    browser.find_element(By.CSS_SELECTOR, f"#alert-rows {row} [name=note]").send_keys("pump swap")
    browser.find_element(By.CSS_SELECTOR, f"#alert-rows {row} button.shelve").click()
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f"#shelved-rows {row}"))
    assert not browser.find_elements(By.CSS_SELECTOR, f"#alert-rows {row}")
    assert "pump swap" in browser.find_element(By.CSS_SELECTOR, f"#shelved-rows {row}").text
    alert.refresh_from_db()
    assert alert.state == "shelved"
    assert alert.shelved_until == pytest.approx(timezone.now() + timedelta(minutes=60), abs=timedelta(seconds=30))
    for viewport in VIEWPORTS:
        set_viewport(browser, viewport)
        browser.refresh()
        wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))
        overflow, element = horizontal_overflow(browser)
        assert overflow <= 0, f"{viewport}: {overflow} px past the right edge: {element}"
        assert serious_accessibility_violations(browser) == [], viewport
        screenshot(browser, f"alerts-shelved-{viewport}")
    assert page_problems(browser) == []
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    services.unshelve_alert(alert_id=alert.pk, user=None)
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f"#alert-rows {row}"))
    assert not browser.find_elements(By.CSS_SELECTOR, f"#shelved-rows {row}")
    assert_same_after_reload(browser, f"#alert-rows {row}")
    services.shelve_alert(alert_id=alert.pk, user=None, minutes=30, note="valve swap")
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f"#shelved-rows {row}"))
    assert not browser.find_elements(By.CSS_SELECTOR, f"#alert-rows {row}")
    assert "valve swap" in browser.find_element(By.CSS_SELECTOR, f"#shelved-rows {row}").text
    assert_same_after_reload(browser, f"#shelved-rows {row}")


# What a live push and a reload render must agree on, with the CSRF tokens (new per rendering) and
# the white space between tags left out.
NORMALISED_HTML = r"""
const el = document.querySelector(arguments[0]);
return el && el.outerHTML.replace(/name="csrfmiddlewaretoken" value="[^"]*"/g, 'name="csrfmiddlewaretoken"').replace(/>\s+</g, "><");
"""


def html_of(browser, selector):
    return browser.execute_script(NORMALISED_HTML, selector)


def assert_same_after_reload(browser, selector):
    """The element as it stands after live updates is the element a reload renders, tag for tag."""
    live = html_of(browser, selector)
    browser.refresh()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))
    assert html_of(browser, selector) == live


def wait_for(browser, check, timeout=10):
    return WebDriverWait(browser, timeout, ignored_exceptions=[StaleElementReferenceException]).until(check)


def test_it_follows_the_device_master_live_as_a_reload_shows_it(live_hub, browser, publisher, plant):
    from apps.devices.models import Device, Location
    from apps.devices.services import set_devices_active

    log_in(browser, live_hub)
    # Every cell and legend head names its metric and unit.
    assert cell_title(browser, "dev-1|temperature") == "temperature (°C)"
    assert [h.get_attribute("title") for h in browser.find_elements(By.CSS_SELECTOR, ".legend .head")] == [
        "humidity (%)",
        "temperature (°C)",
    ]
    # A new location in a new factory, with a new device: it appears, then reports, without a reload.
    location = Location.objects.create(loc_id="S-PACK-1", factory="South", building="Packing", floor="1", area="Line 1")
    Device.objects.create(device_id="dev-9", device_type=plant["type"], location=location)
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, '.factory[data-factory="South"] [data-device="dev-9"]'))
    wait_for(browser, lambda b: b.find_element(By.ID, "device-count").text == "3 devices")  # the toolbar re-renders live
    assert "South" in browser.find_element(By.ID, "factory-choice").text
    publisher("sensors/dev-9", {"ts": now_ms(), "temperature": 24.0, "humidity": 41.0})
    wait_for(browser, lambda b: cell_state(b, "dev-9|temperature")[0] == "24.0")
    assert_same_after_reload(browser, "#plant")
    # Moved: dev-2 leaves North for the new location; disabled: dev-1 leaves the overview.
    dev2 = Device.objects.get(device_id="dev-2")
    dev2.location = location
    dev2.save()
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, '[data-loc="S-PACK-1"] [data-device="dev-2"]'))
    set_devices_active(devices=Device.objects.filter(device_id="dev-1"), active=False)
    wait_for(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, '.factory[data-factory="North"]'))
    wait_for(browser, lambda b: b.find_element(By.ID, "device-count").text == "2 devices")  # the toolbar re-renders live
    assert_same_after_reload(browser, "#plant")
    assert_same_after_reload(browser, ".toolbar")


def test_a_device_that_stops_reporting_turns_offline_on_the_open_pages_as_a_reload_shows_it(live_hub, browser, publisher, plant):
    """A type that reports every 2 s is offline after 6 s of silence: the open device page and the
    open overview mark it so by themselves, not before, and their rows are what a reload renders."""
    from apps.devices.models import Device, DeviceType

    fast = DeviceType.objects.create(name="fast", primary_metric=plant["temperature"], expected_interval=2)
    fast.metrics.add(plant["temperature"])
    Device.objects.create(device_id="dev-fast", device_type=fast, location=plant["location"])
    log_in(browser, live_hub)
    row, head = '.device[data-device="dev-fast"]', ".device-head"
    assert "offline" in browser.find_element(By.CSS_SELECTOR, row).get_attribute("class")  # never heard of
    offline = lambda b, selector: "offline" in b.find_element(By.CSS_SELECTOR, selector).get_attribute("class")  # noqa: E731

    sent = now_ms()
    publisher("sensors/dev-fast", {"ts": sent, "temperature": 21.0})
    eventually(lambda: Device.objects.get(device_id="dev-fast").last_seen_at, message="last seen")
    browser.get(f"{live_hub}/devices/dev-fast/")
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))
    assert not offline(browser, head)
    wait_for(browser, lambda b: offline(b, head), timeout=15)
    assert now_ms() - sent >= 6000
    assert browser.find_element(By.CSS_SELECTOR, f"{head} .off-label").is_displayed()
    assert_same_after_reload(browser, head)

    browser.get(f"{live_hub}/")
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))
    assert offline(browser, row)
    sent = now_ms()
    publisher("sensors/dev-fast", {"ts": sent, "temperature": 22.0})
    wait_for(browser, lambda b: not offline(b, row))  # back online with the reading
    wait_for(browser, lambda b: offline(b, row), timeout=15)
    assert now_ms() - sent >= 6000
    assert_same_after_reload(browser, row)


def cell_title(browser, key):
    return browser.find_element(By.CSS_SELECTOR, f'[data-cell="{key}"]').get_attribute("title")


def test_alert_rows_arriving_live_are_the_rows_a_reload_renders(live_hub, browser, publisher):
    """An alert opens critical, falls back to warning, resolves: at every step the console's row,
    the device page's row and the overview's feed item are what a reload renders."""
    log_in(browser, live_hub)
    browser.get(f"{live_hub}/alerts/?state=all")
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))
    publisher("sensors/dev-2", {"ts": now_ms(), "temperature": 37.0})
    alert = eventually(lambda: Alert.objects.filter(device__device_id="dev-2").first(), message="alert row")
    row = f'tr[data-alert="{alert.pk}"]'
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, row))
    assert browser.find_elements(By.CSS_SELECTOR, f"{row} button.ack")
    assert_same_after_reload(browser, row)
    # Back to a warning, then resolved: the level it reached stays in sight; no more actions.
    publisher("sensors/dev-2", {"ts": now_ms(), "temperature": 32.0})
    wait_for(browser, lambda b: "was critical" in b.find_element(By.CSS_SELECTOR, row).text)
    assert_same_after_reload(browser, row)
    browser.get(f"{live_hub}/devices/dev-2/")
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))
    publisher("sensors/dev-2", {"ts": now_ms(), "temperature": 22.0})
    wait_for(browser, lambda b: "resolved" in b.find_element(By.CSS_SELECTOR, row).get_attribute("class"))
    assert not browser.find_elements(By.CSS_SELECTOR, f"{row} form")
    text = browser.find_element(By.CSS_SELECTOR, row).text
    assert "warning" in text and "was critical" in text and "37.00" in text
    assert_same_after_reload(browser, row)
    # The console of active alerts drops it live, as a reload does.
    browser.get(f"{live_hub}/alerts/")
    assert not browser.find_elements(By.CSS_SELECTOR, row)


def test_the_overview_feed_item_arriving_live_is_the_item_a_reload_renders(live_hub, browser, publisher):
    log_in(browser, live_hub)
    publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 31.0})
    alert = eventually(lambda: Alert.objects.filter(device__device_id="dev-1").first(), message="alert")
    item = f'#alert-feed [data-alert="{alert.pk}"]'
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, item))
    assert_same_after_reload(browser, item)
    assert_same_after_reload(browser, ".tile")


def test_an_acknowledged_alert_is_resolved_with_a_note(live_hub, browser, publisher):
    log_in(browser, live_hub)
    publisher("sensors/dev-2", {"ts": now_ms(), "temperature": 37.0})
    alert = eventually(lambda: Alert.objects.filter(device__device_id="dev-2").first(), message="alert")
    browser.get(f"{live_hub}/alerts/")
    row = f'tr[data-alert="{alert.pk}"]'
    browser.find_element(By.CSS_SELECTOR, f"{row} [name=note]").send_keys("fan replaced")
    browser.find_element(By.CSS_SELECTOR, f"{row} button.ack").click()
    wait_for(browser, lambda b: "acknowledged" in b.find_element(By.CSS_SELECTOR, row).get_attribute("class"))
    browser.find_element(By.CSS_SELECTOR, f"{row} [name=note]").send_keys("cooling back to normal")
    browser.find_element(By.CSS_SELECTOR, f"{row} button.resolve").click()
    wait_for(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, row))
    notes = list(alert.events.order_by("at").values_list("kind", "note"))
    assert notes[-2:] == [("acknowledged", "fan replaced"), ("resolved", "cooling back to normal")]


def test_the_device_charts_keep_their_height_across_resizes(live_hub, browser, publisher):
    """Resizes while readings stream in (each one moves the live chart along)."""
    publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 25.0, "humidity": 40.0})
    eventually(lambda: Reading.objects.count() >= 2, message="readings")
    log_in(browser, live_hub)
    browser.set_window_size(1400, 900)
    browser.get(f"{live_hub}/devices/dev-1/")
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#chart-temperature .main-svg"))
    heights = "return [...document.querySelectorAll('.chart .main-svg:first-child')].map(s => s.getBoundingClientRect().height)"
    points = "return document.getElementById('chart-temperature').data[0].y.length"
    before = browser.execute_script(heights)
    assert len(before) == 2 and min(before) >= 200
    for width, height in ((1400, 1000), (1200, 1000), (1400, 900)):
        browser.set_window_size(width, height)
        shown = browser.execute_script(points)
        publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 26.0, "humidity": 41.0})
        wait_for(browser, lambda b, shown=shown: b.execute_script(points) > shown)
        assert browser.execute_script(heights) == before, (width, height)


def test_the_alarm_sound_is_turned_on_and_remembered_per_browser(live_hub, browser, publisher):
    log_in(browser, live_hub)
    sound = lambda b: b.find_element(By.ID, "sound")  # noqa: E731
    assert sound(browser).get_attribute("data-state") == "off"
    sound(browser).click()
    wait_for(browser, lambda b: sound(b).get_attribute("data-state") == "on")
    assert sound(browser).get_attribute("aria-pressed") == "true"
    # After a reload the browser waits for a first click on the page before it lets sound play.
    browser.refresh()
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))
    assert sound(browser).get_attribute("data-state") == "blocked"
    browser.find_element(By.TAG_NAME, "h2").click()
    wait_for(browser, lambda b: sound(b).get_attribute("data-state") == "on")
    publisher("sensors/dev-2", {"ts": now_ms(), "temperature": 37.0})
    wait_for(browser, lambda b: sound(b).get_attribute("data-played") == "1")
    assert not page_problems(browser)


def test_the_header_shows_a_connection_state_only_on_pages_with_a_live_connection(live_hub, browser):
    """The overview, device page and alert console have a socket, the health page polls: each shows
    its connection state, and the first three the alarm sound control. The API tokens page has
    neither, so it shows no connection state (not "offline") and no sound control."""
    log_in(browser, live_hub)
    header = lambda b: (b.find_element(By.ID, "conn").is_displayed(), b.find_element(By.ID, "sound").is_displayed())  # noqa: E731
    for path, sound in (("/", True), ("/devices/dev-1/", True), ("/alerts/", True), ("/health/", False)):
        browser.get(live_hub + path)
        wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))
        assert header(browser) == (True, sound), path
        assert browser.find_element(By.ID, "conn").text == "● live", path
    browser.get(live_hub + "/accounts/tokens/")
    assert header(browser) == (False, False)
    assert "offline" not in browser.find_element(By.CSS_SELECTOR, ".topbar").text
    assert not page_problems(browser)


def test_every_page_fits_every_screen_without_errors(live_hub, browser, publisher, plant):
    """Phone, tablet and wall display: no page reaches past the screen's right edge, none logs a
    console error or has a request fail (favicon included), axe-core finds no serious or critical
    WCAG 2.1 A/AA violation; on every screen, ids are whole, the log-out button is on screen and no
    chart toolbar covers a chart's title."""
    from apps.devices.models import Device, DeviceType, Metric

    get_user_model().objects.create_superuser("chief", password="chief-pw-1")
    # As the demo's: four metrics, and offline with an id as long as the simulator's. The row still
    # shows the whole id on a phone.
    four = DeviceType.objects.create(name="env-4", primary_metric=plant["temperature"])
    four.metrics.add(plant["temperature"], plant["humidity"], *(Metric.objects.create(key=k, unit="°C") for k in ("pcvt", "pt")))
    Device.objects.create(device_id="sim-00047", device_type=four, location=plant["location"])
    publisher("sensors/dev-1", {"ts": now_ms(), "temperature": 37.0, "humidity": 40.0})
    eventually(lambda: Alert.objects.exists(), message="an alert")
    publisher("sensors/dev-2", b"{broken json")
    eventually(lambda: DeadLetter.objects.exists(), message="a dead letter")
    device_pk, threshold_pk = plant["devices"][0].pk, plant["threshold"].pk
    pages = [
        "/",
        "/?kiosk=1",
        "/devices/dev-1/",
        "/devices/dev-1/?range=30d",
        "/alerts/",
        "/alerts/?state=all",
        "/health/",
        "/alarms/kpis/",
        "/admin/",
        "/admin/devices/device/",
        f"/admin/devices/device/{device_pk}/change/",
        "/admin/devices/location/",
        "/admin/alerts/threshold/",
        f"/admin/alerts/threshold/{threshold_pk}/change/",
        "/admin/alerts/alert/",
        "/admin/alerts/maintenancewindow/",
        "/admin/alerts/maintenancewindow/add/",
    ]
    log_in(browser, live_hub, "chief", "chief-pw-1")
    for viewport in VIEWPORTS:
        set_viewport(browser, viewport)
        for path in pages:
            browser.get(live_hub + path)
            if not path.startswith("/admin/"):
                wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))
            if path.startswith("/devices/"):
                wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#chart-temperature .main-svg"))
            overflow, element = horizontal_overflow(browser)
            assert overflow <= 0, f"{path} at {viewport}: {overflow} px past the right edge: {element}"
            assert page_problems(browser) == [], f"{path} at {viewport}"
            assert serious_accessibility_violations(browser) == [], f"{path} at {viewport}"
            if not path.startswith("/admin/"):
                assert_usable(browser, f"{path} at {viewport}")
        screenshot(browser, f"device-{viewport}")


USABILITY_CHECKS = """
const width = document.documentElement.clientWidth;
const logout = document.querySelector(".logout button");
const cut = [...document.querySelectorAll(".device a, h1, .alert-row a")].filter(a => a.scrollWidth > a.clientWidth + 1);
const covered = [...document.querySelectorAll(".chart-card")].filter(card => {
  const title = card.querySelector("h2").getBoundingClientRect(), bar = card.querySelector(".modebar");
  return bar && bar.getBoundingClientRect().top < title.bottom;
});
return {logout: logout && logout.offsetParent ? logout.getBoundingClientRect().right <= width : null, cut: cut.map(a => a.textContent), covered: covered.length};
"""


def assert_usable(browser, page):
    """Ids are whole, the log-out button is on screen (none in kiosk mode), no chart toolbar covers a chart's title."""
    checks = browser.execute_script(USABILITY_CHECKS)
    assert checks == {"logout": None if "kiosk" in page else True, "cut": [], "covered": 0}, page


def test_the_kiosk_mode_cycles_through_the_factories_a_screenful_at_a_time_in_large_type(live_hub, browser, plant):
    """North (taller than a wall display) is shown screenful by screenful, then South, then North
    again from the top; the toolbar says which factory and screen is on show; nobody scrolls."""
    from apps.devices.models import Device, Location

    for n in range(12):
        hall = Location.objects.create(loc_id=f"N-H{n}", factory="North", building=f"Hall {n:02d}", floor="1", area="A")
        Device.objects.create(device_id=f"dev-n{n}", device_type=plant["type"], location=hall)
    south = Location.objects.create(loc_id="S-1", factory="South", building="Hall", floor="1", area="A")
    Device.objects.create(device_id="dev-s1", device_type=plant["type"], location=south)
    log_in(browser, live_hub)
    set_viewport(browser, "desktop")
    browser.get(f"{live_hub}/?kiosk=1&cycle=2")
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))
    assert not browser.find_element(By.CSS_SELECTOR, ".topbar nav").is_displayed()
    assert browser.execute_script("return getComputedStyle(document.body).fontSize") == "20px"
    assert browser.execute_script("return getComputedStyle(document.documentElement).overflow") == "hidden"

    def on_show(b):
        shown = [f.get_attribute("data-factory") for f in b.find_elements(By.CSS_SELECTOR, ".factory") if f.is_displayed()]
        place = b.find_element(By.ID, "kiosk-place").get_attribute("textContent")
        return shown, place, b.execute_script("return window.scrollY")

    shown, place, scrolled = on_show(browser)
    screens = int(place.rsplit(" ", 1)[1])
    assert (shown, place, scrolled) == (["North"], f"North · factory 1 of 2 · screen 1 of {screens}", 0) and screens >= 2
    screenshot(browser, "kiosk")
    for screen in range(2, screens + 1):
        wait_for(browser, lambda b, screen=screen: f"screen {screen} of" in on_show(b)[1], timeout=5)
        assert on_show(browser)[2] > 0
    # The last screenful shows North's last device.
    last = browser.find_element(By.CSS_SELECTOR, '[data-device="dev-n11"]').rect
    assert 0 <= last["y"] - browser.execute_script("return window.scrollY") < 1080 - last["height"]
    wait_for(browser, lambda b: on_show(b) == (["South"], "South · factory 2 of 2", 0), timeout=5)
    wait_for(browser, lambda b: on_show(b) == (["North"], f"North · factory 1 of 2 · screen 1 of {screens}", 0), timeout=5)


def test_it_switches_to_korean_and_live_rows_arrive_in_korean(live_hub, browser, publisher):
    from selenium.webdriver.support.ui import Select

    log_in(browser, live_hub)
    Select(browser.find_element(By.CSS_SELECTOR, ".language select")).select_by_value("ko")
    wait_for(browser, lambda b: b.find_element(By.TAG_NAME, "html").get_attribute("lang") == "ko")
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))
    assert browser.title.startswith("공장 개요") and browser.find_element(By.ID, "device-count").text == "장치 2대"
    publisher("sensors/dev-2", {"ts": now_ms(), "temperature": 37.0})
    alert = eventually(lambda: Alert.objects.filter(device__device_id="dev-2").first(), message="alert")
    item = f'#alert-feed [data-alert="{alert.pk}"]'
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, item))
    assert "위험" in browser.find_element(By.CSS_SELECTOR, item).text
    assert "위험 알림:" in browser.find_element(By.ID, "banner").text
    assert_same_after_reload(browser, item)
    browser.get(f"{live_hub}/devices/dev-2/")
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#chart-temperature .main-svg"))
    assert browser.execute_script("return document.getElementById('chart-temperature')._context.locale") == "ko"
    assert "위험 열림" in browser.find_element(By.CSS_SELECTOR, f'tr[data-alert="{alert.pk}"]').text
    assert not page_problems(browser)


AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"  # scripts/bootstrap.sh requirements-dev.txt installs it
RUN_AXE = """
const done = arguments[arguments.length - 1];
axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}, resultTypes: ["violations"]})
  .then(result => done(result.violations.filter(v => v.impact === "serious" || v.impact === "critical")
    .map(v => v.id + ": " + v.help + " — " + v.nodes.slice(0, 3).map(n => n.target.join(" ") + " " + (n.failureSummary || "")).join(" | "))))
  .catch(error => done(["axe failed: " + error]));
"""


def serious_accessibility_violations(browser):
    """axe-core (from npm, injected from the local file) on the page as it stands."""
    browser.execute_script(AXE.read_text())
    browser.set_script_timeout(30)
    return browser.execute_async_script(RUN_AXE)


def test_the_api_docs_and_the_tokens_page_work_under_the_content_security_policy(live_hub, browser):
    """Swagger UI (its set-up script served from a URL) and the tokens page load with no console
    error, so with no Content-Security-Policy violation either."""
    get_user_model().objects.create_superuser("chief", password="chief-pw-1")
    log_in(browser, live_hub, "chief", "chief-pw-1")
    page_problems(browser)  # what the log-in left behind
    browser.get(live_hub + "/api/docs/")
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock"))
    assert page_problems(browser) == []
    browser.get(live_hub + "/accounts/tokens/")
    browser.find_element(By.NAME, "name").send_keys("csp check")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit], form input[type=submit]").click()
    wait_for(browser, lambda b: "csp check" in b.page_source)
    assert page_problems(browser) == []


def test_the_alarm_kpi_page_draws_its_figures_against_eemua_191_on_every_screen(live_hub, browser, alarm_history):
    log_in(browser, live_hub)
    for viewport in VIEWPORTS:
        set_viewport(browser, viewport)
        start, end = (f"{alarm_history + timedelta(days=d):%Y-%m-%d}" for d in (-1, 1))
        browser.get(f"{live_hub}/alarms/kpis/?start={start}&end={end}")
        wait_for(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, ".chart .main-svg")) >= 2)
        wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".conn.live"))
        overflow, element = horizontal_overflow(browser)
        assert overflow <= 0, f"{viewport}: {overflow} px past the right edge: {element}"
        assert page_problems(browser) == [], viewport
        assert serious_accessibility_violations(browser) == [], viewport
        screenshot(browser, f"kpis-{viewport}")
    assert browser.find_element(By.CSS_SELECTOR, 'nav a[aria-current="page"]').text == "Alarm KPIs"
    figure = browser.find_element(By.CSS_SELECTOR, '[data-kpi="peak_per_10min"]').text
    assert "12" in figure and "✗ flood" in figure and "target ≤ 10" in figure
    limits = [a.text for a in browser.find_elements(By.CSS_SELECTOR, ".chart .annotation-text")]
    assert limits == ["EEMUA 191: at most 6 per hour is manageable", "flood: more than 10 in 10 minutes"]
    hourly = browser.execute_script("return document.getElementById('chart-per-hour').data[0].y")
    assert (len(hourly), sum(hourly), max(hourly)) == (3 * 24, 17, 12)
    rows = browser.find_elements(By.CSS_SELECTOR, "#top-alarms tbody tr")
    assert [r.find_element(By.TAG_NAME, "a").text for r in rows] == ["dev-1", "dev-2", "dev-3"]
