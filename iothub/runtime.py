"""Process-wide tuning of the hub's long-running processes (web, ingest, worker)."""

import gc


def tune_garbage_collector():
    """Keep what exists after start-up out of the cyclic garbage collector's sight.

    Its full collections walk every object of the process (Django's app registry, the device
    master) and, next to answers of thousands of small dicts, were measured as pauses of tens of
    milliseconds in one realtime answer. Frozen objects are skipped. The thresholds stay as they
    are: under ASGI every request thread's database connection is closed only when the collector
    frees it, and rarer collections let idle connections pile up to PostgreSQL's limit.
    """
    gc.freeze()
