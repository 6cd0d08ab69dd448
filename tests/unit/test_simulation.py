"""The core driven as the operator drives it, through simulated days full of faults.

Seeded and reproducible (tests/support/simulation.py says what it injects and
checks). A seed that once failed stays here as a regression test.
"""

from __future__ import annotations

import pytest

from tests.support.simulation import Simulation

# 4 seeds x 250 tasks x 2 days: 2,000 simulated task-days per make test.
SEEDS = (1, 2, 3, 4)
TASKS = 250
DAYS = 2.0


@pytest.mark.parametrize("seed", SEEDS)
def test_every_invariant_holds_through_simulated_days(seed: int) -> None:
    tally = Simulation(seed, tasks=TASKS, days=DAYS).run()

    # The faults were exercised, not only the happy path.
    assert tally.decisions > TASKS * DAYS * 24
    assert tally.jobs > 0
    assert min(tally.late, tally.lost_writes, tally.restarts, tally.suspends) > 0
    assert min(tally.edits, tally.run_nows) > 0
    print(f"seed {seed}: {tally}")


@pytest.mark.parametrize("seed", [5])
def test_every_invariant_holds_with_a_cap_on_runs_in_flight(seed: int) -> None:
    # 250 tasks, most with runs of minutes to half an hour, under a cap of 15: it binds
    # most of the time, runs wait, and some wait past their starting deadline.
    tally = Simulation(seed, tasks=TASKS, days=0.5, max_active_runs=15).run()

    assert tally.jobs > 0
    assert tally.waits > 0
    assert tally.missed_waiting > 0
    print(f"seed {seed}: {tally}")
