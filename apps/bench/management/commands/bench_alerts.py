"""`manage.py bench_alerts`: from a threshold crossing published over MQTT to the alert on the WebSocket layer.

Real processes, as deployed: `manage.py ingest --source mqtt`, `celery -A iothub worker` (threads
pool, like docker/compose.yaml) and, as background load, `manage.py simulate` publishing --rate
messages/s for --sim-devices seeded devices, all on a private Mosquitto (every sensors/#
subscriber of the shared broker would get the load otherwise) and in the run's own database and
IOTHUB_NAMESPACE. Meanwhile --crossing-devices dedicated devices publish, every second, a
temperature above the seeded critical_max and half a second later a normal one. A member of the
channel layer group "live" (what daphne forwards to every dashboard) timestamps each "live.alert"
message; the crossing's value (unique per crossing) identifies the alert it opened. Reported:
publish → first alert message p50/p99, and how many crossings opened exactly one alert (and
were resolved again); per crossing in <log dir>/crossings.csv. A monitor prints the ingest lag
and the Celery queue every second. Afterwards, for the bottleneck: the worker's task counts
(failures, deadlocks) from its DEBUG log, and one median-sized batch through
process_stored_batch in-process, timed and profiled without contention.

Last, what alarm management costs evaluation: the same batch through process_stored_batch with
no maintenance window or shelved alert in the database and with some (current windows of other
devices and of locations, shelved alerts of other devices), in alternating pairs; the ratio of
the medians. `--only overhead` measures just that, without the processes.
"""

import cProfile
import csv
import itertools
import pstats
import re
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field

import orjson
import psycopg
import redis
from django.conf import settings
from django.core.management.base import CommandError

from apps.alerts.evaluation import as_datetime
from apps.alerts.models import ACTIVE_STATES, Alert, MaintenanceWindow, Threshold
from apps.alerts.services import process_stored_batch
from apps.bench.benchmarks import (
    LiveGroupProbe,
    close_mqtt,
    latency_stats,
    open_mqtt,
    private_mosquitto,
    process_cpu_seconds,
)
from apps.bench.support import (
    BenchCommand,
    HubProcess,
    celery_broker,
    celery_worker_command,
    in_bench,
    machine_load,
    manage_command,
    stats_text,
    time_calls,
)
from apps.demo.seed import demo_device_id
from apps.devices.models import Device, Location, Metric

TARGET_P99_MS = 1000
TARGET_OVERHEAD = 1.05  # shelving and maintenance checks: at most 5 % more per evaluated batch
OVERHEAD_WINDOWS = 50  # current maintenance windows of devices outside the batch …
OVERHEAD_LOCATION_WINDOWS = 5  # … and of locations without its devices
OVERHEAD_SHELVED = 100  # shelved alerts of devices outside the batch
CROSSING_BASE = 40.0  # above the seeded temperature critical_max (35 °C)
NORMAL_VALUE = 21.0
VALUE_STEP = 0.001  # crossing k publishes CROSSING_BASE + k × VALUE_STEP: the alert's first_value names its crossing
# A scan of the bench's readings once a second (the table is truncated before the run).
NEWEST_READING_AGE = "SELECT extract(epoch FROM now() - max(time))::float8 FROM telemetry_reading"


def value_key(value):
    return round(value, 3)


@dataclass
class Crossing:
    device: str
    value: float
    published_at: float  # epoch s


@dataclass
class AlertMessage:
    received_at: float  # epoch s
    alert: dict


class AlertProbe(LiveGroupProbe):
    """A member of the channel layer group "live": keeps every live.alert message of `devices`."""

    name_of_probe = "alert probe"

    def __init__(self, devices):
        super().__init__(settings.NAMESPACE)  # this command runs in the bench namespace
        self.devices = set(devices)
        self.messages = []
        self.other_alerts = 0

    def on_message(self, message, now_ms):
        if message.get("type") != "live.alert":
            return
        alert = message["alert"]
        if alert.get("device") in self.devices:
            self.messages.append(AlertMessage(now_ms / 1000, alert))
        else:
            self.other_alerts += 1


