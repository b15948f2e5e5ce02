"""Latest values in the real Redis: merged per metric, newest wins."""

from django.test import override_settings

from apps.telemetry.latest import get_latest, store_latest

from .support import latest_item


def check_merges(expected_store):
    store_latest([latest_item("dev-1", "temperature", 21.5, 1000), latest_item("dev-2", "temperature", 30.0, 1000, "warning")])
    # Another ingest process writes another metric of dev-1, and a late (older) temperature.
    store_latest([latest_item("dev-1", "humidity", 40.0, 900, None), latest_item("dev-1", "temperature", 19.0, 500)])
    store_latest([latest_item("dev-2", "temperature", 31.5, 2000, "critical")])
    assert expected_store() == {
        "dev-1": {
            "temperature": {"value": 21.5, "status": "normal", "ts": 1000},
            "humidity": {"value": 40.0, "status": None, "ts": 900},
        },
        "dev-2": {"temperature": {"value": 31.5, "status": "critical", "ts": 2000}},
    }


def test_it_keeps_the_newest_value_of_every_metric_in_redis(redis_client, settings):
    check_merges(lambda: get_latest(["dev-1", "dev-2", "dev-3"]))
    assert redis_client.hlen(f"{settings.NAMESPACE}:latest") == 2


@override_settings(REDIS_URL="")
def test_it_keeps_the_newest_value_of_every_metric_in_memory_for_the_demo():
    check_merges(lambda: get_latest(["dev-1", "dev-2", "dev-3"]))


def test_it_answers_nothing_for_no_devices():
    assert get_latest([]) == {}
