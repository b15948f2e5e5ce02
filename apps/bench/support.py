"""What `bench_storage`, `bench_api` and `bench_alerts` share, on top of apps/bench/benchmarks.py.

benchmarks.py provides the bench database (create, migrate, seed), the run's names and subprocess
environment (BenchRun: own IOTHUB_NAMESPACE, MQTT groups, Kafka topics), percentiles, the summary
table and the machine description. This module adds what those three commands need besides:

- `in_bench`: point this process's ORM, cache and channel layer at the bench database and
  namespace (the processes the benchmark starts get the same through `BenchRun.env`);
- `HubProcess`: any hub process (daphne, celery worker, manage.py …) with a log, stopped on exit;
- `time_calls`: warm, bounded timing of an in-process call;
- `BenchCommand`: the frame of a benchmark command (run id, logs, machine facts, load average,
  clean-up, summary).
"""

import os
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack, contextmanager
from copy import deepcopy
from pathlib import Path

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.test.utils import override_settings

from .benchmarks import (
    ROOT,
    BenchDatabase,
    BenchError,
    BenchRun,
    Summary,
    count_rows,
    free_port,
    latency_stats,
    log_tail,
    machine_description,
    machine_load,
    port_open,
    stop_process,
    wait_until,
)


def stats_text(samples, unit="ms"):
    """'p50 … p95 … p99 … max … (n=…)' of latency samples."""
    stats = latency_stats(samples)
    if not stats["n"]:
        return "no samples"
    return ", ".join(f"{key} {stats[key]:,.1f} {unit}" for key in ("p50", "p95", "p99", "max")) + f" (n={stats['n']})"


# --------------------------------------------------------------------------------------------
# This process on the bench database and namespace


def namespaced_settings(namespace):
    """CACHES and CHANNEL_LAYERS of the settings with their key prefixes moved to `namespace`."""
    caches = deepcopy(settings.CACHES)
    caches["default"]["KEY_PREFIX"] = namespace
    layers = deepcopy(settings.CHANNEL_LAYERS)
    layers["default"].setdefault("CONFIG", {})["prefix"] = f"{namespace}:asgi"
    return {"NAMESPACE": namespace, "CACHES": caches, "CHANNEL_LAYERS": layers}


@contextmanager
def in_bench(database, namespace):
    """Run this process's ORM on `database` and its cache and channel layer in `namespace`.

    The database switch is the one Django's test runner makes for its test database: the default
    connection is closed and reopened under another NAME (same server and credentials)."""
    connection = connections["default"]
    saved_name = connection.settings_dict["NAME"]
    connection.close()
    connection.settings_dict["NAME"] = database.name
    try:
        with override_settings(**namespaced_settings(namespace)):
            yield
    finally:
        connection.close()
        connection.settings_dict["NAME"] = saved_name


# --------------------------------------------------------------------------------------------
# Hub processes


class HubProcess:
    """A hub process started with the run's environment; output in <log_dir>/<label>.log; always stopped."""

    def __init__(self, label, command, *, env, log_dir):
        self.label = label
        self.log_path = Path(log_dir) / f"{label}.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def check_alive(self):
        if self.process.poll() is not None:
            raise BenchError(f"{self.label} exited with {self.process.returncode}:\n{log_tail(self.log_path)}")

    def output(self):
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text, timeout=60):
        """Wait until the process has printed `text`."""

        def printed():
            self.check_alive()
            return text in self.output()

        wait_until(printed, timeout=timeout, what=f"{text!r} from {self.label}", interval=0.1)

    def wait_for_port(self, port, timeout=60):
        def listening():
            self.check_alive()
            return port_open(port)

        wait_until(listening, timeout=timeout, what=f"{self.label} on port {port}", interval=0.1)

    def stop(self):
        code = stop_process(self.process, timeout=30)
        self.log.close()
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def manage_command(*args):
    """argv of `python manage.py <args>` with this interpreter."""
    return [sys.executable, "manage.py", *args]


def celery_worker_command(run, *, concurrency=2, pool="prefork", loglevel="INFO"):
    """argv of `celery -A iothub worker` with a run-unique node name (mingle and gossip off: the
    worker shares Redis with others and must not wait for or talk to them)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "iothub",
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "-n",
        f"{run.name('worker')}@%h",
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        loglevel,
    ]


def daphne_replicas(stack, *, count, env, log_dir):
    """`count` daphne processes of the hub, each on a free port of 127.0.0.1, stopped with `stack`;
    returns their ports (architecture §8: daphne replicas behind a load balancer)."""
    ports = []
    for n in range(count):
        port = free_port()
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "iothub.asgi:application"]
        stack.enter_context(HubProcess(f"daphne-{n + 1}", command, env=env, log_dir=log_dir)).wait_for_port(port)
        ports.append(port)
    return ports


def celery_broker():
    """A Redis client of the Celery broker (CELERY_BROKER_URL may name another Redis database than REDIS_URL)."""
    return redis.Redis.from_url(settings.CELERY_BROKER_URL or settings.REDIS_URL)


def clear_celery_queue(queue):
    """Delete the run's Celery queue and its kombu bindings from the broker (BenchRun.clear_redis only
    cleans REDIS_URL's database)."""
    celery_broker().delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


