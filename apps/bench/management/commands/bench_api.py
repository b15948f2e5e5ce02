"""`manage.py bench_api`: the integrator API under concurrent clients.

Seeds --devices demo devices with a latest value of every metric in Redis (store_latest) and
--rollup-devices × --days of hourly rollups (COPY; the daily ones by the hub's recompute_days),
starts --web-processes daphne processes against the bench database and namespace, and measures p50/p95/p99
of `GET /api/v1/realtime/?factory=…` (a whole factory) and of `GET /api/v1/aggregation/temperature/
?start_date=…&end_date=…&interval=hour` (all devices, --days days), each next to its platform-compatible
twin (`realtime/factory/…`, `aggregation/temperature/factory/…`), from stdlib HTTP clients on
keep-alive connections: one client, then --clients at once, while a thread changes the latest values of
--updates devices a second (as ingest would). Where a p99 misses its target, the
same request is profiled in-process (cProfile, the SQL it ran through Django's cursor, EXPLAIN ANALYZE of
its slowest statement; the aggregation rows, read by apps.telemetry.aggregation.fetch_rows, are not among them).
"""

import cProfile
import http.client
import io
import math
import pstats
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from urllib.parse import quote, urlencode

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts.services import issue_api_token
from apps.bench.benchmarks import BenchError, demo_device_pks, latency_stats, metric_pk
from apps.bench.support import (
    BenchCommand,
    daphne_replicas,
    in_bench,
    machine_load,
    stats_text,
)
from apps.devices.models import Device
from apps.telemetry.latest import store_latest
from apps.telemetry.rollups import local_dates, plant_tz, recompute_days, recompute_location_hours

TARGET_MS = 100
BENCH_USER_PREFIX = "bench-api-"
LATEST_CHUNK = 5000
ROLLUP_COLUMNS = "(device_id, metric_id, bucket, min, max, sum, count)"
ROLLUP_TYPES = ["int8", "int8", "timestamptz", "float8", "float8", "float8", "int4"]
READINGS_PER_HOUR = 60


@dataclass
class Endpoint:
    name: str
    path: str

    @property
    def key(self):
        """Short name for the summary and file names: "realtime", "aggregation"."""
        return self.name.split(",")[0]


@dataclass
class Measured:
    """Latencies of one endpoint at one concurrency."""

    samples: list
    seconds: float
    response_bytes: int

    @property
    def throughput(self):
        return len(self.samples) / self.seconds


def hourly_rollup_rows(*, device_pks, metric, start, hours):
    """One hourly rollup row per device and hour, as if 60 readings had arrived in it."""
    for hour in range(hours):
        bucket = start + timedelta(hours=hour)
        wave = 2.0 * math.sin(hour / 24 * 2 * math.pi)
        for pk in device_pks:
            avg = 20.0 + (pk % 17) * 0.4 + wave
            yield pk, metric, bucket, avg - 0.5, avg + 0.5, avg * READINGS_PER_HOUR, READINGS_PER_HOUR


def http_latencies(ports, path, headers, *, clients, requests, budget, minimum=20):
    """GET `path` up to `requests` times from `clients` threads, each on its own keep-alive
    connection, to the `ports` in turn (as a round-robin load balancer would spread them); stops
    early (after at least `minimum`) once `budget` seconds have passed."""
    lock = threading.Lock()
    issued = [0]
    deadline = time.monotonic() + budget

    def claim():
        with lock:
            if issued[0] >= requests or (issued[0] >= minimum and time.monotonic() > deadline):
                return False
            issued[0] += 1
            return True

    def client(port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        samples, size = [], 0
        try:
            while claim():
                started = time.perf_counter()
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                samples.append((time.perf_counter() - started) * 1000)
                if response.status != 200:
                    raise BenchError(f"GET {path}: HTTP {response.status}: {body[:300]!r}")
                size = len(body)
        finally:
            conn.close()
        return samples, size

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, [ports[n % len(ports)] for n in range(clients)]))
    seconds = time.monotonic() - started
    return Measured([s for samples, _ in results for s in samples], seconds, max(size for _, size in results))


