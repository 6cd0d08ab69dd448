"""Generated hostile ScheduledTask specs, and one pass of the pure pipeline over one.

Shared by the property test (tests/unit/test_hostile.py) and the benchmark's
slowest-reconcile row (bench/hostile.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from taskmaster.core.decide import MAX_RUNS_PER_DECISION, TaskState, decide
from taskmaster.core.names import TaskRef
from taskmaster.core.render import render_job
from taskmaster.core.schedule import MAX_TIME, MIN_TIME
from taskmaster.core.spec import InvalidSpec, TaskSpec, parse_task
from taskmaster.core.status import Observation, reduce_status

C = {"task": {"container": {"image": "busybox"}}}
HUGE = st.sampled_from([2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63)])
NUMBERS = st.one_of(
    st.integers(-10, 10**6),
    HUGE,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 59, 60, 86_399, 86_400, 86_401, 1000, 1001]),
)
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=20),
    st.text(min_size=200, max_size=400),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def instants() -> st.SearchStrategy[str]:
    offsets = st.sampled_from(["Z", "z", "+00:00", "-01:00", "+14:00", "-23:59", "+05:30"])
    years = st.one_of(
        st.integers(1, 9999), st.sampled_from([1, 1969, 1970, 2026, 2038, 2099, 2100, 9999])
    )
    return st.builds(
        lambda y, mo, d, h, mi, s, frac, off: (
            f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{off}"
        ),
        years,
        st.integers(1, 12),
        st.integers(1, 28),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
        st.sampled_from(["", ".5", ".999999", ".000000001"]),
        offsets,
    )


CRON_FIELD = st.one_of(
    st.sampled_from(["*", "0", "59", "60", "*/15", "H", "H/2", "H(0-29)", "R", "1-5", "5-5"]),
    st.sampled_from(["L", "W", "15W", "31W", "?", "MON", "MON-FRI", "1#2", "5L", "JAN"]),
    st.sampled_from(["*/0", "*/99999999999999999999", "0-99999", "-1", "a-b", "1,2,3,4,5"]),
    st.from_regex(r"[0-9*/,\-LW#?HR]{1,12}", fullmatch=True),
)
CRONS = st.one_of(
    st.lists(CRON_FIELD, min_size=5, max_size=6).map(" ".join),
    st.sampled_from(["@daily", "@hourly", "@yearly", "@reboot", "@every 5m", "0 0 30 2 *"]),
    st.text(max_size=40),
    st.text(min_size=190, max_size=260),
)
DURATIONS = st.one_of(
    st.builds(
        lambda n, unit: f"{n}{unit}",
        st.one_of(st.integers(0, 10**6), HUGE.filter(lambda n: n > 0)),
        st.sampled_from(["ns", "us", "µs", "ms", "s", "m", "h"]),
    ),
    st.sampled_from(
        ["1s", "1.5s", "0.5s", "1000000000ns", "8784h", "8785h", "1h30m", "99999999999h"]
    ),
    st.from_regex(r"([0-9]{1,20}(\.[0-9]{0,12})?(ns|us|ms|s|m|h)){1,4}", fullmatch=True),
    st.text(max_size=70),
)
ZONES = st.one_of(
    st.sampled_from(["UTC", "Europe/Berlin", "Australia/Lord_Howe", "America/New_York", ""]),
    st.sampled_from(["Mars/Olympus", "../../etc/passwd", "Europe/", "/UTC", "a" * 300]),
    st.text(max_size=70),
)
WORKLOADS = st.sampled_from(
    [
        {"task": {"container": {"image": "busybox", "args": ["true"]}}},
        {"task": {"http": {"url": "https://hooks.example/run", "successCodes": "200-299,304"}}},
        {"task": {"http": {"url": "https://hooks.example/run", "successCodes": "600-100"}}},
        {"task": {"http": {"url": "http://x", "method": "post", "timeoutSeconds": 10**12}}},
        {"jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
        # What the schema lets through a preserved-unknown-fields template.
        {"jobTemplate": {"spec": {"template": {"spec": None}}}},
        {"jobTemplate": {"spec": {"template": None}}},
        {"jobTemplate": {"spec": {"template": {"metadata": [], "spec": {"containers": "x"}}}}},
        {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"env": "x"}, None]}}}}},
        {"jobTemplate": {"spec": {"template": {"spec": {"initContainers": [{"env": None}]}}}}},
        {"task": {}},
        {},
    ]
)


def _field(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: mostly of its kind, sometimes anything at all."""
    return st.one_of(value, value, value, JUNK)


