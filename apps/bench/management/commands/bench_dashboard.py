"""`manage.py bench_dashboard --devices 10000`: the plant overview in headless Chromium at plant scale.

Measures the first render of the overview (navigation timing), then streams live readings
through the channel layer as the ingest's LivePublisher does (group "live", one
"live.readings" message per push) and measures in the page the lag from each reading's
timestamp to its cell showing it, and the animation frames the page drops.

Isolated from the hub and from test runs: its own PostgreSQL database (iothub_benchdash,
created with psql, dropped afterwards unless --keep-database), its own IOTHUB_NAMESPACE (cache,
channel layer; its keys are deleted afterwards) and its own daphne on a free port. The command
runs in two steps: in the services' environment it prepares the database and the namespace and
runs itself again inside them, in a process group of its own that is killed at --timeout; that
inner run seeds, serves, drives Chromium and measures.
"""

import asyncio
import io
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.alerts.models import Alert
from apps.bench.benchmarks import BenchError, free_port, percentile, wait_until
from apps.bench.support import HubProcess
from apps.devices.models import Device, Metric
from apps.live.broadcast import LIVE_GROUP
from apps.telemetry.latest import store_latest

BENCH_DATABASE = "iothub_benchdash"
ROOT = Path(settings.BASE_DIR)
PASSED_OPTIONS = ("devices", "rate", "duration", "interval", "loads")
ALERT_EVERY = 50  # one open alert per this many devices, so the tree has counts to show

NAVIGATION_TIMING = """
const n = performance.getEntriesByType("navigation")[0];
const paint = performance.getEntriesByName("first-contentful-paint")[0];
return {server: n.responseStart - n.requestStart, responseEnd: n.responseEnd, firstPaint: paint ? paint.startTime : null,
        domContentLoaded: n.domContentLoadedEventEnd, load: n.loadEventEnd, bytes: n.decodedBodySize,
        cells: document.querySelectorAll("[data-cell]").length};
"""

# Lag of every cell update: when its data-ts changes (live.js applies a frame's updates, then the
# observer runs) and at the next animation frame (the updated frame has been painted). Every
# animation frame's time, for the gaps between them.
INSTRUMENT = """
const stats = window.benchStats = {dom: [], painted: [], frames: [], stopped: false};
new MutationObserver((records) => {
  const now = Date.now();
  const stamps = records.map((r) => Number(r.target.dataset.ts));
  for (const ts of stamps) stats.dom.push(now - ts);
  requestAnimationFrame(() => { const painted = Date.now(); for (const ts of stamps) stats.painted.push(painted - ts); });
}).observe(document.querySelector(".plant"), {subtree: true, attributeFilter: ["data-ts"]});
function frame(t) { stats.frames.push(t); if (!stats.stopped) requestAnimationFrame(frame); }
requestAnimationFrame(frame);
"""
DROPPED_FRAME_MS = 50


