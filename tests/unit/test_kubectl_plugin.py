"""The kubectl plugin without a cluster: its command line and what it prints."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskmaster.core.names import Run, Trigger, job_name
from taskmaster.kubectl import view
from taskmaster.kubectl.cli import build_parser
from taskmaster.kubectl.view import PluginError

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (NOW + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def task(name: str = "report", namespace: str = "ops", **fields: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": at(-3600)},
        "spec": fields.pop("spec", {"every": "5m"}),
        "status": fields.pop("status", {}),
        **fields,
    }


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (303, "5m3s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 25 * 60, "3h25m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (2 * 86400, "2d"),
        (2 * 86400 + 4 * 3600, "2d4h"),
        (8 * 86400, "8d"),
        (400 * 86400, "400d"),
        (3 * 365 * 86400 + 10 * 86400, "3y10d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_durations_read_as_kubectl_ages(seconds: int, shown: str) -> None:
    assert view.human_duration(timedelta(seconds=seconds)) == shown


def test_next_run_reads_ahead_due_or_overdue() -> None:
    assert view.until_next(NOW + timedelta(seconds=303), NOW) == "in 5m3s"
    assert view.until_next(NOW + timedelta(milliseconds=300), NOW) == "now"
    assert view.until_next(NOW - timedelta(seconds=1), NOW) == "now"
    assert view.until_next(NOW - timedelta(minutes=5), NOW) == "overdue 5m"
    assert view.until_next(None, NOW) == "<none>"
    assert view.age(None, NOW) == "<none>"


def test_tables_align_columns_three_spaces_apart() -> None:
    assert view.table(("NAME", "PHASE"), [["a", "Scheduled"], ["longer", "x"]]) == (
        "NAME     PHASE\na        Scheduled\nlonger   x"
    )


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        ({"schedule": "*/5 * * * *"}, "*/5 * * * *"),
        ({"schedule": "0 3 * * *", "timeZone": "UTC"}, "0 3 * * *"),
        ({"schedule": "0 3 * * *", "timeZone": "Europe/Paris"}, "0 3 * * * (Europe/Paris)"),
        ({"every": "1h30m"}, "every 1h30m"),
        ({"runAt": "2026-05-01T12:00:00Z"}, "at 2026-05-01T12:00:00Z"),
        (
            {
                "schedules": [
                    {"schedule": "0 9 * * *", "timeZone": "Europe/Paris"},
                    {"schedule": "@daily"},
                ]
            },
            "0 9 * * * (Europe/Paris) | @daily",
        ),
        ({}, "<none>"),
    ],
)
def test_the_schedule_column(spec: dict[str, Any], shown: str) -> None:
    assert view.schedule_of(spec) == shown


WORKLOAD = {"task": {"container": {"image": "busybox"}}}


def test_list_shows_last_and_next_run_and_the_last_result() -> None:
    running = task(
        "backup",
        spec={"schedule": "0 * * * *", "suspend": False, **WORKLOAD},
        status={
            "phase": "Scheduled",
            "lastScheduleTime": at(-303),
            "nextRunTime": at(3297),
            "history": [{"scheduledTime": at(-303), "result": "Failed"}],
        },
    )
    fresh = task("aaa", namespace="zz", spec={"every": "30s", "suspend": True})

    assert view.list_table([running, fresh], NOW, all_namespaces=False).splitlines() == [
        "NAME     SCHEDULE    DESCRIPTION       SUSPEND   PHASE       LAST RUN   NEXT RUN"
        "   LAST RESULT",
        "backup   0 * * * *   Every hour, UTC   false     Scheduled   5m3s       in 54m     Failed",
        "aaa      every 30s   <invalid spec>    true      <none>      <none>     <none>     <none>",
    ]
    everywhere = view.list_table([fresh, running], NOW, all_namespaces=True).splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert [line.split()[:2] for line in everywhere[1:]] == [["ops", "backup"], ["zz", "aaa"]]


HISTORY = [
    {
        "scheduledTime": at(-60),
        "jobName": "report-m0123456789",
        "attempt": 1,
        "trigger": "manual",
        "startTime": at(-60),
        "completionTime": at(-57),
        "result": "Succeeded",
        "reason": "CompletionsReached",
    },
    {
        "scheduledTime": at(-300),
        "jobName": "report-1777636500-2",
        "attempt": 2,
        "trigger": "retry",
        "startTime": at(-290),
        "completionTime": at(-100),
        "result": "Failed",
        "reason": "BackoffLimitExceeded",
        "message": "exit code 3 (Error): disk\nfull",
    },
    {
        "scheduledTime": at(-600),
        "trigger": "schedule",
        "result": "Skipped",
        "reason": "ConcurrencyPolicyForbid",
    },
]


def test_the_history_table_newest_first_with_durations_and_messages() -> None:
    assert view.history_table({"history": HISTORY}).splitlines() == [
        "SCHEDULED              TRIGGER    ATTEMPT   RESULT      DURATION   JOB"
        "                   MESSAGE",
        "2026-05-01T11:59:00Z   manual     1         Succeeded   3s         report-m0123456789"
        "    <none>",
        "2026-05-01T11:55:00Z   retry      2         Failed      3m10s      report-1777636500-2"
        "   exit code 3 (Error): disk full",
        "2026-05-01T11:50:00Z   schedule   1         Skipped     <none>     <none>"
        "                ConcurrencyPolicyForbid",
    ]
    assert view.history_json({"history": HISTORY}) == HISTORY


def test_long_messages_are_cut_to_one_line() -> None:
    assert view.one_line("a\n  b") == "a b"
    cut = view.one_line("x" * 200)
    assert len(cut) == 80
    assert cut.endswith("...")


def test_runs_count_from_the_newest_including_active_jobs() -> None:
    status = {
        "active": [{"jobName": "report-1777637100", "scheduledTime": at(0), "attempt": 1}],
        "history": HISTORY,
    }

    runs = view.runs_with_jobs(status)

    assert [(r.job_name, r.result) for r in runs] == [
        ("report-1777637100", "Running"),
        ("report-m0123456789", "Succeeded"),
        ("report-1777636500-2", "Failed"),
    ]
    assert view.select_run(task(status=status), 1).job_name == "report-1777637100"
    assert view.select_run(task(status=status), 3).job_name == "report-1777636500-2"


def test_run_selection_says_what_is_missing() -> None:
    with pytest.raises(
        PluginError, match=r'^scheduledtask "report" in namespace "ops" has no runs'
    ):
        view.select_run(task(status={"history": [HISTORY[2]]}), 1)
    with pytest.raises(
        PluginError, match=r"has 2 runs with a Job in its history; there is no run 3"
    ):
        view.select_run(task(status={"history": HISTORY}), 3)
    with pytest.raises(PluginError, match=r"--run must be 1 or more"):
        view.select_run(task(status={"history": HISTORY}), 0)


def pod(name: str, created: str, containers: list[str], default: str | None = None) -> Any:
    annotations = {"kubectl.kubernetes.io/default-container": default} if default else {}
    return {
        "metadata": {"name": name, "creationTimestamp": created, "annotations": annotations},
        "spec": {"containers": [{"name": c} for c in containers]},
    }


def test_the_newest_pod_and_its_default_container() -> None:
    first, retried = pod("j-a", at(-10), ["main"]), pod("j-b", at(-5), ["side", "main"], "main")

    assert view.newest_pod([retried, first]) is retried
    assert view.newest_pod([]) is None
    assert view.default_container(first) == "main"
    assert view.default_container(retried) == "main"
    assert view.default_container(pod("j-c", at(0), ["side", "main"])) == "side"
    with pytest.raises(PluginError, match="has no containers"):
        view.default_container(pod("j-d", at(0), []))


def test_run_now_tokens_are_fresh_and_name_one_manual_job_each() -> None:
    first, second = view.run_now_token(NOW), view.run_now_token(NOW)

    assert re.fullmatch(r"kubectl-20260501T120000Z-[0-9a-f]{6}", first)
    assert first != second
    names = {job_name("report", Run(NOW, 1, Trigger.MANUAL, token)) for token in (first, second)}
    assert len(names) == 2


def test_describe_summarises_spec_status_conditions_history_and_events() -> None:
    described = view.describe(
        task(
            spec={
                "schedule": "0 3 * * *",
                "timeZone": "Europe/Paris",
                "concurrencyPolicy": "Forbid",
                "retry": {"limit": 2, "backoff": {"initialSeconds": 10}},
                "timeoutSeconds": 600,
                "task": {"container": {"image": "busybox:1.36", "command": ["sh", "-c", "date"]}},
            },
            status={
                "phase": "Running",
                "nextRunTime": at(3600),
                "lastScheduleTime": at(0),
                "succeededRuns": 4,
                "failedRuns": 1,
                "active": [{"jobName": "report-1777637100", "scheduledTime": at(0), "attempt": 1}],
                "history": HISTORY,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Scheduled",
                        "message": "next run at " + at(3600),
                        "lastTransitionTime": at(-120),
                    }
                ],
            },
            metadata={
                "name": "report",
                "namespace": "ops",
                "creationTimestamp": at(-7200),
                "annotations": {"taskmaster.dev/run-now": "tok-1"},
            },
        ),
        [
            {
                "type": "Normal",
                "reason": "JobCreated",
                "eventTime": at(-30),
                "reportingController": "taskmaster.dev/operator",
                "note": "created Job report-1777637100",
            }
        ],
        NOW,
    )

    lines = described.splitlines()
    assert lines[:4] == [
        "Name:               report",
        "Namespace:          ops",
        "Created:            2026-05-01T10:00:00Z (120m ago)",
        "Schedule:           0 3 * * * (Europe/Paris)",
    ]
    for line in (
        "Concurrency Policy: Forbid",
        "Retry:              up to 2 (backoff initialSeconds=10)",
        "Timeout:            600s",
        "Workload:           container busybox:1.36: sh -c date",
        "Phase:              Running",
        "Next Run:           2026-05-01T13:00:00Z (in 60m)",
        "Last Schedule:      2026-05-01T12:00:00Z (0s ago)",
        "Last Failure:       <none>",
        "Runs:               4 succeeded, 1 failed, 0 missed",
        "Run-now Token:      tok-1",
        "  Ready   True     Scheduled   2m    next run at 2026-05-01T13:00:00Z",
        "  report-1777637100   2026-05-01T12:00:00Z   1",
        "  Normal   JobCreated   30s   taskmaster.dev/operator   created Job report-1777637100",
    ):
        assert line in lines, line
    sections = [line for line in lines if not line.startswith(" ") and line.endswith(":")]
    assert sections == ["Conditions:", "Active Jobs:", "History:", "Events:"]


def test_describe_of_a_fresh_task_says_none() -> None:
    described = view.describe(task(), [], NOW)

    assert described.endswith(
        "Conditions:\n  <none>\nActive Jobs:\n  <none>\nHistory:\n  <none>\nEvents:\n  <none>"
    )


def test_connection_flags_go_before_or_after_the_command() -> None:
    parser = build_parser()

    before = parser.parse_args(["-n", "ops", "--context", "prod", "list", "-A"])
    after = parser.parse_args(["list", "-n", "ops", "--kubeconfig", "/k", "-o", "json"])
    plain = parser.parse_args(["describe", "report"])

    assert (before.namespace, before.context, before.all_namespaces) == ("ops", "prod", True)
    assert (after.namespace, after.kubeconfig, after.output) == ("ops", "/k", "json")
    assert (plain.namespace, plain.kubeconfig, plain.context) == (None, None, None)
    assert plain.request_timeout == 30.0


def test_command_arguments() -> None:
    parser = build_parser()

    logs = parser.parse_args(["logs", "report", "--run", "2", "-c", "main", "-f"])
    run = parser.parse_args(["run", "report", "--wait", "--timeout", "5"])
    suspend = parser.parse_args(["suspend", "a", "b"])

    assert (logs.name, logs.run, logs.container, logs.follow) == ("report", 2, "main", True)
    assert parser.parse_args(["logs", "report"]).run == 1
    assert (run.name, run.wait, run.timeout) == ("report", True, 5.0)
    assert suspend.names == ["a", "b"]


@pytest.mark.parametrize(
    "argv",
    [[], ["logs", "report", "--run", "0"], ["describe"], ["history", "x", "-o", "yaml"], ["nope"]],
)
def test_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)

    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("usage: kubectl taskmaster")
