"""`manage.py bench_storage`: time-series storage at scale.

Generates --sensors × --days × one temperature reading every --interval s and writes them with
psycopg binary COPY straight into the partitioned telemetry_reading (the daily partitions of the
range are created first; COPY into the parent routes every row to its partition). Then reports:
load rate, table and index size per million rows, the duration of the rollups over the whole
range (apps.telemetry.rollups.recompute_range), and warm query times (median and p99), raw
readings vs rollups, for the queries the dashboard and the API make.

Own database (default iothub_bench_storage), emptied at the end unless --keep-data. The data
ends at the last plant-local midnight, so hourly and daily buckets line up with the range.
"""

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime

from django.db import connection
from django.utils import timezone

from apps.bench.benchmarks import copy_into, demo_device_pks, latency_stats, metric_pk, process_cpu_seconds
from apps.bench.support import BenchCommand, in_bench, machine_load, stats_text, time_calls
from apps.devices.models import Device, Metric
from apps.devices.selectors import locations_at
from apps.telemetry.aggregation import aggregate_readings
from apps.telemetry.partitions import ensure_partitions
from apps.telemetry.rollups import plant_tz, recompute_range
from apps.telemetry.selectors import readings_between

MILLION = 1_000_000
QUERY_TARGET_MS = 100
NOISE = [math.sin(i * 12.9898) * 0.3 for i in range(1024)]  # deterministic jitter, cheap per row

PARTITION_SIZES = """
SELECT count(*), sum(pg_relation_size(c.oid))::bigint, sum(pg_indexes_size(c.oid))::bigint,
       sum(pg_total_relation_size(c.oid))::bigint
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'telemetry_reading'::regclass
"""
INDEX_SIZES = """
SELECT x.indisprimary, sum(pg_relation_size(x.indexrelid))::bigint
FROM pg_inherits i JOIN pg_index x ON x.indrelid = i.inhrelid
WHERE i.inhparent = 'telemetry_reading'::regclass GROUP BY 1
"""
RAW_DEVICE_HOURLY = """
SELECT date_bin('1 hour', time, %(origin)s) AS bucket, min(value), max(value), avg(value), count(*)
FROM telemetry_reading
WHERE device_id = %(device)s AND metric_id = %(metric)s AND time >= %(start)s AND time < %(end)s
GROUP BY bucket ORDER BY bucket
"""
RAW_FACTORY_DAILY = """
SELECT d.location_id, date_bin('1 day', r.time, %(origin)s) AS bucket, min(r.value), max(r.value), avg(r.value), count(*)
FROM telemetry_reading r
JOIN devices_device d ON d.id = r.device_id
JOIN devices_location l ON l.id = d.location_id
WHERE l.factory = %(factory)s AND r.metric_id = %(metric)s AND r.time >= %(start)s AND r.time < %(end)s
GROUP BY d.location_id, bucket ORDER BY d.location_id, bucket
"""


@dataclass
class Span:
    """The generated range [start, end)."""

    start: datetime
    end: datetime

    @property
    def days(self):
        return (self.end - self.start) / timedelta(days=1)

    def day_chunks(self, days=1):
        """[start, end) in steps of `days` days (the last one may be shorter)."""
        at = self.start
        while at < self.end:
            yield at, min(at + timedelta(days=days), self.end)
            at += timedelta(days=days)


def data_span(days):
    """`days` days ending at the last plant-local midnight."""
    end = datetime.combine(timezone.now().astimezone(plant_tz()).date(), dtime.min, tzinfo=plant_tz())
    return Span(end - timedelta(days=days), end)


