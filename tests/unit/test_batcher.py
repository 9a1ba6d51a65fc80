"""The dynamic batcher: batches up to max_rows, a bounded queue, a worker that outlives errors."""

from __future__ import annotations

import threading
import time

import pytest

from ptune.batcher import Batcher, Overloaded


def _held(max_rows=4, max_queue=64, window_s=0.05):
    """A batcher whose first batch waits at a gate, so that later jobs queue up."""
    gate, batches = threading.Event(), []

    def run(jobs):
        gate.wait(10)
        batches.append([j.payload for j in jobs])
        for j in jobs:
            if j.payload == "bad":
                raise ValueError("bad payload")
            if j.payload != "silent":
                j.future.set_result(j.payload)

    return Batcher(run, max_rows=max_rows, max_queue=max_queue, window_s=window_s), gate, batches


def test_jobs_are_batched_up_to_max_rows_in_order():
    b, gate, batches = _held(max_rows=4)
    futures = [b.submit(i, rows=1) for i in range(10)] + [b.submit("big", rows=9), b.submit(10, rows=3)]
    gate.set()
    assert [f.result(timeout=10) for f in futures] == list(range(10)) + ["big", 10]
    b.close()
    assert [x for batch in batches for x in batch] == list(range(10)) + ["big", 10]
    assert ["big"] in batches  # larger than max_rows: alone
    sizes = {tuple(batch): sum(3 if x == 10 else 1 for x in batch) for batch in batches if batch != ["big"]}
    assert max(sizes.values()) <= 4 and len(batches) < 12


def test_a_full_queue_refuses_at_once():
    b, gate, _ = _held(max_rows=1, max_queue=2)
    first = b.submit("a")
    while b.waiting:  # the worker took "a" and waits at the gate
        pass
    queued = [b.submit("b"), b.submit("c")]
    with pytest.raises(Overloaded, match="2 requests are waiting"):
        b.submit("d")
    gate.set()
    assert [f.result(timeout=10) for f in [first, *queued]] == ["a", "b", "c"]
    b.close()


def test_errors_fail_only_their_batch_and_the_worker_goes_on():
    b, gate, _ = _held(max_rows=1)
    gate.set()
    with pytest.raises(ValueError, match="bad payload"):
        b.submit("bad").result(timeout=10)
    with pytest.raises(RuntimeError, match="without an answer"):
        b.submit("silent").result(timeout=10)
    assert b.submit("fine").result(timeout=10) == "fine"
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.submit("late")


def test_jobs_that_keep_coming_join_one_batch_until_max_wait():
    sizes = []
    b = Batcher(lambda jobs: [sizes.append(len(jobs))] + [j.future.set_result(None) for j in jobs],
                max_rows=100, window_s=0.6, max_wait_s=10.0)
    futures = []
    for _ in range(4):  # 0.9 s from the first to the last, each within the window of the one before
        futures.append(b.submit(None))
        time.sleep(0.3)
    for f in futures:
        f.result(timeout=10)
    b.close()
    assert sizes == [4]
    with pytest.raises(ValueError, match="max_wait_s"):
        Batcher(lambda jobs: None, window_s=1.0, max_wait_s=0.5)


def test_on_batch_sees_every_job_settled_even_when_the_batch_failed():
    b, gate, _ = _held(max_rows=1)
    seen = []
    b.on_batch = lambda jobs: seen.append([(j.payload, j.future.done()) for j in jobs])
    gate.set()
    for payload in ("fine", "bad", "silent"):
        b.submit(payload).exception(timeout=10)
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:  # the hook runs just after the futures settle
        time.sleep(0.01)
    b.on_batch = lambda jobs: 1 / 0  # an error in the hook does not stop the worker
    assert b.submit("after").result(timeout=10) == "after"
    b.close()
    assert seen == [[("fine", True)], [("bad", True)], [("silent", True)]]
