"""Process-wide tuning of the hub's long-running processes (web, ingest, worker)."""

import gc

TUNED = []  # not empty once this process tuned its collector


def tune_garbage_collector():
    """Keep what exists after start-up out of the cyclic garbage collector's sight.

    Its full collections walk every object of the process (Django's app registry, the device
    master) and, next to answers of thousands of small dicts, were measured as pauses of tens of
    milliseconds in one realtime answer. Frozen objects are skipped. The thresholds stay as they
    are: under ASGI every request thread's database connection is closed only when the collector
    frees it, and rarer collections let idle connections pile up to PostgreSQL's limit.
    """
    gc.freeze()
    TUNED.append(True)


def keep_out_of_garbage_collection():
    """The same for what was loaded since (a new copy of the device master: 10,000s of objects
    that live until the next admin edit). A copy that is replaced holds no reference cycles and is
    freed by reference counting; what other threads had in cycles at this moment stays frozen
    with it, a few requests' worth, once per admin edit. Only in the processes tuned at start-up
    (not in tests or a shell, which load copies far more often)."""
    if TUNED:
        gc.freeze()