class Command(BaseCommand):
    help = "Time the plant overview with N devices in headless Chromium: first render, live-update lag, dropped frames."

    def add_arguments(self, parser):
        parser.add_argument("--devices", type=int, default=10_000)
        parser.add_argument("--rate", type=int, default=5_000, help="live readings per second (default 5000)")
        parser.add_argument("--duration", type=float, default=10.0, help="seconds of live updates (default 10)")
        parser.add_argument(
            "--interval", type=float, default=0.25, help="seconds between pushes, as IOTHUB_LIVE_PUSH_INTERVAL (default 0.25)"
        )
        parser.add_argument("--loads", type=int, default=3, help="page loads timed for the first render (default 3)")
        parser.add_argument("--timeout", type=float, default=600, help="seconds before the run is killed (default 600)")
        parser.add_argument("--keep-database", action="store_true", help=f"keep {BENCH_DATABASE} afterwards")

    def handle(self, **options):
        if settings.DATABASES["default"]["NAME"] == BENCH_DATABASE:
            try:
                self.measure(**{name: options[name] for name in PASSED_OPTIONS})
            except BenchError as error:
                raise CommandError(f"bench_dashboard: {error}") from error
        else:
            self.run_isolated(options)

    # ---------------------------------------------------------------------------------------
    # Outer run, in the services' environment

    def run_isolated(self, options):
        server_url = os.environ.get("DATABASE_URL", "")
        if not server_url.startswith("postgres") or not settings.REDIS_URL:
            raise CommandError('bench_dashboard needs PostgreSQL and Redis: eval "$(scripts/services.sh env)"')
        namespace = f"benchdash-{uuid.uuid4().hex[:8]}"
        psql(server_url, f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)", f"CREATE DATABASE {BENCH_DATABASE}")
        env = {**os.environ, "DATABASE_URL": database_url(server_url, BENCH_DATABASE), "IOTHUB_NAMESPACE": namespace}
        args = [f"--{name}={options[name]}" for name in PASSED_OPTIONS]
        inner = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "bench_dashboard", *args], cwd=ROOT, env=env, start_new_session=True
        )
        try:
            returncode = inner.wait(options["timeout"])
        except subprocess.TimeoutExpired:
            raise CommandError(f"bench_dashboard: no result within {options['timeout']:.0f} s") from None
        finally:
            stop_group(inner)
            delete_namespace(namespace)
            if not options["keep_database"]:
                psql(server_url, f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        if returncode:
            raise CommandError(f"bench_dashboard failed (exit code {returncode})")

    # ---------------------------------------------------------------------------------------
    # Inner run, in the benchmark's database and namespace

    def measure(self, *, devices, rate, duration, interval, loads):
        from apps.bench.browser import headless_chromium  # selenium: a development requirement

        self.progress(f"seeding {devices:,} devices into {BENCH_DATABASE}")
        call_command("migrate", verbosity=0)
        call_command("seed_demo", devices=devices, stdout=io.StringIO())
        password = secrets.token_urlsafe(16)
        get_user_model().objects.create_user("bench", password=password, is_staff=True)
        pairs = list(
            Device.objects.filter(device_id__startswith="sim-")
            .order_by("device_id")
            .values_list("device_id", "device_type__metrics__key")
        )
        store_latest(reading_items(pairs, start=0, count=len(pairs), ts=int(time.time() * 1000)))
        open_alerts()

        workdir = Path(tempfile.mkdtemp(prefix="benchdash-"))
        with daphne(workdir) as base_url, headless_chromium(page_load_timeout=120) as browser:
            log_in(browser, base_url, password)
            renders = []
            for n in range(loads):
                self.progress(f"timing the overview's first render ({n + 1} of {loads})")
                renders.append(first_render(browser, base_url))
            self.progress(f"pushing {rate:,} readings/s for {duration:g} s")
            live = live_updates(browser, pairs, rate=rate, duration=duration, interval=interval)
            chromium = browser.capabilities.get("browserVersion", "?")
        self.report(
            devices=devices, rate=rate, duration=duration, interval=interval, renders=renders, live=live, chromium=chromium
        )

    def progress(self, text):
        self.stderr.write(f"bench_dashboard: {text}")

    def report(self, *, devices, rate, duration, interval, renders, live, chromium):
        out = self.stdout.write
        first = renders[0]
        out(f"\nbench_dashboard --devices {devices} --rate {rate} --duration {duration:g} --interval {interval:g}")
        out(
            f"Chromium {chromium} headless, {os.cpu_count()} CPUs shared by daphne, Redis, PostgreSQL, Chromium and this command\n"
        )
        out(f"Overview first render: {first['cells']:,} cells, {first['bytes'] / 1e6:.1f} MB of HTML; ms after navigation start")
        header = "".join(f"{f'load {n + 1}':>9}" for n in range(len(renders)))
        out(f"  {'':<34}{header}{'median':>9}")
        for key, label in [
            ("server", "server (request → first byte)"),
            ("responseEnd", "responseEnd"),
            ("firstPaint", "first contentful paint"),
            ("domContentLoaded", "domContentLoaded"),
            ("load", "load"),
        ]:
            values = [r[key] for r in renders]
            row = "".join(f"{v:>9.0f}" for v in values)
            out(f"  {label:<34}{row}{statistics.median(values):>9.0f}")

        sent, per_push = live["sent"], round(rate * interval)
        out(f"\nLive updates: {rate:,} readings/s for {duration:g} s, {per_push:,} per push every {interval * 1000:.0f} ms")
        out(f"  cells updated: {len(live['dom']):,} of {sent:,} readings sent")
        out(f"  {'lag, ms':<34}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
        for key, label in [("dom", "reading ts → cell updated"), ("painted", "reading ts → next frame (painted)")]:
            row = "".join(f"{percentile(sorted(live[key]), p) if live[key] else math.nan:>9.0f}" for p in (50, 95, 99, 100))
            out(f"  {label:<34}{row}")
        gaps = [b - a for a, b in zip(live["frames"], live["frames"][1:], strict=False)]
        span = (live["frames"][-1] - live["frames"][0]) / 1000 if len(live["frames"]) > 1 else 0
        dropped = sum(gap > DROPPED_FRAME_MS for gap in gaps)
        out(
            f"  frames: {len(live['frames']):,} in {span:.1f} s ({len(gaps) / span if span else 0:.0f} fps), "
            f"{dropped} gaps > {DROPPED_FRAME_MS} ms (dropped frames), longest {max(gaps, default=0):.0f} ms"
        )


# -------------------------------------------------------------------------------------------
# Services, processes, data


def database_url(server_url, name):
    """The same server and credentials, another database."""
    return urlunsplit(urlsplit(server_url)._replace(path="/" + name))


def psql(server_url, *statements):
    """Run statements with psql as the services' user, connected to the maintenance database."""
    command = ["psql", database_url(server_url, "postgres"), "--quiet", "--no-psqlrc", "-v", "ON_ERROR_STOP=1"]
    for statement in statements:
        command += ["-c", statement]
    env = {**os.environ, "PGOPTIONS": "-c client_min_messages=warning"}  # no NOTICE for a missing database
    subprocess.run(command, check=True, timeout=60, stdout=subprocess.DEVNULL, env=env)


def stop_group(process):
    """End the inner run and every process it started (daphne, chromedriver, Chromium): its process group."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def delete_namespace(namespace):
    """Delete the run's Redis keys: latest values, channel layer groups and queues."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter(f"{namespace}:*", count=5000))
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start : start + 5000])


