"""Headless Chromium driven by selenium, for the dashboard's browser tests, benchmark and screenshots.

Needs the development requirements (selenium) and the chromium and chromedriver binaries.
"""

import json
import shutil
import tempfile
from contextlib import contextmanager

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]

# The three screens the dashboard is made for: (width, height, mobile).
VIEWPORTS = {"phone": (390, 844, True), "tablet": (820, 1180, True), "desktop": (1920, 1080, False)}


@contextmanager
def headless_chromium(*, page_load_timeout=30, language="en"):
    """A Chromium with a throwaway profile, keeping its console and network logs; quit and removed on exit."""
    profile = tempfile.mkdtemp(prefix="iothub-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--lang={language}"]:
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.set_page_load_timeout(page_load_timeout)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def set_viewport(driver, name):
    """Emulate one of VIEWPORTS (a headless window is never narrower than 500 px)."""
    width, height, mobile = VIEWPORTS[name]
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
    )


def page_problems(driver):
    """Console errors and failed requests (HTTP ≥ 400 or not loaded) since the last call."""
    problems = [f"console: {entry['message']}" for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    urls = {}
    for entry in driver.get_log("performance"):
        event = json.loads(entry["message"])["message"]
        params = event.get("params", {})
        if event["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif event["method"] == "Network.responseReceived" and params["response"]["status"] >= 400:
            problems.append(f"HTTP {params['response']['status']}: {params['response']['url']}")
        elif event["method"] == "Network.loadingFailed" and not params.get("canceled"):
            problems.append(f"failed: {params.get('errorText')} {urls.get(params['requestId'], '')}")
    return problems


# The right edge of the rightmost visible element: unlike the document's scroll width, it also
# counts what sticks out of a box that clips or scrolls it.
RIGHTMOST = """
let right = 0, who = "";
for (const el of document.querySelectorAll("body *")) {
  const box = el.getBoundingClientRect();
  if (!box.width || !box.height || getComputedStyle(el).visibility === "hidden") continue;
  if (box.right > right) { right = box.right; who = el.outerHTML.slice(0, 120); }
}
return [Math.ceil(right - 0.5), document.documentElement.clientWidth, who];
"""


def horizontal_overflow(driver):
    """How far (px) the page's content reaches past the viewport's right edge, and the element that does."""
    right, width, who = driver.execute_script(RIGHTMOST)
    return max(0, right - width), who
