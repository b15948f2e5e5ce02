"""`manage.py bench_alarm_kpis`: the alarm KPI endpoint over 90 days of alert history.

Generates --events alert events (default 1,000,000) over --days days (default 90) ending now on
--devices demo devices, in PostgreSQL (generate_series; repeatable: setseed): per alert an opening,
an acknowledgement or a shelving, and a resolution, a share of them chattering, plus suppressed
crossings. Then VACUUM ANALYZE, beat's rollup refresh of every day (timed), and p50/p95/p99 of `GET /api/v1/alerts/kpis/` through Django's
test client in this process (the whole API stack without HTTP), for the whole plant and for one
location over the full span, and for one day.
"""

import time
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from apps.accounts.services import issue_api_token
from apps.alerts.services import refresh_alarm_rollups
from apps.bench.benchmarks import BenchError, demo_device_pks, latency_stats, metric_pk
from apps.bench.support import BenchCommand, in_bench, machine_load, stats_text, time_calls
from apps.telemetry.rollups import plant_tz

TARGET_P99_MS = 200
BENCH_USER = "bench-kpis"

ALERTS = """
INSERT INTO alerts_alert (source, subject, device_id, metric_id, level, state, opened_at, resolved_at, first_value, peak_value,
                          last_value, note, unshelved_state)
SELECT 'device', '', (%(devices)s::bigint[])[1 + g %% cardinality(%(devices)s::bigint[])], %(metric)s,
       CASE WHEN g %% 7 = 0 THEN 'critical' ELSE 'warning' END, 'resolved', at, at + interval '20 minutes', 31, 33, 29, '', ''
FROM (SELECT g, %(start)s::timestamptz + random() * (%(end)s::timestamptz - %(start)s::timestamptz - interval '1 hour') AS at
      FROM generate_series(1, %(alerts)s) AS g) AS series
"""

EVENTS = """
INSERT INTO alerts_alertevent (alert_id, kind, at, level, value, note, device_id, metric_id, chattering)
SELECT a.id, e.kind, a.opened_at + e.after, a.level, 31, '', a.device_id, a.metric_id, e.kind = 'opened' AND a.id %% 97 = 0
FROM alerts_alert AS a
CROSS JOIN LATERAL (VALUES
    ('opened', interval '0'),
    (CASE WHEN a.id %% 20 = 0 THEN 'shelved' WHEN a.id %% 50 = 1 THEN 'suppressed' ELSE 'acknowledged' END, interval '5 minutes'),
    ('resolved', interval '20 minutes')
) AS e(kind, after)
WHERE a.id > %(after)s
"""


