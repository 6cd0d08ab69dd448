"""The cap on runs in flight, as the scheduler keeps it: free slots, waiting tasks."""

from __future__ import annotations

from taskmaster.shell.slots import RunSlots


def test_without_a_cap_nothing_is_counted_or_woken() -> None:
    slots = RunSlots(None, lambda: 10**6)

    assert slots.free() is None
    slots.decided("ns/a", 1.0)
    assert slots.wake() == []


def test_free_slots_count_active_jobs_and_runs_being_created() -> None:
    active = [3]
    slots = RunSlots(5, lambda: active[0])
    assert slots.free() == 2
    slots.reserved += 2
    assert (slots.free(), slots.in_flight) == (0, 5)
    active[0] = 9
    assert slots.free() == 0  # never below zero


def test_a_freed_slot_wakes_the_task_waiting_longest_once() -> None:
    active = [2]
    slots = RunSlots(2, lambda: active[0])
    slots.decided("ns/late", 30.0)
    slots.decided("ns/early", 10.0)
    slots.decided("ns/middle", 20.0)
    assert slots.wake() == []  # no slot free
    assert slots.waiting == 3

    active[0] = 1
    assert slots.wake() == [("ns/early", 10.0)]
    assert slots.wake() == []  # offered, and it has not decided yet
    slots.decided("ns/early", None)  # it took the slot
    active[0] = 0
    assert slots.wake() == [("ns/middle", 20.0), ("ns/late", 30.0)]


def test_a_task_that_still_waits_after_its_decision_is_woken_again_later() -> None:
    active = [1]
    slots = RunSlots(1, lambda: active[0])
    slots.decided("ns/a", 10.0)
    active[0] = 0
    assert slots.wake() == [("ns/a", 10.0)]
    slots.decided("ns/a", 10.0)  # another task took the slot first
    assert slots.wake() == [("ns/a", 10.0)]


def test_a_deleted_task_no_longer_waits() -> None:
    active = [1]
    slots = RunSlots(1, lambda: active[0])
    slots.decided("ns/a", 10.0)
    slots.forget("ns/a")
    active[0] = 0
    assert (slots.wake(), slots.waiting) == ([], 0)