class Command(BenchCommand):
    help = "Benchmark the integrator API (realtime of a factory, 30-day hourly aggregation) with concurrent HTTP clients."
    default_database = "iothub_bench_api"

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--devices", type=int, default=10_000, help="demo devices, each with latest values in Redis")
        parser.add_argument("--rollup-devices", type=int, default=1000, help="devices with hourly rollups")
        parser.add_argument("--days", type=int, default=30, help="days of hourly rollups (ending at the last local midnight)")
        parser.add_argument("--factory", default="Plant North", help="factory of the realtime request")
        parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients of the second measurement")
        parser.add_argument("--requests", type=int, default=200, help="requests per endpoint and concurrency")
        parser.add_argument(
            "--budget", type=float, default=60, help="seconds per endpoint and concurrency (at least 20 requests)"
        )
        parser.add_argument(
            "--web-processes",
            type=int,
            default=1,
            help="daphne processes sharing one listening socket (architecture §8: daphne replicas)",
        )
        parser.add_argument(
            "--updates",
            type=int,
            default=1000,
            help="devices per second whose latest values change while the API is measured, as ingest would "
            "write them (default: 10,000 devices reporting every 10 s)",
        )

    def run_benchmark(self, run, stack):
        options = self.options
        self.prepare_database(run, options["devices"])
        with in_bench(self.database, run.namespace), self.database.connect() as conn:
            self.empty_tables(conn)
            device_keys = device_metric_keys()
            self.store_latest_values(device_keys)
            start, end = self.generate_rollups(conn)
            headers = {"Authorization": f"Token {staff_token(run.run_id)}"}
            # The per-token throttle (6000/min by default) would cap the clients, not measure the API.
            ports = daphne_replicas(
                stack, count=options["web_processes"], env=run.env(IOTHUB_API_RATE="1000000/min"), log_dir=run.log_dir
            )
            self.say(f"  daphne serving the bench database on 127.0.0.1, port(s) {', '.join(map(str, ports))}")
            updates = stack.enter_context(LatestUpdates(device_keys, per_second=options["updates"]))
            self.say(
                f"  latest values of {options['updates']:,} devices per second changing meanwhile (store_latest, every 0.1 s)"
            )
            for endpoint in self.endpoints(start, end):
                self.bench_endpoint(ports, endpoint, headers, run.log_dir)
            self.say(f"\n  latest-value updates: {updates.devices:,} device documents written during the measurements")

    def empty_tables(self, conn):
        conn.execute(
            "TRUNCATE telemetry_hourlyrollup, telemetry_dailyrollup, telemetry_locationhourlyrollup, telemetry_locationdailyrollup"
        )
        conn.execute(
            "DELETE FROM accounts_apitoken WHERE user_id IN (SELECT id FROM auth_user WHERE username LIKE %s)",
            [BENCH_USER_PREFIX + "%"],
        )
        conn.execute("DELETE FROM auth_user WHERE username LIKE %s", [BENCH_USER_PREFIX + "%"])

    def endpoints(self, start, end):
        last_day = end - timedelta(days=1)
        aggregation = {"start_date": f"{start:%Y%m%d}", "end_date": f"{last_day:%Y%m%d}", "interval": "hour"}
        factory = quote(self.options["factory"])
        period = urlencode({name: aggregation[name] for name in ("start_date", "end_date")})
        return [
            Endpoint(
                f"realtime, factory {self.options['factory']}",
                f"/api/v1/realtime/?{urlencode({'factory': self.options['factory']})}",
            ),
            Endpoint(
                f"realtime-platform, factory {self.options['factory']} (compatibility)", f"/api/v1/realtime/factory/{factory}"
            ),
            Endpoint(
                f"aggregation, {self.options['days']} days hourly", f"/api/v1/aggregation/temperature/?{urlencode(aggregation)}"
            ),
            Endpoint(
                f"aggregation-platform, factory {self.options['factory']}, {self.options['days']} days hourly (compatibility)",
                f"/api/v1/aggregation/temperature/factory/{factory}?{period}",
            ),
        ]

    # ----------------------------------------------------------------------------------------
    # data

    def store_latest_values(self, device_keys):
        """A latest value of every metric of every device, through the hub's store_latest."""
        started = time.monotonic()
        items = latest_items(device_keys, int(time.time() * 1000))
        for offset in range(0, len(items), LATEST_CHUNK):
            store_latest(items[offset : offset + LATEST_CHUNK])
        self.say(f"  latest values: {len(items):,} (device, metric) pairs stored in Redis in {time.monotonic() - started:.1f} s")

    def generate_rollups(self, conn):
        """--rollup-devices × --days hourly rollups by COPY, then the locations' and the daily ones by the hub's code; returns [start, end)."""
        days, devices = self.options["days"], self.options["rollup_devices"]
        end = datetime.combine(timezone.now().astimezone(plant_tz()).date(), dtime.min, tzinfo=plant_tz())
        start = end - timedelta(days=days)
        started = time.monotonic()
        rows = hourly_rollup_rows(
            device_pks=demo_device_pks(conn, devices), metric=metric_pk(conn, "temperature"), start=start, hours=days * 24
        )
        with conn.transaction(), conn.cursor() as cursor:
            with cursor.copy(f"COPY telemetry_hourlyrollup {ROLLUP_COLUMNS} FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(ROLLUP_TYPES)
                for row in rows:
                    copy.write_row(row)
            hourly = cursor.rowcount
        recompute_location_hours(start, end)
        recompute_days(local_dates(start, end, plant_tz()))
        conn.execute(
            "ANALYZE telemetry_hourlyrollup, telemetry_dailyrollup, telemetry_locationhourlyrollup, telemetry_locationdailyrollup"
        )
        self.say(
            f"  rollups: {hourly:,} hourly rows ({devices:,} devices × {days} days) and their daily rows "
            f"in {time.monotonic() - started:.0f} s"
        )
        return start, end

    # ----------------------------------------------------------------------------------------
    # measurement

    def bench_endpoint(self, ports, endpoint, headers, log_dir):
        options = self.options
        self.say(f"\n== {endpoint.name}: GET {endpoint.path} ({machine_load()}) ==")
        warm = 3 * len(ports)  # three requests to each process
        http_latencies(ports, endpoint.path, headers, clients=len(ports), requests=warm, budget=0, minimum=warm)
        missed = False
        for clients in dict.fromkeys((1, options["clients"])):
            measured = http_latencies(
                ports, endpoint.path, headers, clients=clients, requests=options["requests"], budget=options["budget"]
            )
            stats = latency_stats(measured.samples)
            self.say(
                f"  {clients} client(s): {stats_text(measured.samples)}; {measured.throughput:,.1f} requests/s; "
                f"{measured.response_bytes / 1024:,.0f} KiB per response ({machine_load()})"
            )
            section = f"api/{endpoint.key}"
            for p in ("p50", "p95", "p99"):
                self.summary.add(
                    section, f"{clients} client(s) {p}", stats[p], "ms", target=("<=", TARGET_MS) if p == "p99" else None
                )
            self.summary.add(
                section,
                f"{clients} client(s) throughput",
                measured.throughput,
                "requests/s",
                note=f"{measured.response_bytes / 1024:,.0f} KiB each",
            )
            missed = missed or stats["p99"] > TARGET_MS
        if missed:
            self.profile(endpoint, headers, log_dir)

    def profile(self, endpoint, headers, log_dir):
        """The request in this process: cProfile, the SQL it ran, EXPLAIN ANALYZE of the slowest statement."""
        client = Client(HTTP_AUTHORIZATION=headers["Authorization"], HTTP_HOST="127.0.0.1")
        client.get(endpoint.path)  # warm
        profiler = cProfile.Profile()
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            profiler.enable()
            response = client.get(endpoint.path)
            profiler.disable()
            total = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise BenchError(f"in-process GET {endpoint.path}: HTTP {response.status_code}")
        sql_ms = sum(float(q["time"]) for q in queries.captured_queries) * 1000
        self.say(
            f"  profile (in-process, under cProfile): {total:,.0f} ms in all, {len(queries.captured_queries)} SQL "
            f"statements taking {sql_ms:,.0f} ms (without cProfile overhead)"
        )
        path = log_dir / f"profile-{endpoint.key}"
        profiler.dump_stats(f"{path}.prof")
        self.say("  by cumulative time:")
        self.say(indent(profile_top(profiler, "cumulative", 25)))
        self.say("  by own time:")
        self.say(indent(profile_top(profiler, "tottime", 15)))
        slowest = max(queries.captured_queries, key=lambda q: float(q["time"]))
        self.say(f"  slowest statement ({float(slowest['time']) * 1000:,.0f} ms): EXPLAIN (ANALYZE, BUFFERS)")
        self.say(indent(explain_analyze(slowest["sql"])))
        self.say(f"  full profile: {path}.prof")


def latest_items(device_keys, ts):
    """store_latest items: every metric of each (device_id, metric keys), values varying by device and time."""
    return [
        {
            "device": device_id,
            "metric": key,
            "value": round(20 + (hash(device_id) + ts) % 1000 / 100, 2),
            "ts": ts,
            "status": "normal",
        }
        for device_id, keys in device_keys
        for key in keys
    ]


class LatestUpdates:
    """A thread that stores new latest values of `per_second` devices a second, round-robin over
    `device_keys`, in a batch every 0.1 s (as ingest does), until the context ends."""

    TICK = 0.1

    def __init__(self, device_keys, *, per_second):
        self.device_keys = device_keys
        self.per_tick = max(1, round(per_second * self.TICK)) if per_second > 0 else 0
        self.devices = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="latest-updates", daemon=True)

    def __enter__(self):
        if self.per_tick:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()

    def run(self):
        offset = 0
        while not self.stopped.wait(self.TICK):
            part = [self.device_keys[(offset + i) % len(self.device_keys)] for i in range(self.per_tick)]
            offset += self.per_tick
            store_latest(latest_items(part, int(time.time() * 1000)))
            self.devices += len(part)


def staff_token(run_id):
    """A staff user of this run and a read-only API token of theirs."""
    user = get_user_model().objects.create_user(username=f"{BENCH_USER_PREFIX}{run_id}", is_staff=True)
    return issue_api_token(user=user, name="bench_api")[1]


def device_metric_keys():
    """(device_id, [metric keys of its type]) of every device."""
    devices = Device.objects.select_related("device_type").prefetch_related("device_type__metrics")
    return [(d.device_id, [m.key for m in d.device_type.metrics.all()]) for d in devices]


def profile_top(profiler, order, count):
    """The `count` functions first by `order` (pstats' table without its preamble)."""
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(count)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    return "\n".join(lines[start:])


def explain_analyze(sql):
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.splitlines())
