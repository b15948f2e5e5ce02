"""Writes that only feed monitoring (pipeline summaries, latest values, live pushes): while the
service they write to is away they are skipped and counted, never fatal to the process that makes
them. What must not be lost (readings, alert evaluation) is retried elsewhere, not here."""

import logging

import redis
from prometheus_client import Counter

log = logging.getLogger(__name__)

SKIPPED = Counter("iothub_best_effort_skipped_total", "Monitoring writes skipped while their service was away", ["write"])

# The cache, the latest values and the channel layer all reach Redis through redis-py.
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class BestEffort:
    """One kind of monitoring write, named for the logs and the counter: `write(function, *args)`
    calls function(*args), or counts and skips it when it fails with one of `errors`. An outage
    is logged when it begins and when it ends, not once per skipped call (a batch every few ms)."""

    def __init__(self, name, errors=REDIS_ERRORS):
        self.name = name
        self.errors = errors
        self.failing = False
        SKIPPED.labels(name)  # exported from the start, at 0

    def __call__(self, function, *args):
        try:
            result = function(*args)
        except self.errors as e:
            SKIPPED.labels(self.name).inc()
            if not self.failing:
                self.failing = True
                log.warning("%s: skipped until its service answers again (%s: %s)", self.name, type(e).__name__, e)
            return None
        if self.failing:
            self.failing = False
            log.info("%s: written again", self.name)
        return result