class LoadMonitor(threading.Thread):
    """Every second: how far ingest lags (now − time of the newest stored reading) and how many Celery tasks
    wait in Redis (not counting those the worker has already prefetched)."""

    def __init__(self, database, queue, write):
        super().__init__(daemon=True, name="load-monitor")
        self.database = database
        self.broker = celery_broker()
        self.queue = queue
        self.write = write
        self.samples = []  # (ingest lag s, queued tasks)
        self.stopped = threading.Event()

    def run(self):
        try:
            with self.database.connect() as conn:
                while not self.stopped.wait(1.0):
                    self.sample(conn)
        except (psycopg.Error, redis.RedisError) as e:  # the benchmark goes on; its own waits will report the outage
            self.write(f"    monitor stopped: {type(e).__name__}: {e}")

    def sample(self, conn):
        (lag,) = conn.execute(NEWEST_READING_AGE).fetchone()
        queued = self.broker.llen(self.queue)
        self.samples.append((lag, queued))
        shown = f"{lag:.2f} s" if lag is not None else "no readings yet"
        self.write(f"    ingest lag {shown}, {queued} Celery tasks waiting in Redis ({machine_load()})")

    def stop(self):
        self.stopped.set()
        self.join(10)

    def peaks(self):
        lags = [lag for lag, _ in self.samples if lag is not None]
        return max(lags, default=None), max((queued for _, queued in self.samples), default=0)


@dataclass
class Measured:
    """What one run measured while the processes ran."""

    crossings: list
    seconds: float  # of the crossings
    messages: list  # AlertMessage of the crossing devices
    other_alerts: int
    peaks: tuple  # (ingest lag s, Celery queue)
    cpu: dict  # process → CPU seconds during the crossings
    simulator: tuple  # (its last progress line, the rate it reports)
    stored: int = 0


@dataclass
class Outcome:
    """What the alert messages say about each crossing."""

    latencies: list = field(default_factory=list)  # ms, publish → first message of the crossing's alert
    exactly_one: int = 0
    none: int = 0
    several: int = 0
    resolved: int = 0
    first_state_open: int = 0
    rows: list = field(default_factory=list)  # per crossing, for crossings.csv

    def add(self, crossing, alerts):
        """alerts: {alert id: [AlertMessage]} of this crossing."""
        latency, resolved, first_state = None, False, ""
        if len(alerts) == 1:
            received = sorted(next(iter(alerts.values())), key=lambda m: m.received_at)
            latency = (received[0].received_at - crossing.published_at) * 1000
            resolved = any(m.alert["state"] == "resolved" for m in received)
            first_state = received[0].alert["state"]
            self.exactly_one += 1
            self.latencies.append(latency)
            self.first_state_open += first_state == "open"
            self.resolved += resolved
        elif alerts:
            self.several += 1
        else:
            self.none += 1
        self.rows.append(
            (
                crossing.device,
                crossing.value,
                f"{crossing.published_at:.3f}",
                len(alerts),
                "" if latency is None else f"{latency:.1f}",
                first_state,
                resolved,
            )
        )

    def write_csv(self, path):
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["device", "value", "published_at", "alerts", "latency_ms", "first_state", "resolved"])
            writer.writerows(self.rows)


def match(crossings, messages):
    """Crossing → the alerts whose first_value is its value, their first message and resolution."""
    by_crossing = defaultdict(lambda: defaultdict(list))
    for message in messages:
        first_value = message.alert.get("first_value")
        if first_value is not None:
            by_crossing[(message.alert["device"], value_key(first_value))][message.alert["id"]].append(message)
    outcome = Outcome()
    for crossing in crossings:
        outcome.add(crossing, by_crossing.get((crossing.device, value_key(crossing.value)), {}))
    return outcome