@contextmanager
def daphne(log_dir):
    """daphne serving the hub on a free loopback port (this run's database and namespace); yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "iothub.asgi:application"]
    with HubProcess("daphne", command, env=dict(os.environ), log_dir=log_dir) as process:
        process.wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"


def reading_items(pairs, *, start, count, ts):
    """`count` live items for pairs[start:start + count] (wrapping around), as the ingest pushes them."""
    items = []
    for n in range(start, start + count):
        device, metric = pairs[n % len(pairs)]
        value = 18.0 + (n * 7919 % 151) / 10  # 18.0 … 33.0, changing at every push: mostly normal, some warnings
        items.append(
            {"device": device, "metric": metric, "value": value, "ts": ts, "status": "warning" if value > 30 else "normal"}
        )
    return items


def open_alerts():
    """An open alert on every ALERT_EVERY-th device, warnings and criticals in turn."""
    temperature = Metric.objects.get(key="temperature")
    now = timezone.now()
    pks = Device.objects.order_by("device_id").values_list("pk", flat=True)[::ALERT_EVERY]
    Alert.objects.bulk_create(
        Alert(
            device_id=pk,
            metric=temperature,
            level="warning" if n % 2 else "critical",
            opened_at=now,
            first_value=31.0,
            peak_value=31.0,
            last_value=31.0,
        )
        for n, pk in enumerate(pks)
    )


# -------------------------------------------------------------------------------------------
# The browser side


def log_in(browser, base_url, password):
    from selenium.webdriver.common.by import By

    browser.get(f"{base_url}/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys("bench")
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_until(lambda: "/accounts/login/" not in browser.current_url, timeout=60, what="the login")


def first_render(browser, base_url):
    """Load the overview (selenium waits for the load event) and read its navigation timing once painted."""
    browser.get(f"{base_url}/")

    def painted():
        timing = browser.execute_script(NAVIGATION_TIMING)
        return timing if timing["load"] > 0 and timing["firstPaint"] is not None else None

    wait_until(painted, timeout=30, what="the load event and the first paint")
    return painted()


def live_updates(browser, pairs, *, rate, duration, interval):
    """Instrument the page, push the readings, and collect the page's measurements."""
    wait_until(
        lambda: browser.execute_script("return document.getElementById('conn').textContent.includes('live')"),
        timeout=30,
        what="the live WebSocket",
    )
    browser.execute_script(INSTRUMENT)
    sent = asyncio.run(
        push_readings(pairs, per_push=round(rate * interval), pushes=round(duration / interval), interval=interval)
    )
    time.sleep(1.5)  # the last pushes reach the page
    browser.execute_script("window.benchStats.stopped = true")
    return {**browser.execute_script("return window.benchStats"), "sent": sent}


async def push_readings(pairs, *, per_push, pushes, interval):
    """Send `pushes` batches of `per_push` items to the live group, one every `interval` seconds; → items sent."""
    layer = get_channel_layer()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(pushes):
        items = reading_items(pairs, start=n * per_push, count=per_push, ts=int(time.time() * 1000))
        await layer.group_send(LIVE_GROUP, {"type": "live.readings", "items": items})
        await asyncio.sleep(max(0.0, started + (n + 1) * interval - loop.time()))
    return pushes * per_push
