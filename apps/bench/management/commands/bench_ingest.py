"""`manage.py bench_ingest`: throughput, latency, scale-out, Kafka and memory of the ingest path.

Every benchmark runs real `manage.py ingest` processes against real services, isolated from the
hub and from concurrent test runs (own database, namespace, broker, topics: see
apps/bench/benchmarks.py). Everything is bounded: fixed message counts, fixed durations, a
timeout on every wait; every process started is stopped. docs/benchmarks.md has results.
"""

import argparse
import itertools
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from contextlib import ExitStack
from functools import partial
from statistics import median

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.bench.benchmarks import (
    ROOT,
    BenchDatabase,
    BenchError,
    BenchRun,
    LiveLatencyProbe,
    Profiler,
    StoredLatencyProbe,
    StoredRows,
    Summary,
    backlog_start_ms,
    consume_bare,
    copy_rows,
    count_rows,
    create_kafka_topics,
    delete_kafka_topics,
    demo_device_pks,
    direct_copy_seconds,
    drain_bare,
    end_session,
    latency_stats,
    machine_description,
    machine_load,
    metric_pk,
    prepare_session,
    private_mosquitto,
    produce_backlog,
    publish_at_rate,
    publish_backlog,
    ratio,
    raw_copy_seconds,
    run_child,
    set_perceived_temperature,
    shared_topic,
    store_sql_seconds,
    truncate_readings,
    wait_for_rows,
    without_housekeeping,
)

SECTIONS = ("throughput", "calculated", "latency", "scale", "kafka", "memory")
CORES_NOTE = "2 cores shared by load generator, broker, ingest and PostgreSQL"
LATENCY_SAMPLE_DEVICES = 16  # whose readings the stored-latency probe follows (every k-th of the publisher's)