class Command(BenchCommand):
    help = "Benchmark publish → alert on the WebSocket layer under background MQTT load (ingest, Celery worker, simulator)."
    default_database = "iothub_bench_alerts"
    load_note = "2 cores shared by simulator, broker, ingest, worker, PostgreSQL, Redis and this probe"

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--rate", type=float, default=5000, help="background load, messages/s (manage.py simulate)")
        parser.add_argument("--duration", type=float, default=20, help="seconds of threshold crossings")
        parser.add_argument("--sim-devices", type=int, default=1000, help="devices of the background load (3 metrics each)")
        parser.add_argument(
            "--crossing-devices", type=int, default=5, help="dedicated devices crossing the threshold every second"
        )
        parser.add_argument("--warmup", type=float, default=10, help="seconds of background load before the first crossing")
        parser.add_argument("--drain", type=float, default=20, help="seconds to wait for the last alerts after the crossings")
        parser.add_argument("--worker-pool", default="threads", help="celery worker --pool (docker/compose.yaml: threads)")
        parser.add_argument(
            "--worker-concurrency", type=int, default=8, help="celery worker --concurrency (docker/compose.yaml: 8)"
        )
        parser.add_argument(
            "--only",
            choices=["all", "overhead"],
            default="all",
            help="overhead: only the in-process cost of the shelving and maintenance checks (no processes, no load)",
        )
        parser.add_argument("--pairs", type=int, default=100, help="alternating pairs of the overhead measurement")
        parser.add_argument("--batch", type=int, default=1000, help="readings per batch of --only overhead")
        parser.add_argument(
            "--broker",
            choices=["private", "services"],
            default="private",
            help="private (default): a Mosquitto of the run's own; services: MQTT_URL (shared with others)",
        )

    def broker_url(self, stack, log_dir):
        if self.options["broker"] == "services":
            return super().broker_url(stack, log_dir)
        url = stack.enter_context(private_mosquitto(log_dir / "mosquitto"))
        self.say(f"  broker: private Mosquitto at {url}")
        return url

    def empty_tables(self, conn):
        conn.execute(
            "TRUNCATE telemetry_reading, telemetry_deadletter, telemetry_dirtyhour, alerts_alert, alerts_maintenancewindow CASCADE"
        )

    def crossing_device_ids(self):
        first = self.options["sim_devices"] + 1
        return [demo_device_id(n) for n in range(first, first + self.options["crossing_devices"])]

    def run_benchmark(self, run, stack):
        options = self.options
        devices = self.crossing_device_ids()
        self.prepare_database(run, options["sim_devices"] + options["crossing_devices"])
        with in_bench(self.database, run.namespace):
            with self.database.connect() as conn:
                self.empty_tables(conn)
            if options["only"] == "overhead":
                self.measure_alarm_overhead(options["batch"])
                return
            processes = self.start_processes(run, stack)
            measured = self.measure(run, stack, processes, devices)
            for process in processes.values():  # the worker finishes the tasks it is running
                process.stop()
            with self.database.connect() as conn:
                measured.stored = conn.execute("SELECT count(*) FROM telemetry_reading").fetchone()[0]
            outcome = match(measured.crossings, measured.messages)
            outcome.write_csv(run.log_dir / "crossings.csv")
            self.report(outcome, measured)
            facts = worker_log_facts(processes["worker"].output())
            self.report_worker(facts)
            self.profile_evaluation(facts["median_rows"] or 1000, run.log_dir)
            self.measure_alarm_overhead(facts["median_rows"] or 1000)

    def measure(self, run, stack, processes, devices):
        """Background load, then the crossings; returns what was measured while it ran."""
        options = self.options
        with AlertProbe(devices) as probe, self.monitored(run) as monitor:
            processes["simulate"] = simulator = stack.enter_context(self.simulator(run))
            self.say(f"  background load for {options['warmup']:.0f} s before the first crossing…")
            time.sleep(options["warmup"])
            cpu_before = {name: process_cpu_seconds(p.process.pid) for name, p in processes.items()}
            crossings, seconds = self.publish_crossings(run, devices)
            cpu = {name: process_cpu_seconds(p.process.pid) - cpu_before[name] for name, p in processes.items()}
            self.wait_for_alerts(probe, crossings)
            progress = simulator_progress(simulator)
        return Measured(
            crossings=crossings,
            seconds=seconds,
            messages=probe.messages,
            other_alerts=probe.other_alerts,
            peaks=monitor.peaks(),
            cpu=cpu,
            simulator=progress,
        )

    # ----------------------------------------------------------------------------------------
    # processes

    def start_processes(self, run, stack):
        """Celery worker and MQTT ingest, ready; stopped when the stack closes."""
        options = self.options
        worker = stack.enter_context(
            HubProcess(
                "worker",
                celery_worker_command(
                    run, pool=options["worker_pool"], concurrency=options["worker_concurrency"], loglevel="DEBUG"
                ),
                env=run.env(),
                log_dir=run.log_dir,
            )
        )
        ingest = stack.enter_context(run.mqtt_ingest("ingest", group=run.name("mqtt")))
        worker.wait_for_output("ready.", timeout=120)
        ingest.wait_ready(timeout=120)
        self.say(f"  celery worker ({options['worker_pool']} × {options['worker_concurrency']}) and ingest ready")
        return {"worker": worker, "ingest": ingest}

    def simulator(self, run):
        options = self.options
        seconds = options["warmup"] + options["duration"] + options["drain"] + 30
        command = manage_command(
            "simulate",
            "--devices",
            str(options["sim_devices"]),
            "--rate",
            str(options["rate"]),
            "--duration",
            str(seconds),
            "--scenario",
            "factory",
        )
        process = HubProcess("simulate", command, env=run.env(), log_dir=run.log_dir)
        process.wait_for_output("simulate: ", timeout=60)
        self.say(f"  simulate: {options['sim_devices']:,} devices, {options['rate']:,.0f} messages/s (3 metrics each)")
        return process

    @contextmanager
    def monitored(self, run):
        monitor = LoadMonitor(self.database, run.namespace, self.say)
        monitor.start()
        try:
            yield monitor
        finally:
            monitor.stop()

    # ----------------------------------------------------------------------------------------
    # crossings

    def publish_crossings(self, run, devices):
        """Every second, per device: a value above critical_max, half a second later a normal one.
        Returns (crossings, seconds)."""
        duration = self.options["duration"]
        self.say(f"\n== crossings: {len(devices)} devices × 1 per second for {duration:.0f} s ({machine_load()}) ==")
        client = open_mqtt(run.mqtt_url, run.name("crossings"))
        crossings, sent = [], []
        started = time.monotonic()
        try:
            for second in range(int(duration)):
                wait_until_monotonic(started + second)
                for device in devices:
                    value = CROSSING_BASE + len(crossings) * VALUE_STEP
                    published_at, info = publish(client, device, value)
                    crossings.append(Crossing(device, value, published_at))
                    sent.append(info)
                wait_until_monotonic(started + second + 0.5)
                sent += [publish(client, device, NORMAL_VALUE)[1] for device in devices]
            seconds = time.monotonic() - started
            for info in sent:  # disconnecting earlier would drop what paho has not sent yet
                info.wait_for_publish(30)
        finally:
            close_mqtt(client)
        return crossings, seconds

    def wait_for_alerts(self, probe, crossings):
        """Until every crossing's alert has been opened and resolved on the channel layer, or --drain s."""
        deadline = time.monotonic() + self.options["drain"]
        while time.monotonic() < deadline:
            outcome = match(crossings, probe.messages)
            if outcome.exactly_one + outcome.several == len(crossings) and outcome.resolved == outcome.exactly_one:
                return
            time.sleep(0.5)
        self.say(f"  drain of {self.options['drain']:.0f} s over; reporting what arrived")

    # ----------------------------------------------------------------------------------------
    # report

    def report(self, outcome, measured):
        count = len(measured.crossings)
        stats = latency_stats(outcome.latencies)
        lag, queued = measured.peaks
        progress, achieved = measured.simulator
        self.say(f"\n== results ({machine_load()}) ==")
        self.say(f"  publish → alert on the channel layer: {stats_text(outcome.latencies)}")
        self.say(
            f"  crossings: {count}; exactly one alert: {outcome.exactly_one}; none: {outcome.none}; several: {outcome.several}; "
            f"first message 'open': {outcome.first_state_open}; resolved again: {outcome.resolved}"
        )
        self.say(
            f"  background: simulator {progress}; {measured.stored:,} readings stored; "
            f"{measured.other_alerts} alert messages of other devices"
        )
        self.say(f"  peak ingest lag {lag if lag is None else round(lag, 2)} s, peak Celery queue in Redis {queued} tasks")
        self.say(
            "  CPU during the crossings: "
            + ", ".join(f"{name} {value:.1f} s ({value / measured.seconds:.0%})" for name, value in measured.cpu.items())
        )
        section = "alerts"
        self.summary.add(section, "publish → live.alert p50", stats["p50"], "ms")
        self.summary.add(
            section, "publish → live.alert p99", stats["p99"], "ms", target=("<=", TARGET_P99_MS), note=f"n={stats['n']}"
        )
        self.summary.add(section, "crossings with exactly one alert", outcome.exactly_one, f"of {count}", target=(">=", count))
        self.summary.add(section, "alerts resolved again", outcome.resolved, f"of {count}")
        self.summary.add(section, "background load published", achieved, "msg/s", note=f"asked {self.options['rate']:,.0f}")
        self.summary.add(section, "peak ingest lag", lag, "s")
        self.summary.add(section, "peak Celery queue in Redis", queued, "tasks")

    def report_worker(self, facts):
        """What the worker's log says: tasks received, evaluated and failed, batch sizes."""
        self.say(
            f"  worker: {facts['received']} evaluate_batch tasks received, {facts['evaluated']} evaluated, "
            f"{facts['failed']} failed ({facts['deadlocks']} by a PostgreSQL deadlock) by the time it stopped; "
            f"median batch {facts['median_rows']} readings"
        )
        self.summary.add(
            "alerts",
            "evaluate_batch tasks evaluated",
            facts["evaluated"],
            "tasks",
            note=f"of {facts['received']} received; median {facts['median_rows']} readings",
        )
        self.summary.add(
            "alerts", "evaluate_batch tasks failed", facts["failed"], "tasks", note=f"{facts['deadlocks']} deadlocks"
        )

    def profile_evaluation(self, batch_rows, log_dir):
        """One batch of normal readings through process_stored_batch in this process, with the worker and
        ingest stopped: what a batch costs without contention, and where that time goes."""
        rows, last_seen = normal_batch(batch_rows, self.options["sim_devices"])
        samples, _ = time_calls(lambda: process_stored_batch(rows=rows, last_seen=last_seen), runs=5, budget=30)
        median = latency_stats(samples)["p50"]
        self.say(f"\n== one batch of {len(rows):,} readings evaluated in-process, no contention ({machine_load()}) ==")
        self.say(
            f"  process_stored_batch: {stats_text(samples)} = {len(rows) / median * 1000:,.0f} readings/s per thread; "
            f"needed: {self.options['rate'] * 3:,.0f} readings/s"
        )
        profiler = cProfile.Profile()
        profiler.runcall(process_stored_batch, rows=rows, last_seen=last_seen)
        profiler.dump_stats(log_dir / "evaluation.prof")
        for name, cumulative in hub_functions(profiler, "apps/alerts/")[:6]:
            self.say(f"    {cumulative * 1000:8.1f} ms  {name}")
        self.summary.add("alerts", "one batch, in-process, no contention", median, "ms", note=f"{len(rows):,} readings")

    def measure_alarm_overhead(self, batch_rows):
        """One batch of normal readings through process_stored_batch, with and without maintenance
        windows and shelved alerts in the database, in alternating pairs (which goes first alternates
        too); the ratio of the medians, with the processes stopped."""
        pairs = self.options["pairs"]
        rows, last_seen = normal_batch(batch_rows, self.options["sim_devices"])
        load = AlarmManagementLoad({device for device, _ in last_seen})
        samples = {"without": [], "with": []}
        switch = {"without": load.off, "with": load.on}

        def evaluate():
            started = time.perf_counter()
            process_stored_batch(rows=rows, last_seen=last_seen)
            return (time.perf_counter() - started) * 1000

        for pair in range(pairs):
            for name in ("without", "with") if pair % 2 == 0 else ("with", "without"):
                switch[name]()
                evaluate()  # untimed: the first batch after a switch meets the switch's fresh row versions
                samples[name].append(evaluate())
        medians = {name: latency_stats(values)["p50"] for name, values in samples.items()}
        ratio = medians["with"] / medians["without"]
        pair_ratios = sorted(w / wo for w, wo in zip(samples["with"], samples["without"], strict=True))
        self.say(
            f"\n== shelving and maintenance checks: one batch of {len(rows):,} readings, {pairs} alternating pairs, "
            f"in-process ({machine_load()}) =="
        )
        self.say(f"  without windows or shelved alerts: {stats_text(samples['without'])}")
        self.say(
            f"  with {OVERHEAD_WINDOWS} device and {OVERHEAD_LOCATION_WINDOWS} location windows and {OVERHEAD_SHELVED} shelved "
            f"alerts (none of the batch's devices): {stats_text(samples['with'])}"
        )
        self.say(
            f"  ratio of the medians with / without: {ratio:.3f} (target ≤ {TARGET_OVERHEAD}); "
            f"per pair: median {pair_ratios[len(pair_ratios) // 2]:.3f}, middle 80 % "
            f"{pair_ratios[len(pair_ratios) // 10]:.3f}–{pair_ratios[len(pair_ratios) * 9 // 10]:.3f}"
        )
        self.summary.add("alerts", "batch without windows or shelved alerts, p50", medians["without"], "ms")
        self.summary.add("alerts", "batch with windows and shelved alerts, p50", medians["with"], "ms")
        self.summary.add(
            "alerts",
            "shelving and maintenance checks, with / without",
            ratio,
            "×",
            target=("<=", TARGET_OVERHEAD),
            note=f"{pairs} pairs of {len(rows):,} readings",
        )