SPECS = st.fixed_dictionaries(
    {},
    optional={
        "schedule": _field(CRONS),
        "runAt": _field(instants()),
        "every": _field(DURATIONS),
        "timeZone": _field(ZONES),
        "startAt": _field(instants()),
        "endAt": _field(instants()),
        "maxRuns": _field(NUMBERS),
        "jitterSeconds": _field(NUMBERS),
        "suspend": _field(st.booleans()),
        "concurrencyPolicy": _field(st.sampled_from(["Allow", "Forbid", "Replace", "allow"])),
        "startingDeadlineSeconds": _field(NUMBERS),
        "missedRunPolicy": _field(st.sampled_from(["RunLatest", "RunAll", "Skip", "All"])),
        "timeoutSeconds": _field(NUMBERS),
        "retry": _field(
            st.fixed_dictionaries(
                {},
                optional={
                    "limit": _field(NUMBERS),
                    "backoff": _field(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "initialSeconds": _field(NUMBERS),
                                "factor": _field(NUMBERS),
                                "maxSeconds": _field(NUMBERS),
                            },
                        )
                    ),
                },
            )
        ),
        "successfulJobsHistoryLimit": _field(NUMBERS),
        "failedJobsHistoryLimit": _field(NUMBERS),
        "historyLimit": _field(NUMBERS),
        "stopAfterConsecutiveFailures": _field(NUMBERS),
        "schedules": _field(
            st.lists(
                _field(
                    st.fixed_dictionaries(
                        {"schedule": _field(CRONS)}, optional={"timeZone": _field(ZONES)}
                    )
                ),
                max_size=12,
            )
        ),
    },
).flatmap(lambda spec: WORKLOADS.map(lambda workload: {**workload, **spec}))

# The taskmaster.dev/backfill annotation: none, a request of any range, or anything.
BACKFILLS = st.one_of(
    st.none(),
    st.builds(
        lambda token, start, end: json.dumps({"token": token, "from": start, "to": end}),
        st.sampled_from(["b", "", "x" * 300]),
        instants(),
        instants(),
    ),
    st.text(max_size=40),
    st.just("x" * 2000),
)

NAMES = st.one_of(
    st.sampled_from(["t", "nightly-report", "x" * 63, "y" * 253, "z" * 254]),
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,70}[a-z0-9])?", fullmatch=True),
)
# When the operator looks, and where the status' cursor stands: anywhere in range.
INSTANTS = st.datetimes(
    min_value=MIN_TIME.replace(tzinfo=None),
    max_value=(MAX_TIME - timedelta(seconds=1)).replace(tzinfo=None),
    timezones=st.just(UTC),
)
# A cursor this far behind now: none, a little, a long downtime, or ahead (a clock step).
LAGS = st.one_of(
    st.none(), st.sampled_from([0, 1, 59, 61, 3600, 86_400, 10 * 86_400, -3600]).map(float)
)


def pipeline(
    raw: dict[str, Any], name: str, now: datetime, lag: float | None, backfill: str | None = None
) -> None:
    """Parse, decide, render and reduce once, as a reconcile does; fail on anything foreign."""
    created = now - timedelta(days=1)
    body = {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": "uid",
            "generation": 1,
            "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": raw,
    }
    try:
        spec: TaskSpec = parse_task(body, now=now)
    except InvalidSpec as invalid:
        refused = invalid
    else:
        refused = None
    if refused is not None:
        assert refused.errors, "a refusal says why"
        for error in refused.errors:
            assert error.path == "spec" or error.path.startswith(("spec.", "metadata.name"))
            assert error.message
        reduce_status({}, Observation(None, [], now, 1, invalid=refused))
        return
    ref = TaskRef("ns", name, "uid")
    cursor = None
    if lag is not None:
        cursor = max(MIN_TIME, min(now - timedelta(seconds=lag), MAX_TIME))
    plan = decide(TaskState(ref, spec, [], cursor, since=created, backfill_request=backfill), now)
    assert len(plan.create) <= MAX_RUNS_PER_DECISION
    for run in plan.create:
        job = render_job(ref, spec, run, worker_image="worker:1")
        assert len(job["metadata"]["name"]) <= 63
        assert int(job["metadata"]["labels"]["taskmaster.dev/scheduled-time"]) >= 0
    update = reduce_status(
        {},
        Observation(
            spec,
            [],
            now,
            1,
            records=plan.records,
            last_schedule_time=plan.last_schedule_time,
            next_run_time=plan.next_run_time,
            backfill=plan.backfill.to_status() if plan.backfill else None,
        ),
    )
    assert update.status["phase"] != "Invalid"
