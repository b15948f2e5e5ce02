"""Helpers of the test suite (fixtures are in conftest.py): waiting for a condition, running hub
processes and manage.py commands, building test data."""

import asyncio
import csv
import os
import socket
import subprocess
import sys
import threading
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


ROLES = {
    "plain": {},
    "staff": {"is_staff": True},
    "admin": {"is_staff": True, "is_superuser": True},
}


def token_for(role, *, can_write=True):
    from django.contrib.auth import get_user_model

    from apps.accounts.services import issue_api_token

    user = get_user_model().objects.create_user(f"{role}-user", **ROLES[role])
    return issue_api_token(user=user, name="tests", can_write=can_write)[1]


def api_client(role):
    """An APIClient with a real token of a user of `role`, or without credentials for "anonymous"."""
    from rest_framework.test import APIClient

    client = APIClient()
    if role != "anonymous":
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(role)}")
    return client


def session_cookie(username="operator", is_staff=False):
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_user(username, password="pw-not-used-0", is_staff=is_staff)
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def collect_ws(cookie, path, publish_all, wanted, timeout=25):
    """Connect a WebSocket, run publish_all, and gather messages until `wanted(messages)` is true."""
    from channels.testing import WebsocketCommunicator

    from iothub.asgi import application

    communicator = WebsocketCommunicator(
        application, path, headers=[(b"origin", b"http://127.0.0.1"), (b"cookie", f"sessionid={cookie}".encode())]
    )
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    await asyncio.get_running_loop().run_in_executor(None, publish_all)
    messages = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while not wanted(messages):
            remaining = deadline - loop.time()
            assert remaining > 0, f"WebSocket messages so far: {messages}"
            messages.append(await communicator.receive_json_from(timeout=remaining))
    finally:
        await communicator.disconnect()
    return messages


def alerts_of(messages):
    return [m["alert"] for m in messages if m["type"] == "alert"]


class Consumer:
    """A persistent-session ConsumerClient on `topic`, collecting (mid, payload) and topics as they arrive."""

    def __init__(self, client_id, topic):
        from django.conf import settings

        from apps.telemetry.sources.mqtt import ConsumerClient
        from iothub.mqtt import mqtt_client

        self.client, connect_kwargs = mqtt_client(
            settings.MQTT_URL, client_id=client_id, session_expiry=60, manual_ack=True, client_class=ConsumerClient
        )
        self.received = []
        self.topics = []
        self.subscribed = threading.Event()
        self.client.on_qos1_message = self.on_qos1_message
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_connect = lambda client, *args: client.subscribe(topic, qos=1)
        self.client.connect(**connect_kwargs)
        self.client.loop_start()
        assert self.subscribed.wait(10), "no SUBACK"

    def on_qos1_message(self, topic, payload, mid):
        self.received.append((mid, payload))
        self.topics.append(topic)

    def settle(self):
        """Return once the broker has read everything sent before: it handles one connection's
        packets in order, so the PUBACK of a publish sent now comes after our PUBACKs took effect.
        (Else a quick reconnect may take the session over before the broker has read them.)"""
        self.client.publish("test/ack/settled", b"", qos=1).wait_for_publish(10)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def last_fall_back_day(before):
    """The most recent last Sunday of October (Berlin's clocks go back: a 25-hour day) before `before`."""
    from datetime import date, timedelta

    for year in (before.year, before.year - 1):
        october_31 = date(year, 10, 31)
        day = october_31 - timedelta(days=(october_31.weekday() + 1) % 7)
        if day < before:
            return day
    raise AssertionError("unreachable: a year always has one")
