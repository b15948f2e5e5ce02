"""Best-effort monitoring writes (iothub.best_effort) against a real Redis, and one that is away."""

import logging

import pytest
import redis
from django.conf import settings

from iothub.best_effort import SKIPPED, BestEffort

from .support import free_port


def skipped(name):
    return SKIPPED.labels(name)._value.get()


def test_it_skips_and_counts_writes_while_redis_is_away_and_logs_the_outage_once(unique, caplog):
    write = BestEffort(f"test_{unique}")
    away = redis.Redis(port=free_port())  # nothing listens there
    answering = redis.Redis.from_url(settings.REDIS_URL)
    key = f"{settings.NAMESPACE}:best-effort-{unique}"
    with caplog.at_level(logging.INFO, logger="iothub.best_effort"):
        assert [write(away.set, key, 1) for _ in range(3)] == [None, None, None]
        assert skipped(write.name) == 3
        assert write(answering.set, key, 2) is True
        assert answering.get(key) == b"2"
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]  # its beginning and its end


def test_it_lets_other_errors_through(unique):
    write = BestEffort(f"test_{unique}")
    answering = redis.Redis.from_url(settings.REDIS_URL)
    with pytest.raises(redis.exceptions.ResponseError):
        write(answering.execute_command, "NO-SUCH-COMMAND")
    assert skipped(write.name) == 0
