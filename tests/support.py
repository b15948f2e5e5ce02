"""Helpers of the test suite (fixtures are in conftest.py): waiting for a condition, running hub
processes and manage.py commands, building test data."""

import csv
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def eventually(check, timeout=20.0, interval=0.1, message="condition"):
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class HubProcesses:
    """Starts `manage.py` commands (or celery) as real processes; stops them and keeps their logs."""

    def __init__(self, env, name):
        self.env = env
        self.name = name
        self.procs = []

    def start(self, *args, program=None):
        ARTIFACTS.mkdir(exist_ok=True)
        label = "-".join(a.strip("-") for a in args[:2])
        log = open(ARTIFACTS / f"{self.name}-{label}-{len(self.procs)}.log", "wb")
        command = program or [sys.executable, "manage.py"]
        proc = subprocess.Popen([*command, *args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = log.name
        self.procs.append((proc, log))
        return proc

    def wait_for_output(self, proc, text, timeout=30):
        """Wait until the process has printed `text` (e.g. that it subscribed), or fail with its output."""

        def printed():
            assert proc.poll() is None, Path(proc.log_path).read_text()
            return text in Path(proc.log_path).read_text()

        return eventually(printed, timeout=timeout, message=f"{text!r} from {proc.args[2:4]}")

    def ingest(self, *args):
        proc = self.start("ingest", *args)
        self.wait_for_output(proc, "subscribed" if "kafka" not in args else "assigned")
        return proc

    def celery_worker(self):
        proc = self.start(
            "-A",
            "iothub",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "2",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "INFO",
            program=[sys.executable, "-m", "celery"],
        )
        self.wait_for_output(proc, "ready.")
        return proc

    def web(self):
        """daphne serving the hub on a free loopback port; returns its base URL once it answers."""
        port = free_port()
        proc = self.start("-b", "127.0.0.1", "-p", str(port), "iothub.asgi:application", program=[sys.executable, "-m", "daphne"])

        def answers():
            assert proc.poll() is None, Path(proc.log_path).read_text()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        eventually(answers, message="daphne")
        return f"http://127.0.0.1:{port}"

    def stop_all(self):
        for proc, _log in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, log in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def latest_item(device, metric, value, ts, status="normal"):
    """One store_latest item."""
    return {"device": device, "metric": metric, "value": value, "ts": ts, "status": status}


def now_ms():
    return int(time.time() * 1000)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(url, *args, **env):
    """Run a manage.py command as its own process against the database at `url`; returns its output."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DATABASE_URL": url, "TIME_ZONE": "Europe/Berlin", **env},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def readings_csv(path, rows):
    """A CSV for import_readings: (device, time, value) rows of temperature readings."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["device", "time", "metric", "value"])
        writer.writerows((device, at.isoformat(), "temperature", value) for device, at, value in rows)
    return str(path)