class AlarmManagementLoad:
    """Maintenance windows and shelved alerts that evaluation must check but that cover none of a
    batch's devices: current (`on`) or moved a year into the past, shelved or resolved (`off`),
    each switch one UPDATE per table."""

    def __init__(self, batch_devices):
        temperature = Metric.objects.get(key="temperature")
        # Devices whose temperature alert the background load left open can take no second one.
        alerted = Alert.objects.filter(metric=temperature, state__in=ACTIVE_STATES).values("device")
        free = Device.objects.exclude(pk__in=batch_devices).exclude(pk__in=alerted)
        others = list(free.order_by("pk")[: OVERHEAD_WINDOWS + OVERHEAD_SHELVED])
        if len(others) < OVERHEAD_WINDOWS + OVERHEAD_SHELVED:
            raise CommandError(
                f"--sim-devices leaves {len(others)} devices outside the batch; {OVERHEAD_WINDOWS + OVERHEAD_SHELVED} are needed"
            )
        empty_locations = [
            Location.objects.get_or_create(loc_id=f"BENCH-MAINTENANCE-{n}", defaults={"factory": "Bench"})[0]
            for n in range(OVERHEAD_LOCATION_WINDOWS)
        ]
        now = time.time()
        windows = [MaintenanceWindow(device=device, reason="bench") for device in others[:OVERHEAD_WINDOWS]]
        windows += [MaintenanceWindow(location=location, reason="bench") for location in empty_locations]
        for window in windows:
            window.start, window.end = as_datetime(now - 3600), as_datetime(now + 86400)
        MaintenanceWindow.objects.bulk_create(windows)
        shelved = Alert.objects.bulk_create(
            Alert(device=device, metric=temperature, level="warning", opened_at=as_datetime(now - 600), last_value=31.0)
            for device in others[OVERHEAD_WINDOWS:]
        )
        # Only these: the crossings before left alerts of their own (several per device and metric),
        # which, all shelved at once, would be more than one active alert of a pair.
        self.alerts = Alert.objects.filter(pk__in=[alert.pk for alert in shelved])

    def on(self):
        now = time.time()
        MaintenanceWindow.objects.update(start=as_datetime(now - 3600), end=as_datetime(now + 86400))
        self.alerts.update(state=Alert.State.SHELVED, shelved_until=as_datetime(now + 3600), unshelved_state=Alert.State.OPEN)

    def off(self):
        past = time.time() - 366 * 86400
        MaintenanceWindow.objects.update(start=as_datetime(past - 3600), end=as_datetime(past))
        self.alerts.update(state=Alert.State.RESOLVED, shelved_until=None, unshelved_state="")