def reading_rows(*, sensor_pks, metric, start, end, interval):
    """Time-major readings (every sensor at t, then t + interval …), as the ingest path would store
    them: (device_pk, metric_pk, time, value); a daily wave per sensor plus a little jitter."""
    bases = [20.0 + (pk % 17) * 0.4 for pk in sensor_pks]
    steps = int((end - start).total_seconds() // interval)
    for step in range(steps):
        at = start + timedelta(seconds=step * interval)
        wave = 2.0 * math.sin(at.timestamp() / 86400 * 2 * math.pi)
        for i, pk in enumerate(sensor_pks):
            yield pk, metric, at, round(bases[i] + wave + NOISE[(step + i) & 1023], 2)


class CpuMeter:
    """CPU seconds of this process (row generation, psycopg) and of its PostgreSQL backend since creation."""

    def __init__(self, conn):
        self.backend_pid = conn.info.backend_pid
        self.client = time.process_time()
        self.server = process_cpu_seconds(self.backend_pid)

    def report(self, wall):
        client = time.process_time() - self.client
        server = process_cpu_seconds(self.backend_pid) - self.server
        return (
            f"CPU: this process {client:.1f} s ({client / wall:.0%} of wall), "
            f"PostgreSQL backend {server:.1f} s ({server / wall:.0%} of wall)"
        )


def mb(value):
    return value / 1024 / 1024


class Command(BenchCommand):
    help = "Benchmark time-series storage: COPY load, size per million rows, rollups, raw vs rollup query times."
    default_database = "iothub_bench_storage"

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--sensors", type=int, default=1000, help="devices sim-00001… that report")
        parser.add_argument("--days", type=int, default=30, help="days of data (ends at the last local midnight)")
        parser.add_argument("--interval", type=int, default=60, help="seconds between two readings of a sensor")
        parser.add_argument(
            "--load-limit", type=float, default=1800, help="seconds the COPY may take; loading stops after the day that passes it"
        )
        parser.add_argument(
            "--rollup-chunk-days",
            type=int,
            default=1,
            help="recompute_range per this many days (progress, bounded memory); 0 = one call for the range",
        )
        parser.add_argument("--runs", type=int, default=20, help="timed runs per query (after one warm-up)")
        parser.add_argument(
            "--query-budget", type=float, default=60, help="seconds per query; slow queries stop early (at least 3 runs)"
        )
        parser.add_argument("--factory", default="Plant North", help="factory of the whole-factory aggregates")

    def run_benchmark(self, run, stack):
        options = self.options
        self.prepare_database(run, options["sensors"])
        with in_bench(self.database, run.namespace), self.database.connect() as conn:
            self.empty_tables(conn)
            span = data_span(options["days"])
            self.create_partitions(span)
            span, rows = self.load(conn, span)
            self.vacuum(conn)
            self.report_size(conn, rows)
            self.compute_rollups(conn, span, rows)
            self.query_times(span)

    def empty_tables(self, conn):
        conn.execute(
            "TRUNCATE telemetry_reading, telemetry_hourlyrollup, telemetry_dailyrollup, telemetry_locationhourlyrollup, "
            "telemetry_locationdailyrollup, telemetry_dirtyhour"
        )

    # ----------------------------------------------------------------------------------------
    # load

    def create_partitions(self, span):
        started = time.monotonic()
        created = ensure_partitions(days_back=math.ceil(span.days) + 1, days_ahead=1, today=span.end.date())
        self.say(
            f"  partitions: {len(created)} daily partitions created in {time.monotonic() - started:.1f} s "
            f"for {span.start:%Y-%m-%d %H:%M} … {span.end:%Y-%m-%d %H:%M %Z}"
        )

    def load(self, conn, span):
        """COPY the readings one day per transaction; returns (the span loaded, rows)."""
        sensors, interval = self.options["sensors"], self.options["interval"]
        total = sensors * int(span.days * 86400 // interval)
        sensor_pks = demo_device_pks(conn, sensors)
        metric = metric_pk(conn, "temperature")
        self.say(
            f"\n== load: {sensors:,} sensors × {span.days:.0f} days × 1 reading / {interval} s = {total:,} rows "
            f"by binary COPY into telemetry_reading ({machine_load()}) =="
        )
        rows, started = 0, time.monotonic()
        cpu = CpuMeter(conn)
        loaded_until = span.start
        for number, (day_start, day_end) in enumerate(span.day_chunks(), 1):
            day_started = time.monotonic()
            with conn.transaction(), conn.cursor() as cursor:
                copy_into(
                    cursor,
                    "telemetry_reading",
                    reading_rows(sensor_pks=sensor_pks, metric=metric, start=day_start, end=day_end, interval=interval),
                )
                day_rows = cursor.rowcount
            rows, loaded_until = rows + day_rows, day_end
            elapsed = time.monotonic() - started
            self.say(
                f"  day {number}/{span.days:.0f} ({day_start:%Y-%m-%d}): {rows:,}/{total:,} rows, "
                f"{rows / elapsed:,.0f} rows/s overall, {day_rows / (time.monotonic() - day_started):,.0f} rows/s this day "
                f"({machine_load()})"
            )
            if elapsed > self.options["load_limit"] and day_end < span.end:
                self.say(f"  load limit of {self.options['load_limit']:.0f} s reached: stopping at {day_end:%Y-%m-%d}")
                break
        seconds = time.monotonic() - started
        self.say(f"  loaded {rows:,} rows in {seconds:.0f} s = {rows / seconds:,.0f} rows/s; {cpu.report(seconds)}")
        self.summary.add("storage/load", "rows loaded", rows, "rows")
        self.summary.add("storage/load", "COPY into telemetry_reading", rows / seconds, "rows/s", note="one day per transaction")
        self.summary.add("storage/load", "COPY duration", seconds, "s")
        return Span(span.start, loaded_until), rows

    def vacuum(self, conn):
        """What autovacuum would do to a day's partition after it filled: visibility map and statistics."""
        started = time.monotonic()
        conn.execute("VACUUM (ANALYZE) telemetry_reading")
        seconds = time.monotonic() - started
        self.say(f"  VACUUM (ANALYZE) telemetry_reading: {seconds:.0f} s")
        self.summary.add("storage/load", "VACUUM (ANALYZE) after load", seconds, "s")

    def report_size(self, conn, rows):
        partitions, heap, indexes, total = conn.execute(PARTITION_SIZES).fetchone()
        by_kind = dict(conn.execute(INDEX_SIZES).fetchall())
        millions = rows / MILLION
        self.say(f"\n== size: {rows:,} rows in {partitions} partitions ==")
        for name, size in (
            ("heap", heap),
            ("primary key (device, metric, time)", by_kind.get(True, 0)),
            ("other indexes", by_kind.get(False, 0)),
            ("indexes", indexes),
            ("total", total),
        ):
            self.say(f"  {name}: {mb(size):,.0f} MB = {mb(size) / millions:,.1f} MB per million rows = {size / rows:.0f} B/row")
        self.summary.add("storage/size", "table (heap) per million rows", mb(heap) / millions, "MB")
        self.summary.add("storage/size", "indexes per million rows", mb(indexes) / millions, "MB")
        self.summary.add(
            "storage/size", "total per million rows", mb(total) / millions, "MB", note=f"{mb(total) / 1024:.2f} GB in all"
        )

    # ----------------------------------------------------------------------------------------
    # rollups

    def compute_rollups(self, conn, span, rows):
        chunk_days = self.options["rollup_chunk_days"]
        chunks = list(span.day_chunks(chunk_days)) if chunk_days else [(span.start, span.end)]
        self.say(f"\n== rollups: recompute_range over {span.days:.0f} days in {len(chunks)} call(s) ({machine_load()}) ==")
        started = time.monotonic()
        for number, (start, end) in enumerate(chunks, 1):
            recompute_range(start, end)
            elapsed = time.monotonic() - started
            self.say(
                f"  {number}/{len(chunks)} ({start:%Y-%m-%d}): {elapsed:.0f} s, {rows * number / len(chunks) / elapsed:,.0f} readings/s"
            )
        seconds = time.monotonic() - started
        conn.execute("ANALYZE telemetry_hourlyrollup, telemetry_dailyrollup")
        hourly = conn.execute("SELECT count(*) FROM telemetry_hourlyrollup").fetchone()[0]
        daily = conn.execute("SELECT count(*) FROM telemetry_dailyrollup").fetchone()[0]
        self.say(
            f"  rollups of {rows:,} readings in {seconds:.0f} s = {rows / seconds:,.0f} readings/s → "
            f"{hourly:,} hourly and {daily:,} daily rows"
        )
        self.summary.add(
            "storage/rollups",
            "recompute_range, whole range",
            seconds,
            "s",
            note=f"{len(chunks)} call(s); {hourly:,} hourly + {daily:,} daily rows",
        )
        self.summary.add("storage/rollups", "rollup rate", rows / seconds, "readings/s")

    # ----------------------------------------------------------------------------------------
    # queries

    def query_times(self, span):
        metric = Metric.objects.get(key="temperature")
        device = Device.objects.get(device_id="sim-00001")
        factory = self.options["factory"]
        params = {"origin": span.start, "start": span.start, "end": span.end, "metric": metric.pk}
        self.say(f"\n== queries: warm, up to {self.options['runs']} runs each ({machine_load()}) ==")
        cases = [
            (
                "device, last hour, raw readings",
                True,
                lambda: readings_between(device=device, metric=metric, start=span.end - timedelta(hours=1), end=span.end),
            ),
            (
                f"device, {span.days:.0f} days hourly, raw",
                False,
                lambda: fetch_all(RAW_DEVICE_HOURLY, {**params, "device": device.pk}),
            ),
            (
                f"device, {span.days:.0f} days hourly, rollup",
                True,
                lambda: aggregate(metric, span, "hour", locations_at(), device.device_id),
            ),
            (
                f"factory, {span.days:.0f} days daily, raw",
                False,
                lambda: fetch_all(RAW_FACTORY_DAILY, {**params, "factory": factory}),
            ),
            (
                f"factory, {span.days:.0f} days daily, rollup",
                True,
                lambda: aggregate(metric, span, "day", locations_at(factory=factory)),
            ),
        ]
        results = {}
        for name, served, call in cases:
            results[name] = self.time_query(name, served, call)
        self.check_agreement(results, cases)

    def time_query(self, name, served, call):
        samples, result = time_calls(call, runs=self.options["runs"], budget=self.options["query_budget"])
        stats = latency_stats(samples)
        self.say(f"  {name}: {stats_text(samples)}; {result_size(result):,} rows/buckets")
        target = ("<=", QUERY_TARGET_MS) if served else None
        note = "" if served else "for comparison; not what the API serves"
        self.summary.add("storage/queries", f"{name}: median", stats["p50"], "ms", note=note)
        self.summary.add("storage/queries", f"{name}: p99", stats["p99"], "ms", target=target, note=f"n={stats['n']}")
        return result

    def check_agreement(self, results, cases):
        """Raw and rollup aggregates count the same readings (rollups are complete and correct)."""
        names = [name for name, _, _ in cases]
        for raw_name, rollup_name in ((names[1], names[2]), (names[3], names[4])):
            raw = sum(row[-1] for row in results[raw_name])
            rolled = sum(bucket["count"] for location in results[rollup_name] for bucket in location["buckets"])
            verdict = "agree" if raw == rolled else "DISAGREE"
            self.say(f"  readings counted: raw {raw:,}, rollup {rolled:,}: {verdict}")


def fetch_all(sql, params):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def aggregate(metric, span, interval, locations, device_id=None):
    return aggregate_readings(
        metric=metric, start=span.start, end=span.end, interval=interval, tz=plant_tz(), locations=locations, device_id=device_id
    )


def result_size(result):
    """Rows of a raw result; buckets of an aggregate_readings result."""
    if result and isinstance(result[0], dict):
        return sum(len(location["buckets"]) for location in result)
    return len(result)