# --------------------------------------------------------------------------------------------
# Timing in-process calls


def time_calls(call, *, runs, budget, warmup=1, minimum=3):
    """Warm up with `warmup` calls, then time `call()` `runs` times, or fewer (at least `minimum`)
    once `budget` seconds are spent. Returns (samples in ms, the last result)."""
    result = None
    for _ in range(warmup):
        result = call()
    samples = []
    deadline = time.monotonic() + budget
    while len(samples) < runs and (len(samples) < minimum or time.monotonic() < deadline):
        started = time.perf_counter()
        result = call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples, result


# --------------------------------------------------------------------------------------------
# The frame of a benchmark command


class BenchCommand(BaseCommand):
    """Run id, log directory, machine facts and load, bench database, clean-up and the summary table.

    Subclasses set `default_database` and implement `run_benchmark(run, stack)`; they may override
    `broker_url(stack, log_dir)` to start a private MQTT broker."""

    default_database = "iothub_bench"
    load_note = "2 cores, shared with whatever else runs on the machine"

    def add_arguments(self, parser):
        parser.add_argument("--database", default=self.default_database, help="the benchmark's own database (created if missing)")
        parser.add_argument("--timeout", type=float, default=600, help="seconds any single wait may take")
        parser.add_argument("--keep-data", action="store_true", help="leave the generated data in the bench database")
        parser.add_argument("--drop-database", action="store_true", help="drop the bench database at the end")

    def say(self, text=""):
        self.stdout.write(text)
        self.stdout.flush()

    def handle(self, *args, **options):
        self.options = options
        self.summary = Summary()
        server_url = self.check_environment()
        run_id = uuid.uuid4().hex[:8]
        log_dir = ROOT / "var" / "bench" / f"{self.command_name()}-{run_id}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.database = BenchDatabase(server_url, options["database"])
        self.prepared = False
        self.say(
            f"{self.command_name()} run {run_id}: database {self.database.name}, namespace bench-{run_id}; logs in {log_dir}"
        )
        self.describe_machine(server_url)
        started = time.monotonic()
        try:
            with ExitStack() as stack:
                run = BenchRun(
                    database=self.database,
                    mqtt_url=self.broker_url(stack, log_dir),
                    kafka_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                    redis_url=settings.REDIS_URL,
                    log_dir=log_dir,
                    timeout=options["timeout"],
                    write=self.say,
                    run_id=run_id,
                )
                stack.callback(self.clean_up, run)
                self.run_benchmark(run, stack)
        except BenchError as e:
            raise CommandError(str(e)) from e
        finally:
            self.say(f"\n== summary ({self.load_note}; {machine_load()} at the end; {time.monotonic() - started:.0f} s) ==")
            self.say(self.summary.table())

    def command_name(self):
        return self.__module__.rsplit(".", 1)[-1]

    def check_environment(self):
        url = os.environ.get("DATABASE_URL", "")
        if not url.startswith("postgres"):
            raise CommandError(
                f'{self.command_name()} needs DATABASE_URL of a PostgreSQL server: eval "$(scripts/services.sh env)"'
            )
        if not settings.REDIS_URL:
            raise CommandError(f"{self.command_name()} needs REDIS_URL (latest values, channel layer, Celery)")
        return url

    def describe_machine(self, server_url):
        for line in machine_description(server_url, settings.REDIS_URL):
            self.say(f"  {line}")
        self.say(f"  {machine_load()} (uptime)")

    def broker_url(self, stack, log_dir):
        return settings.MQTT_URL

    def prepare_database(self, run, devices):
        """Create, migrate and seed the bench database (seed_demo --devices), readings emptied."""
        self.say(f"  preparing database {self.database.name} (migrate, seed_demo --devices {devices:,})…")
        started = time.monotonic()
        self.database.prepare(devices=devices, env=run.env(), log_path=run.log_dir / "setup.log")
        self.prepared = True
        with self.database.connect() as conn:
            present = count_rows(conn, "devices_device")
        more = (
            " (more than asked: seed_demo keeps the devices of earlier runs; --drop-database starts afresh)"
            if present > devices
            else ""
        )
        self.say(f"  database ready in {time.monotonic() - started:.0f} s with {present:,} devices{more}")

    def clean_up(self, run):
        """Always: this run's Redis keys; unless --keep-data: the generated data; with --drop-database: the database."""
        run.clear_redis()
        clear_celery_queue(run.namespace)
        if not self.prepared:
            return
        if self.options["drop_database"]:
            self.database.drop()
        elif not self.options["keep_data"]:
            with self.database.connect() as conn:
                self.empty_tables(conn)

    def empty_tables(self, conn):
        """Remove what the benchmark generated (called at the end unless --keep-data)."""