def normal_batch(size, devices):
    """`size` evaluation rows of normal values spread over the sim devices, as ingest hands them to Celery:
    (device_pk, metric_pk, ts, value, threshold_pk), and last_seen (device_pk, ts)."""
    thresholds = {t.metric_id: t.pk for t in Threshold.objects.filter(device=None, location=None, device_type=None)}
    normal = {"temperature": 21.0, "humidity": 45.0, "pcv_temperature": 60.0}
    metrics = [(m.pk, normal[m.key]) for m in Metric.objects.filter(key__in=normal)]
    device_pks = list(Device.objects.order_by("device_id").values_list("pk", flat=True)[:devices])
    now = time.time()
    rows = [
        (device_pks[i // len(metrics) % len(device_pks)], metric, now, value, thresholds[metric])
        for i, (metric, value) in zip(range(size), itertools.cycle(metrics))
    ]
    last_seen = list({device: now for device, *_ in rows}.items())
    return rows, last_seen


def hub_functions(profiler, prefix):
    """(function, cumulative seconds) of the profiled functions under `prefix`, slowest first."""
    stats = pstats.Stats(profiler).stats
    found = [
        (f"{path.split('apps/', 1)[1]}:{name}", cumulative)
        for (path, _, name), (_, _, _, cumulative, _) in stats.items()
        if prefix in path
    ]
    return sorted(found, key=lambda item: -item[1])


def worker_log_facts(log):
    """Counts of the evaluate_batch tasks in a celery worker log at DEBUG level (its "batch evaluated"
    lines are DEBUG when nothing changed) and the median batch size."""
    task = r"evaluate_batch\[[^]]+\]"
    sizes = sorted(int(x) for x in re.findall(r"batch evaluated: (\d+) readings", log))
    return {
        "received": len(re.findall(task + " received", log)),
        "evaluated": len(sizes),
        "failed": len(re.findall(task + " raised", log)),
        "deadlocks": len(re.findall(task + r" raised unexpected: OperationalError\('deadlock detected", log)),
        "median_rows": sizes[len(sizes) // 2] if sizes else 0,
    }


def wait_until_monotonic(at):
    delay = at - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def publish(client, device, value):
    """Publish one temperature of `device` (QoS 1) stamped now; returns (publish time in epoch s, paho's MQTTMessageInfo)."""
    now = time.time()
    return now, client.publish(f"sensors/{device}", orjson.dumps({"ts": int(now * 1000), "temperature": value}), qos=1)


def simulator_progress(simulator):
    """The simulator's last progress line and the rate it reports there (None if it printed none yet)."""
    lines = [line for line in simulator.output().splitlines() if "published (" in line]
    if not lines:
        return "no progress line", None
    found = re.search(r"\(([\d,]+)/s\)", lines[-1])
    return lines[-1].removeprefix("simulate: "), float(found.group(1).replace(",", "")) if found else None
