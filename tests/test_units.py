"""Pure functions, no service needed (`pytest -m "not services"`)."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings

from apps.bench.benchmarks import percentile
from apps.telemetry.timescale import PolicySettingsError, policy_intervals


def iothub_settings(**changes):
    return override_settings(IOTHUB={**settings.IOTHUB, **changes})


def test_policy_intervals_follow_the_settings():
    with iothub_settings(MAX_PAST_AGE=2 * 86400, RETENTION_DAYS=30, HOURLY_RETENTION_DAYS=365):
        assert policy_intervals() == (timedelta(days=3), timedelta(days=30), timedelta(days=365), timedelta(days=3))
    # The refresh window never reaches further back than the raw readings are kept.
    with iothub_settings(MAX_PAST_AGE=7 * 86400, RETENTION_DAYS=5, HOURLY_RETENTION_DAYS=365):
        assert policy_intervals()[3] == timedelta(days=5) - timedelta(hours=1)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"MAX_PAST_AGE": -1}, "IOTHUB_MAX_PAST_AGE"),
        ({"RETENTION_DAYS": 1}, "IOTHUB_RETENTION_DAYS"),
        ({"HOURLY_RETENTION_DAYS": 8, "MAX_PAST_AGE": 7 * 86400, "RETENTION_DAYS": 30}, "IOTHUB_HOURLY_RETENTION_DAYS"),
    ],
)
def test_policy_intervals_refuse_what_the_policies_cannot_follow(changes, named):
    with iothub_settings(**changes), pytest.raises(PolicySettingsError, match=named):
        policy_intervals()


def test_percentile_is_nearest_rank():
    samples = list(range(1, 101))
    assert [percentile(samples, p) for p in (1, 50, 99, 100)] == [1, 50, 99, 100]
    assert percentile([5.0, 7.0], 50) == 5.0
    assert percentile([], 99) is None
