"""Request coalescing of large answers (iothub.api.SharedWork), with real threads."""

import threading

import pytest

from iothub.api import SharedWork

from .support import eventually

CALLERS = 4


def run_together(work, key, compute, release):
    """CALLERS threads call work.run(key, compute); compute waits for `release`, which is set once
    every caller has called. Returns what each caller got (result or exception)."""
    results = [None] * CALLERS
    arrived = threading.Semaphore(0)

    def call(n):
        arrived.release()
        try:
            results[n] = work.run(key, compute)
        except Exception as error:  # noqa: BLE001  (what each caller saw)
            results[n] = error

    threads = [threading.Thread(target=call, args=(n,)) for n in range(CALLERS)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert arrived.acquire(timeout=5)
    # The callers that are not computing wait on the first caller's future (its condition).
    eventually(
        lambda: key in work.running and len(work.running[key]._condition._waiters) == CALLERS - 1,
        timeout=5,
        interval=0.01,
        message="every caller inside work.run",
    )
    release.set()
    for thread in threads:
        thread.join(5)
    return results


def test_it_computes_once_for_callers_that_arrive_meanwhile_and_again_afterwards():
    work = SharedWork()
    release = threading.Event()
    calls = []

    def compute():
        calls.append(1)
        release.wait(5)
        return f"answer {len(calls)}"

    assert run_together(work, "/api/v1/realtime/?factory=North", compute, release) == ["answer 1"] * CALLERS
    assert calls == [1]
    assert work.run("/api/v1/realtime/?factory=North", compute) == "answer 2"  # nothing kept
    assert work.run("/api/v1/realtime/?factory=South", lambda: "other") == "other"


def test_it_gives_every_waiting_caller_the_error():
    work = SharedWork()
    release = threading.Event()

    def compute():
        release.wait(5)
        raise ValueError("database away")

    results = run_together(work, "key", compute, release)
    assert [type(result) for result in results] == [ValueError] * CALLERS
    assert not work.running
    with pytest.raises(ValueError):
        work.run("key", compute)
