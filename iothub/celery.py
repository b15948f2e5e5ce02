import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iothub.settings")

app = Celery("iothub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def run_beat_inline(*, stop, write=print):
    """The demo's beat: run CELERY_BEAT_SCHEDULE's tasks in this process until `stop` is set."""
    import time

    schedule = app.conf.beat_schedule
    due = {name: time.monotonic() + 5 for name in schedule}
    while not stop.wait(1.0):
        for name, entry in schedule.items():
            if time.monotonic() >= due[name]:
                due[name] = time.monotonic() + entry["schedule"]
                try:
                    app.tasks[entry["task"]].apply()
                except Exception as e:  # the demo keeps running; the error is shown
                    write(f"beat: {name} failed: {e}")
