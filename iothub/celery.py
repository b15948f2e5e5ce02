import os

import orjson
from celery import Celery
from celery.signals import worker_process_init, worker_ready
from kombu.serialization import register

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iothub.settings")

# Task messages as JSON by orjson: the ingest hands every batch's rows to the alerts worker, and the
# standard library's encoder was a quarter of that hand-off's time. Same JSON, another content type.
register("orjson", orjson.dumps, orjson.loads, content_type="application/x-orjson", content_encoding="binary")

app = Celery("iothub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def enqueue(task_name, kwargs, **options):
    """Start a task by its name: for services that their app's tasks.py calls (importing it back
    would be an import loop), and for an app that may not import the one whose task it starts.
    Outside a worker autodiscovery is lazy, so the apps' task modules are imported on first use (a
    task unknown here would not run eagerly in the demo)."""
    if task_name not in app.tasks:
        app.loader.import_default_modules()
    app.tasks[task_name].apply_async(kwargs=kwargs, **options)


@worker_ready.connect  # the threads pool: tasks run in this process
@worker_process_init.connect  # the prefork pool: in each child
def tune_worker(**kwargs):
    from iothub.runtime import tune_garbage_collector

    tune_garbage_collector()


@worker_ready.connect
def serve_worker_metrics(**kwargs):
    """Prometheus metrics of the worker on IOTHUB_METRICS_ADDR:IOTHUB_WORKER_METRICS_PORT (0: off).
    The counters live in the process that runs the tasks: use the threads pool (docker/ does)."""
    from django.conf import settings
    from prometheus_client import start_http_server

    if settings.IOTHUB["WORKER_METRICS_PORT"]:
        start_http_server(settings.IOTHUB["WORKER_METRICS_PORT"], addr=settings.IOTHUB["METRICS_ADDR"])


def is_interval(entry):
    return isinstance(entry["schedule"], int | float)


def seconds_to_next(entry):
    """Seconds to a beat entry's next run: its interval, or the time to the next time of its crontab."""
    if is_interval(entry):
        return entry["schedule"]
    return entry["schedule"].remaining_estimate(entry["schedule"].now()).total_seconds()


def run_beat_inline(*, stop, write=print):
    """The demo's beat: run CELERY_BEAT_SCHEDULE's tasks in this process until `stop` is set."""
    import time

    app.loader.import_default_modules()  # every app's tasks, as a worker would load them
    schedule = app.conf.beat_schedule
    due = {name: time.monotonic() + (5 if is_interval(entry) else seconds_to_next(entry)) for name, entry in schedule.items()}
    while not stop.wait(1.0):
        for name, entry in schedule.items():
            if time.monotonic() >= due[name]:
                due[name] = time.monotonic() + seconds_to_next(entry)
                try:
                    app.tasks[entry["task"]].apply()
                except Exception as e:  # the demo keeps running; the error is shown
                    write(f"beat: {name} failed: {e}")