class Command(BenchCommand):
    help = "p99 of the alarm KPI endpoint over 90 days of alert events (target ≤ 200 ms)"
    default_database = "iothub_bench_kpis"

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--events", type=int, default=1_000_000, help="alert events to generate (3 per alert)")
        parser.add_argument("--days", type=int, default=90, help="days of history, ending now")
        parser.add_argument("--devices", type=int, default=1000, help="demo devices the alerts are spread over")
        parser.add_argument("--runs", type=int, default=200, help="timed requests per query")
        parser.add_argument("--budget", type=float, default=60, help="seconds at most per query")

    def run_benchmark(self, run, stack):
        options = self.options
        self.prepare_database(run, options["devices"])
        with in_bench(self.database, run.namespace), self.database.connect() as conn:
            self.empty_tables(conn)
            end = timezone.now()
            start = end - timedelta(days=options["days"])
            self.load(conn, start=start, end=end)
            self.measure(conn, end=end)

    def empty_tables(self, conn):
        conn.execute(
            "TRUNCATE alerts_alertevent, alerts_notification, alerts_alert, alerts_alarmbucket, alerts_alarmday, "
            "alerts_alarmdirtyday RESTART IDENTITY CASCADE"
        )
        conn.execute(
            "DELETE FROM accounts_apitoken WHERE user_id IN (SELECT id FROM auth_user WHERE username = %s)", [BENCH_USER]
        )
        conn.execute("DELETE FROM auth_user WHERE username = %s", [BENCH_USER])

    def load(self, conn, *, start, end):
        options = self.options
        alerts = options["events"] // 3
        devices = demo_device_pks(conn, options["devices"])
        self.say(
            f"\n== load: {alerts * 3:,} alert events ({alerts:,} alerts) over {options['days']} days on "
            f"{len(devices):,} devices ({machine_load()}) =="
        )
        started = time.monotonic()
        chunk = 100_000
        conn.execute("SELECT setseed(0.21)")  # the same history on every run
        for first in range(0, alerts, chunk):
            with conn.transaction():
                after = conn.execute("SELECT coalesce(max(id), 0) FROM alerts_alert").fetchone()[0]
                params = {
                    "devices": devices,
                    "metric": metric_pk(conn, "temperature"),
                    "start": start,
                    "end": end,
                    "alerts": min(chunk, alerts - first),
                    "after": after,
                }
                conn.execute(ALERTS, params)
                conn.execute(EVENTS, params)
            done = min(first + chunk, alerts)
            self.say(f"  {done * 3:>9,} events  {time.monotonic() - started:5.0f} s")
        conn.execute("VACUUM ANALYZE alerts_alert")
        conn.execute("VACUUM ANALYZE alerts_alertevent")
        events = conn.execute("SELECT count(*) FROM alerts_alertevent").fetchone()[0]
        if events < options["events"] - 2:
            raise BenchError(f"{events:,} events loaded, {options['events']:,} asked")
        self.say(f"  loaded and vacuumed in {time.monotonic() - started:.0f} s")
        # Loaded by SQL, not by AlertEvent.save: mark the days as the hub would, then beat's refresh.
        conn.execute(
            "INSERT INTO alerts_alarmdirtyday (day) SELECT DISTINCT (at AT TIME ZONE %s)::date FROM alerts_alertevent "
            "ON CONFLICT DO NOTHING",
            [settings.TIME_ZONE],
        )
        started = time.monotonic()
        days = refresh_alarm_rollups()
        seconds = time.monotonic() - started
        buckets, alarm_days = (
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("alerts_alarmbucket", "alerts_alarmday")
        )
        self.say(
            f"  rollups of {len(days)} days in {seconds:.1f} s ({seconds / len(days) * 1000:.0f} ms a day): "
            f"{buckets:,} 10-minute buckets, {alarm_days:,} alarm days"
        )
        self.summary.add(
            "alarm KPIs",
            "rollup refresh of one day",
            seconds / len(days) * 1000,
            "ms",
            note=f"{events / len(days):,.0f} events a day",
        )

    def measure(self, conn, *, end):
        options = self.options
        user = get_user_model().objects.create_user(BENCH_USER, is_staff=True)
        client = Client(HTTP_AUTHORIZATION=f"Token {issue_api_token(user=user, name='bench_alarm_kpis')[1]}")
        loc_id = conn.execute(
            "SELECT l.loc_id FROM devices_location l JOIN devices_device d ON d.location_id = l.id "
            "JOIN alerts_alertevent e ON e.device_id = d.id GROUP BY l.loc_id ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]
        local_end = end.astimezone(plant_tz()).date()
        first_day = local_end - timedelta(days=options["days"] - 1)
        span = {"start": f"{first_day:%Y%m%d}", "end": f"{local_end:%Y%m%d}"}
        queries = [
            ("plant, full span", span, True),
            (f"location {loc_id}, full span", {**span, "loc_id": loc_id}, True),
            ("plant, one day", {"start": span["end"], "end": span["end"]}, False),
        ]
        self.say(f"\n== GET /api/v1/alerts/kpis/ in process, {options['runs']} runs each ({machine_load()}) ==")
        for name, params, targeted in queries:
            path = f"/api/v1/alerts/kpis/?{urlencode(params)}"

            def call(path=path):
                response = client.get(path)
                if response.status_code != 200:
                    raise BenchError(f"{path} answered {response.status_code}: {response.content[:300]!r}")
                return response.json()

            samples, answer = time_calls(call, runs=options["runs"], budget=options["budget"], warmup=3)
            self.say(
                f"  {name}: {stats_text(samples)}; {answer['alarms']:,} alarms, peak {answer['peak_alarms_per_10min']}/10 min, "
                f"{answer['shelved']:,} shelved, {answer['suppressed']:,} suppressed"
            )
            stats = latency_stats(samples)
            section = "alarm KPIs"
            self.summary.add(section, f"{name} p50", stats["p50"], "ms")
            self.summary.add(
                section,
                f"{name} p99",
                stats["p99"],
                "ms",
                target=("<=", TARGET_P99_MS) if targeted else None,
                note=f"n={stats['n']}",
            )