def sections_arg(value):
    chosen = [s.strip() for s in value.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    return chosen


def ints_arg(value):
    return [int(v) for v in value.split(",")]


def rate(count, seconds):
    return ratio(count, seconds) or 0.0


def times(value):
    return f"{value:.2f}×" if value is not None else "n/a"


class Command(BaseCommand):
    help = "Benchmark the ingest pipeline on real services: throughput, latency, scale, kafka, memory."

    def add_arguments(self, parser):
        parser.add_argument(
            "--only",
            type=sections_arg,
            default=list(SECTIONS),
            help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
        )
        parser.add_argument("--messages", type=int, default=100_000, help="backlog of throughput, scale and kafka")
        parser.add_argument(
            "--readings-per-message", type=int, default=20, help="gateway array size of the second throughput run"
        )
        parser.add_argument(
            "--calculated-rounds",
            type=int,
            default=5,
            help="calculated: pairs of drains without and with the calculated metric (the figure is their median ratio)",
        )
        parser.add_argument(
            "--devices", type=int, default=500, help="demo devices in the bench database; backlogs round-robin over them"
        )
        parser.add_argument("--rates", type=ints_arg, default=[1000, 5000, 10000], help="latency: messages/s, comma-separated")
        parser.add_argument("--duration", type=float, default=15.0, help="latency: seconds per rate")
        parser.add_argument("--latency-devices", type=int, default=300, help="latency: devices the publisher round-robins over")
        parser.add_argument("--kafka-partitions", type=int, default=4)
        parser.add_argument("--memory-devices", type=int, default=100_000, help="memory: devices in the device master")
        parser.add_argument("--memory-messages", type=int, default=20_000, help="memory: messages processed before measuring")
        parser.add_argument("--database", default="iothub_bench", help="bench database (memory uses <name>_memory)")
        parser.add_argument(
            "--broker",
            choices=["private", "services"],
            default="private",
            help="private (default): a Mosquitto of the run's own; services: MQTT_URL, which every "
            "other sensors/# subscriber on that broker would also receive",
        )
        parser.add_argument("--timeout", type=float, default=300, help="seconds any single wait may take")
        parser.add_argument("--profile", metavar="DIR", help="profile every ingest process into DIR (slows them down)")
        parser.add_argument("--profiler", choices=["cprofile", "py-spy"], default="cprofile")
        parser.add_argument("--py-spy", default="py-spy", help="py-spy executable for --profiler py-spy")
        parser.add_argument("--drop-databases", action="store_true", help="drop the bench databases at the end")

    # ----------------------------------------------------------------------------------------
    # orchestration

    def say(self, text=""):
        self.stdout.write(text)
        self.stdout.flush()

    def handle(self, *args, **options):
        if threading.current_thread() is threading.main_thread():
            # SIGTERM unwinds like Ctrl-C, so every process started is stopped and the clean-up runs.
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        self.options = options
        self.summary = Summary()
        self.names = itertools.count(1)
        server_url = self.check_environment()
        run_id = uuid.uuid4().hex[:8]
        log_dir = ROOT / "var" / "bench" / run_id
        log_dir.mkdir(parents=True, exist_ok=True)
        self.say(f"bench_ingest run {run_id}: {', '.join(options['only'])}; logs in {log_dir}")
        for line in machine_description(server_url, settings.REDIS_URL):
            self.say(f"  {line}")
        self.databases = {
            "main": BenchDatabase(server_url, options["database"]),
            "memory": BenchDatabase(server_url, f"{options['database']}_memory"),
        }
        self.prepared = set()
        failures = []
        with ExitStack() as stack:
            run = BenchRun(
                database=self.databases["main"],
                mqtt_url=self.broker(stack, log_dir),
                kafka_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                redis_url=settings.REDIS_URL,
                log_dir=log_dir,
                timeout=options["timeout"],
                write=self.say,
                run_id=run_id,
                profiler=Profiler(options["profiler"], options["profile"], options["py_spy"]) if options["profile"] else None,
            )
            stack.callback(self.clean_up, run)
            for section in options["only"]:
                failures += self.run_section(section, run)
        self.say(f"\n== summary ({CORES_NOTE}) ==\n{self.summary.table()}")
        if failures:
            raise CommandError(f"failed: {', '.join(failures)}")

    def check_environment(self):
        url = os.environ.get("DATABASE_URL", "")
        if not url.startswith("postgres"):
            raise CommandError('bench_ingest needs DATABASE_URL of a PostgreSQL server: eval "$(scripts/services.sh env)"')
        if not settings.REDIS_URL:
            raise CommandError("bench_ingest needs REDIS_URL (channel layer, latest values)")
        if "kafka" in self.options["only"] and not settings.KAFKA_BOOTSTRAP_SERVERS:
            raise CommandError("--only kafka needs KAFKA_BOOTSTRAP_SERVERS")
        return url

    def broker(self, stack, log_dir):
        if self.options["broker"] == "services":
            self.say(f"  broker: {settings.MQTT_URL} (shared: other sensors/# subscribers receive the bench traffic)")
            return settings.MQTT_URL
        url = stack.enter_context(private_mosquitto(log_dir / "mosquitto"))
        self.say(f"  broker: private Mosquitto at {url}, settings of scripts/services.sh")
        return url

    def run_section(self, section, run):
        """One benchmark; a failure is reported and the next one still runs. Returns [section] if it failed."""
        self.say(f"\n== {section} ({machine_load()}) ==")
        started = time.monotonic()
        try:
            getattr(self, f"bench_{section}")(run)
            return []
        except BenchError as e:
            self.stderr.write(f"{section} failed: {e}")
            return [section]
        except Exception:  # a bug or an unexpected service error: report it, go on with the next benchmark
            self.stderr.write(f"{section} failed:\n{traceback.format_exc()}")
            return [section]
        finally:
            run.clear_redis()
            self.say(f"  ({section}: {time.monotonic() - started:.0f} s; now {machine_load()})")

    def clean_up(self, run):
        run.clear_redis()
        for key in self.prepared:
            database = self.databases[key]
            if self.options["drop_databases"]:
                database.drop()
            else:
                with database.connect() as conn:
                    truncate_readings(conn)

    def database(self, run, key, devices):
        """The bench database `key` (main or memory), created, migrated and seeded on first use."""
        database = self.databases[key]
        if key not in self.prepared:
            self.say(f"  preparing database {database.name} ({devices:,} demo devices)…")
            started = time.monotonic()
            database.prepare(devices=devices, env=run.env(database), log_path=run.log_dir / f"{database.name}-setup.log")
            self.prepared.add(key)
            self.say(f"  database {database.name} ready in {time.monotonic() - started:.0f} s")
        return database

    def main_database(self, run):
        return self.database(run, "main", max(self.options["devices"], self.options["latency_devices"]))

    # ----------------------------------------------------------------------------------------
    # shared steps

    def publish(self, run, *, count, per_message, start_ms, devices):
        """Publish a backlog from a child process; prints and returns its rate."""
        result = run_child(
            publish_backlog,
            url=run.mqtt_url,
            client_id=run.name(f"pub{next(self.names)}"),
            count=count,
            devices=devices,
            per_message=per_message,
            start_ms=start_ms,
            timeout=run.timeout,
        )
        published_rate = rate(count, result["seconds"])
        self.say(
            f"  published {count:,} QoS 1 messages ({count * per_message:,} readings) in {result['seconds']:.1f} s: "
            f"{published_rate:,.0f} msg/s"
        )
        return published_rate

    def drain_ingest(self, run, conn, processes, backlog, label):
        """Wait until `processes` (ready) have stored the rows of `backlog` (StoredRows); prints rate, CPU and memory.

        Returns (Drain, CPU seconds of all processes since ready)."""
        drain = wait_for_rows(backlog, timeout=run.timeout, write=self.say, label=label)
        expected = backlog.rows
        cpu = sum(p.cpu_since_ready() for p in processes)
        rss = ", ".join(f"{p.memory()['rss']:.0f}" for p in processes)
        dead = count_rows(conn, "telemetry_deadletter")
        self.say(
            f"  {label}: {drain.rows:,} rows in {drain.seconds:.1f} s = {drain.rate:,.0f} rows/s; "
            f"CPU {cpu:.1f} s = {cpu / expected * 1e6:.0f} µs/row (RSS {rss} MB, {dead} dead letters)"
        )
        if dead:
            raise BenchError(f"{label}: {dead} messages were rejected; see telemetry_deadletter in the bench database")
        return drain, cpu

    # ----------------------------------------------------------------------------------------
    # 1. throughput

    def bench_throughput(self, run):
        """MQTT backlog drained by a bare subscriber and by one ingest; single readings, then gateway arrays."""
        for per_message in (1, self.options["readings_per_message"]):
            self.throughput_case(run, per_message)

    def throughput_case(self, run, per_message):
        count, devices = self.options["messages"], self.options["devices"]
        label = "single" if per_message == 1 else f"array{per_message}"
        section = f"throughput/{label}"
        database = self.main_database(run)
        start_ms = backlog_start_ms(count, per_message)
        group = run.name(label)
        prepare_session(run.mqtt_url, run.name(f"{label}-ingest"), shared_topic(group))
        prepare_session(run.mqtt_url, run.name(f"{label}-bare"), shared_topic(run.name(f"{label}-bare")))
        self.say(f"-- {section}: {count:,} messages × {per_message} reading(s), {devices} devices, consumers offline")
        self.publish(run, count=count, per_message=per_message, start_ms=start_ms, devices=devices)

        bare = run_child(drain_bare, url=run.mqtt_url, client_id=run.name(f"{label}-bare"), expected=count, timeout=run.timeout)
        bare_rate = bare["rate"]
        self.say(
            f"  bare paho subscriber: {bare['count']:,} messages in {bare['seconds']:.1f} s = {bare_rate:,.0f} msg/s; "
            f"CPU {bare['cpu'] / count * 1e6:.0f} µs/message"
        )

        with database.connect() as conn:
            truncate_readings(conn)
            with run.mqtt_ingest(f"{label}-ingest", group=group) as ingest:
                ingest.wait_ready()
                backlog = StoredRows(conn, messages=count, devices=devices, per_message=per_message)
                drain, cpu = self.drain_ingest(run, conn, [ingest], backlog, f"ingest ×1 ({label})")
            for session in (f"{label}-ingest", f"{label}-bare"):
                end_session(run.mqtt_url, run.name(session))
            ingest_rate = drain.rate / per_message
            self.say(f"  ingest: {ingest_rate:,.0f} msg/s = {times(ratio(ingest_rate, bare_rate))} bare ({CORES_NOTE})")
            self.summary.add(section, "bare subscriber", bare_rate, "msg/s")
            self.summary.add(section, "ingest → PostgreSQL", ingest_rate, "msg/s")
            self.summary.add(section, "ingest / bare", ratio(ingest_rate, bare_rate), "×", target=(">=", 0.7))
            self.summary.add(section, "bare CPU per message", bare["cpu"] / count * 1e6, "µs")
            self.summary.add(section, "ingest CPU per message", cpu / count * 1e6, "µs", note="Python process only")
            if per_message > 1:
                self.summary.add(section, "ingest readings", drain.rate, "readings/s", target=(">=", 150_000))
            self.copy_baseline(run, conn, section, count, per_message, start_ms, drain.rate)

    def copy_baseline(self, run, conn, section, count, per_message, start_ms, ingest_rows_rate):
        """The same rows written by psycopg alone: raw binary COPY, and the pipeline's store SQL without its Python."""
        rows = copy_rows(
            count=count,
            devices=self.options["devices"],
            per_message=per_message,
            start_ms=start_ms,
            device_pks=demo_device_pks(conn, self.options["devices"]),
            metric=metric_pk(conn, "temperature"),
        )
        raw_rate = rate(len(rows), raw_copy_seconds(conn, rows))
        direct_rate = rate(len(rows), direct_copy_seconds(conn, rows))
        batch_rows = settings.IOTHUB["BATCH_SIZE"] * per_message
        store_rate = rate(len(rows), store_sql_seconds(conn, rows, batch_rows))
        self.say(
            f"  psycopg binary COPY into a scratch table: {raw_rate:,.0f} rows/s; ingest = {times(ratio(ingest_rows_rate, raw_rate))} COPY"
        )
        self.say(f"  COPY straight into telemetry_reading (indexes, no ON CONFLICT): {direct_rate:,.0f} rows/s")
        self.say(
            f"  store SQL alone (binary COPY into telemetry_reading, {batch_rows:,} rows/transaction): {store_rate:,.0f} rows/s"
        )
        self.summary.add(section, "raw COPY", raw_rate, "rows/s")
        self.summary.add(section, "COPY into telemetry_reading", direct_rate, "rows/s")
        self.summary.add(section, "store SQL alone", store_rate, "rows/s")
        self.summary.add(section, "ingest / raw COPY", ratio(ingest_rows_rate, raw_rate), "×")

    # ----------------------------------------------------------------------------------------
    # 1b. a calculated metric

    def bench_calculated(self, run):
        """Single-reading temperature backlogs drained with and without the demo's calculated perceived
        temperature (inputs temperature and humidity) on the devices' type, in pairs, in one run.

        Every device first gets a humidity reading, so with the metric each temperature computes a
        perceived temperature from it and stores two rows. Each pair drains the same backlog once
        without and once with the metric, back to back: one publication reaches two persistent
        sessions, and each drain takes one of them (drains half a minute of publishing apart
        scattered with the machine's speed). The order alternates from pair to pair, so that load
        which grows or fades during the run favours neither; the figure is the median of the pairs' ratios.
        PostgreSQL's autovacuum and checkpoints do not land on one drain of a pair (without_housekeeping)."""
        count, devices, rounds = self.options["messages"], self.options["devices"], self.options["calculated_rounds"]
        database = self.main_database(run)
        pairs = []
        with database.connect() as conn, without_housekeeping(conn) as checkpoint:
            for pair in range(rounds):
                order = (False, True) if pair % 2 == 0 else (True, False)
                labels = {calculated: f"calc{next(self.names)}" for calculated in order}
                self.publish_calculated_backlog(run, labels.values(), count=count, devices=devices)
                drains = {}
                for calculated in order:
                    set_perceived_temperature(conn, attached=calculated)
                    truncate_readings(conn)
                    checkpoint()
                    run.clear_redis()  # the previous drain's latest values are newer than this backlog's first readings
                    drains[calculated] = self.calculated_case(run, conn, calculated, labels[calculated], count, devices)
                pairs.append(drains)
                self.say(f"  pair {pair + 1}: with / without = {times(ratio(drains[True][0], drains[False][0]))}")
        rate = {calculated: median(drains[calculated][0] for drains in pairs) for calculated in (False, True)}
        cpu = {calculated: median(drains[calculated][1] for drains in pairs) for calculated in (False, True)}
        ratios = sorted(ratio(drains[True][0], drains[False][0]) for drains in pairs)
        kept = median(ratios)
        cpu_ratio = median(ratio(drains[True][1], drains[False][1]) for drains in pairs)
        self.say(
            f"  median of {rounds} pairs: {rate[False]:,.0f} msg/s without, {rate[True]:,.0f} msg/s with the calculated "
            f"metric; with / without {times(kept)} (pairs {', '.join(times(r) for r in ratios)}); "
            f"CPU {cpu[False]:.1f} → {cpu[True]:.1f} µs/message, with / without {times(cpu_ratio)} pair by pair"
        )
        section = "calculated"
        self.summary.add(section, "ingest, measured metrics only (reference, median)", rate[False], "msg/s")
        self.summary.add(section, "ingest, + 1 calculated metric (2 inputs, median)", rate[True], "msg/s")
        self.summary.add(section, f"with / without (median of {rounds} pairs)", kept, "×", target=(">=", 0.9))
        self.summary.add(section, "with / without, lowest pair", ratios[0], "×")
        self.summary.add(section, "with / without, highest pair", ratios[-1], "×")
        self.summary.add(section, "ingest CPU per message without (median)", cpu[False], "µs")
        self.summary.add(section, "ingest CPU per message with (median)", cpu[True], "µs")
        self.summary.add(section, "ingest CPU per message, with / without (median of the pairs)", cpu_ratio, "×")

    def publish_calculated_backlog(self, run, labels, *, count, devices):
        """A humidity reading per device, then `count` temperature readings, into a persistent
        session per label (the consumers offline)."""
        start_ms = backlog_start_ms(count, 1)
        for label in labels:
            prepare_session(run.mqtt_url, run.name(f"{label}-ingest"), shared_topic(run.name(label)))
        self.say(f"-- {devices} humidity readings, then {count:,} temperature readings, for two sessions")
        run_child(
            publish_backlog,
            url=run.mqtt_url,
            client_id=run.name(f"pub{next(self.names)}"),
            count=devices,
            devices=devices,
            per_message=1,
            start_ms=start_ms - devices,
            timeout=run.timeout,
            metric="humidity",
        )
        self.publish(run, count=count, per_message=1, start_ms=start_ms, devices=devices)

    def calculated_case(self, run, conn, calculated, label, count, devices):
        """One drain of the session of `label`; returns (msg/s, ingest CPU µs per message)."""
        self.say(f"-- {'with' if calculated else 'without'} the calculated metric")
        with run.mqtt_ingest(f"{label}-ingest", group=run.name(label)) as ingest:
            ingest.wait_ready()
            backlog = StoredRows(conn, messages=count, devices=devices)
            drain, cpu = self.drain_ingest(run, conn, [ingest], backlog, f"ingest ×1 ({'with' if calculated else 'without'})")
        end_session(run.mqtt_url, run.name(f"{label}-ingest"))
        calculated_rows = count_rows(conn, "telemetry_reading") - count - devices
        self.say(f"  calculated values stored: {calculated_rows:,}")
        if calculated and calculated_rows < count:
            raise BenchError(f"{calculated_rows:,} calculated values for {count:,} temperatures: the calculation did not run")
        return drain.rate, cpu / count * 1e6

    # ----------------------------------------------------------------------------------------
    # 2. latency

    def bench_latency(self, run):
        """Fixed publish rates; publish → stored (row visible) and publish → channel layer group `live`."""
        rates, devices = self.options["rates"], self.options["latency_devices"]
        database = self.main_database(run)
        with (
            database.connect() as conn,
            run.mqtt_ingest("latency-ingest", group=run.name("latency")) as ingest,
            LiveLatencyProbe(run.namespace) as live,
        ):
            ingest.wait_ready()
            self.say(f"  warm-up: 2 s at {min(rates):,} msg/s")
            self.latency_at(run, conn, live, rate=min(rates), duration=2, devices=devices)
            for target_rate in rates:
                self.report_latency(
                    target_rate, *self.latency_at(run, conn, live, target_rate, self.options["duration"], devices)
                )
            self.say(f"  ingest RSS {ingest.memory()['rss']:.0f} MB")

    def latency_at(self, run, conn, live, rate, duration, devices):
        """One fixed-rate run; returns (achieved rate, stored stats, live stats)."""
        truncate_readings(conn)
        live.take()
        sampled = demo_device_pks(conn, devices)[:: max(1, devices // LATENCY_SAMPLE_DEVICES)]
        probe = StoredLatencyProbe(run.database.url, device_pks=sampled, metric=metric_pk(conn, "temperature"))
        probe.start()
        try:
            result = run_child(
                publish_at_rate,
                url=run.mqtt_url,
                client_id=run.name(f"pub{next(self.names)}"),
                rate=rate,
                duration=duration,
                devices=devices,
                timeout=run.timeout,
            )
            wait_for_rows(
                StoredRows(conn, messages=result["published"], devices=devices),
                timeout=run.timeout,
                write=self.say,
                label=f"{rate:,} msg/s",
                measure=False,
            )
            time.sleep(2 * settings.IOTHUB["LIVE_PUSH_INTERVAL"] + 0.5)  # the last coalesced push
        finally:
            stored = probe.stop()
        achieved = result["published"] / result["seconds"]
        return achieved, latency_stats(stored), latency_stats(live.take())

    def report_latency(self, target_rate, achieved, stored, live):
        section = f"latency/{target_rate // 1000}k"
        show = lambda s: " ".join(f"{k} {s[k]:.0f}" if s[k] is not None else f"{k} n/a" for k in ("p50", "p95", "p99", "max"))  # noqa: E731
        self.say(
            f"  {target_rate:,} msg/s (achieved {achieved:,.0f}): stored ms {show(stored)} (n={stored['n']:,}); "
            f"WebSocket (channel layer) ms {show(live)} (n={live['n']:,})"
        )
        at_target = target_rate >= 10_000
        self.summary.add(section, "publish rate achieved", achieved, "msg/s")
        self.summary.add(section, "stored p50", stored["p50"], "ms", target=(("<=", 40) if at_target else None))
        self.summary.add(section, "stored p95", stored["p95"], "ms")
        self.summary.add(section, "stored p99", stored["p99"], "ms", target=(("<=", 100) if at_target else None))
        self.summary.add(section, "WebSocket p50", live["p50"], "ms")
        self.summary.add(section, "WebSocket p99", live["p99"], "ms", target=(("<=", 150) if at_target else None))

    # ----------------------------------------------------------------------------------------
    # 3. scale (MQTT shared subscription) and Kafka

    def bench_scale(self, run):
        """One backlog, queued for a 1-member and a 2-member shared group; each drained by its ingest processes."""
        count, devices = self.options["messages"], self.options["devices"]
        database = self.main_database(run)
        layouts = {n: (run.name(f"scale{n}"), [f"scale{n}-ingest{i + 1}" for i in range(n)]) for n in (1, 2)}
        for group, labels in layouts.values():
            for label in labels:
                prepare_session(run.mqtt_url, run.name(label), shared_topic(group))
        self.say(f"-- {count:,} single-reading messages, queued for 1 and for 2 ingest processes (shared subscription)")
        self.publish(run, count=count, per_message=1, start_ms=backlog_start_ms(count, 1), devices=devices)
        with database.connect() as conn:
            rates = {
                n: self.drain_with(run, conn, [partial(run.mqtt_ingest, label, group=group) for label in labels])
                for n, (group, labels) in layouts.items()
            }
        self.report_scale("scale/mqtt", rates)

    def drain_with(self, run, conn, starters, before_drain=None):
        """Truncate, start ingest processes (`starters`: callables returning an IngestProcess), wait until they are
        ready, call before_drain(processes) if given, drain a --messages backlog, stop; returns rows/s."""
        truncate_readings(conn)
        with ExitStack() as stack:
            processes = [stack.enter_context(start()) for start in starters]
            for process in processes:
                process.wait_ready()
            if before_drain:
                before_drain(processes)
            backlog = StoredRows(conn, messages=self.options["messages"], devices=self.options["devices"])
            drain, _cpu = self.drain_ingest(run, conn, processes, backlog, f"ingest ×{len(processes)}")
            return drain.rate

    def report_scale(self, section, rates):
        self.say(f"  2 processes / 1 process: {times(ratio(rates[2], rates[1]))} ({CORES_NOTE})")
        self.summary.add(section, "1 ingest process", rates[1], "msg/s")
        self.summary.add(section, "2 ingest processes", rates[2], "msg/s")
        self.summary.add(section, "speed-up 2 vs 1", ratio(rates[2], rates[1]), "×")

    def bench_kafka(self, run):
        """A bare consumer on a backlog; then 1 and 2 `ingest --source kafka`, each group on a topic of its own."""
        count, partitions = self.options["messages"], self.options["kafka_partitions"]
        database = self.main_database(run)
        topics = {"bare": run.name("kafka-bare"), 1: run.name("kafka1"), 2: run.name("kafka2")}
        deadletter = run.name("kafka-deadletter")
        create_kafka_topics(run.kafka_servers, [*topics.values(), deadletter], partitions)
        try:
            self.produce(run, topics["bare"])
            bare = run_child(
                consume_bare,
                servers=run.kafka_servers,
                topic=topics["bare"],
                group=run.name("kafka-bare"),
                expected=count,
                timeout=run.timeout,
            )
            self.say(
                f"  bare confluent-kafka consumer: {bare['count']:,} records in {bare['seconds']:.2f} s = "
                f"{bare['rate']:,.0f}/s; CPU {bare['cpu'] / count * 1e6:.1f} µs/record"
            )
            with database.connect() as conn:
                rates = {
                    n: self.drain_with(
                        run,
                        conn,
                        self.kafka_ingests(run, n, topics[n], deadletter),
                        before_drain=partial(self.produce_when_assigned, run, topics[n]),
                    )
                    for n in (1, 2)
                }
        finally:
            for failure in delete_kafka_topics(run.kafka_servers, [*topics.values(), deadletter]):
                self.stderr.write(f"kafka: could not delete topic {failure}")
        self.say(f"  ingest ×1 = {times(ratio(rates[1], bare['rate']))} bare consumer")
        self.summary.add("kafka", "bare consumer", bare["rate"], "msg/s")
        self.summary.add("kafka", "bare CPU per record", bare["cpu"] / count * 1e6, "µs")
        self.summary.add("kafka", "ingest ×1 / bare", ratio(rates[1], bare["rate"]), "×")
        self.report_scale("kafka", rates)

    def produce(self, run, topic):
        count, partitions = self.options["messages"], self.options["kafka_partitions"]
        seconds = produce_backlog(
            servers=run.kafka_servers,
            topic=topic,
            count=count,
            devices=self.options["devices"],
            start_ms=backlog_start_ms(count, 1),
        )
        self.say(
            f"  produced {count:,} records into {topic} ({partitions} partitions) in {seconds:.1f} s: {rate(count, seconds):,.0f}/s"
        )

    def produce_when_assigned(self, run, topic, processes):
        """Once every consumer of the group owns partitions of the (empty) topic, produce the backlog into it:
        the drain then measures a stable group, not its rebalance. The producer outpaces ingest several times."""
        for process in processes:
            process.wait_for_output(f"assigned: {topic}[")
        self.produce(run, topic)

    def kafka_ingests(self, run, n, topic, deadletter):
        env = {
            "IOTHUB_KAFKA_TOPIC": topic,
            "IOTHUB_KAFKA_DEADLETTER_TOPIC": deadletter,
            "IOTHUB_KAFKA_GROUP": run.name(f"kafka{n}"),
            "IOTHUB_KAFKA_PARTITIONS": str(self.options["kafka_partitions"]),
        }
        return [partial(run.ingest, f"kafka{n}-ingest{i + 1}", "--source", "kafka", **env) for i in range(n)]

    # ----------------------------------------------------------------------------------------
    # 4. memory

    def bench_memory(self, run):
        """RSS of one ingest whose device master holds --memory-devices devices, after it processed messages."""
        devices, count = self.options["memory_devices"], self.options["memory_messages"]
        database = self.database(run, "memory", devices)
        with database.connect() as conn, run.mqtt_ingest("memory-ingest", group=run.name("memory"), database=database) as ingest:
            ingest.wait_ready()
            idle = ingest.memory()
            self.say(f"  ingest subscribed, device master not loaded yet: RSS {idle['rss']:.0f} MB")
            self.publish(run, count=count, per_message=1, start_ms=backlog_start_ms(count, 1), devices=devices)
            wait_for_rows(
                StoredRows(conn, messages=count, devices=devices),
                timeout=run.timeout,
                write=self.say,
                label="memory ingest",
                measure=False,
            )
            time.sleep(1)
            loaded = ingest.memory()
        self.say(
            f"  after {count:,} messages with {devices:,} devices in the master: RSS {loaded['rss']:.0f} MB, "
            f"peak {loaded['peak']:.0f} MB"
        )
        self.summary.add("memory", f"RSS, {devices // 1000}k devices", loaded["rss"], "MB", target=("<=", 250))
        self.summary.add("memory", "peak RSS (VmHWM)", loaded["peak"], "MB", target=("<=", 250))
        self.summary.add("memory", "RSS before the master loaded", idle["rss"], "MB")
