"""The scheduler's work queue, on its own: urgency, one op per task, wake-ups, draining."""

from __future__ import annotations

from taskmaster.shell.workqueue import WorkQueue


def test_the_most_urgent_op_comes_first_and_a_later_request_does_not_delay_it() -> None:
    queue = WorkQueue(concurrency=10)
    queue.add(("ns/late", False), 30.0)
    queue.add(("ns/soon", False), 10.0)
    queue.add(("ns/soon", False), 20.0)  # less urgent than what is queued: no change

    assert queue.take() == [("ns/soon", False), ("ns/late", False)]


def test_a_more_urgent_request_moves_a_queued_op_ahead() -> None:
    queue = WorkQueue(concurrency=10)
    queue.add(("ns/a", False), 10.0)
    queue.add(("ns/b", False), 20.0)

    assert queue.add(("ns/b", False), 5.0)
    assert queue.take() == [("ns/b", False), ("ns/a", False)]


def test_a_tasks_next_op_waits_for_the_one_in_flight() -> None:
    queue = WorkQueue(concurrency=10)
    queue.add(("ns/t", False), 1.0)
    assert queue.take() == [("ns/t", False)]
    queue.add(("ns/t", True), 2.0)
    queue.add(("ns/u", False), 3.0)

    assert queue.take() == [("ns/u", False)]
    queue.done("ns/t")
    assert queue.take() == [("ns/t", True)]


def test_no_more_ops_than_free_slots_are_handed_out() -> None:
    queue = WorkQueue(concurrency=2)
    for index in range(5):
        queue.add((f"ns/t{index}", False), float(index))

    assert [key for key, _ in queue.take()] == ["ns/t0", "ns/t1"]
    assert queue.take() == []
    queue.done("ns/t0")
    assert [key for key, _ in queue.take()] == ["ns/t2"]


def test_a_wake_up_queues_the_reconcile_when_due_and_the_latest_request_wins() -> None:
    queue = WorkQueue(concurrency=10)
    queue.wake("ns/t", 50.0)
    queue.wake("ns/t", 40.0)  # replaces the first

    queue.wake_due(39.0)
    assert queue.take() == []
    assert queue.next_wake() == 40.0
    queue.wake_due(45.0)
    assert queue.take() == [("ns/t", False)]
    queue.done("ns/t")
    queue.wake_due(60.0)  # the replaced wake-up at 50 wakes nothing
    assert queue.take() == []


def test_a_forgotten_wake_up_wakes_nothing() -> None:
    queue = WorkQueue(concurrency=10)
    queue.wake("ns/t", 10.0)

    assert queue.wake("ns/t", None)
    queue.wake_due(20.0)
    assert queue.take() == []


def test_while_draining_only_records_are_handed_out() -> None:
    queue = WorkQueue(concurrency=10)
    queue.add(("ns/a", False), 1.0)
    queue.add(("ns/b", True), 2.0)
    queue.draining = True

    assert queue.take() == [("ns/b", True)]


def test_clearing_forgets_queued_ops_but_keeps_wake_ups() -> None:
    queue = WorkQueue(concurrency=10)
    queue.add(("ns/a", False), 1.0)
    queue.wake("ns/b", 5.0)

    queue.clear()
    assert queue.take() == []
    queue.wake_due(5.0)
    assert queue.take() == [("ns/b", False)]


def test_a_reconcile_dropped_while_draining_can_be_queued_again() -> None:
    queue = WorkQueue(concurrency=10)
    queue.add(("ns/a", False), 1.0)
    queue.draining = True
    assert queue.take() == []

    queue.draining = False
    assert queue.add(("ns/a", False), 2.0)
    assert queue.take() == [("ns/a", False)]
