"""Process-wide tuning of the hub's long-running processes (web, ingest, worker)."""

import gc

tuned = False  # this process tuned its collector at start-up


def tune_garbage_collector():
    """Keep what exists after start-up out of the cyclic garbage collector's sight.

    Its full collections walk every object of the process (Django's app registry, the device
    master) and, next to answers of thousands of small dicts, were measured as pauses of tens of
    milliseconds in one realtime answer. Frozen objects are skipped. The thresholds stay as they
    are: under ASGI every request thread's database connection is closed only when the collector
    frees it, and rarer collections let idle connections pile up to PostgreSQL's limit.
    """
    global tuned
    gc.freeze()
    tuned = True


def keep_out_of_garbage_collection():
    """The same for what was loaded since (a new copy of the device master: 10,000s of objects
    that live until the next admin edit). Garbage in reference cycles is collected first, or it
    would stay frozen for good (under ASGI that includes requests' database connections): one
    full collection per admin edit. A copy that is replaced holds no reference cycles and is freed
    by reference counting. Only in the processes tuned at start-up (not in tests or a shell, which
    load copies far more often)."""
    if tuned:
        gc.collect()
        gc.freeze()
