"""The kubectl plugin against the real cluster, invoked as users invoke it.

Through kubectl's own plugin discovery (`kubectl taskmaster …`, the console
script found on PATH) and as the console script itself with `--context`; the
tests read what a user reads: the tables' columns and values, the messages.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from taskmaster.core.times import rfc3339
from tests.support.operator import OperatorProcess
from tests.support.plugin import User, ok, table
from tests.support.tasks import Tasks, condition, job_template, phase
from tests.support.wait import until

ROOT = Path(__file__).resolve().parents[2]
# The log line every simulated pod serves: the message of the CRI-format line.
SIMULATED_LOG = (ROOT / "hack" / "kwok" / "container.log").read_text().split(" ", 3)[3].rstrip("\n")
AGE = r"(\d+[smhdy])+"


def test_list_describe_and_history_show_real_runs(
    operator: OperatorProcess, tasks: Tasks, user: User, namespace: str
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    tasks.create("tick", {"every": "2s", "jobTemplate": job_template("100ms")})
    tasks.create(
        "broken", {"runAt": rfc3339(at), "jobTemplate": job_template(exit_code=3, message="disk")}
    )
    tick = tasks.wait("tick", lambda t: t.get("status", {}).get("succeededRuns", 0) >= 2)
    tasks.wait("broken", lambda t: phase(t) == "Failed")

    rows = {row["NAME"]: row for row in table(ok(user.kubectl("list")))}

    assert list(rows) == ["broken", "tick"]
    assert list(rows["tick"]) == [
        "NAME",
        "SCHEDULE",
        "DESCRIPTION",
        "SUSPEND",
        "PHASE",
        "LAST RUN",
        "NEXT RUN",
        "LAST RESULT",
    ]
    assert rows["tick"]["SCHEDULE"] == "every 2s"
    assert rows["tick"]["DESCRIPTION"] == "Every 2 seconds"
    assert rows["broken"]["DESCRIPTION"] == f"Once, at {rfc3339(at)}"
    assert rows["tick"]["SUSPEND"] == "false"
    assert rows["tick"]["PHASE"] in ("Scheduled", "Running")
    assert re.fullmatch(AGE, rows["tick"]["LAST RUN"])
    assert re.fullmatch(rf"in {AGE}|now", rows["tick"]["NEXT RUN"])
    assert rows["tick"]["LAST RESULT"] == "Succeeded"
    assert rows["broken"]["SCHEDULE"] == f"at {rfc3339(at)}"
    assert rows["broken"]["PHASE"] == "Failed"
    assert rows["broken"]["NEXT RUN"] == "<none>"
    assert rows["broken"]["LAST RESULT"] == "Failed"

    everywhere = [
        row for row in table(ok(user.plugin("list", "-A"))) if row["NAMESPACE"] == namespace
    ]
    assert [row["NAME"] for row in everywhere] == ["broken", "tick"]

    history = table(ok(user.kubectl("history", "tick")))
    assert len(history) >= 2
    newest = history[0]
    assert list(newest) == [
        "SCHEDULED",
        "TRIGGER",
        "ATTEMPT",
        "RESULT",
        "DURATION",
        "JOB",
        "MESSAGE",
    ]
    assert [row["SCHEDULED"] for row in history] == sorted(
        (row["SCHEDULED"] for row in history), reverse=True
    )
    entry = tick["status"]["history"][-1]  # still in the history: it was there first
    (row,) = [row for row in history if row["JOB"] == entry["jobName"]]
    assert row == {
        "SCHEDULED": entry["scheduledTime"],
        "TRIGGER": "schedule",
        "ATTEMPT": "1",
        "RESULT": "Succeeded",
        "DURATION": row["DURATION"],
        "JOB": entry["jobName"],
        "MESSAGE": "<none>",
    }
    assert re.fullmatch(AGE, row["DURATION"])
    scripted = json.loads(ok(user.plugin("history", "tick", "-o", "json")))
    assert scripted[-1]["jobName"] == entry["jobName"]

    described = ok(user.kubectl("describe", "broken"))
    assert re.search(r"^Name:\s+broken$", described, re.M)
    assert re.search(rf"^Namespace:\s+{namespace}$", described, re.M)
    assert re.search(rf"^Schedule:\s+at {re.escape(rfc3339(at))}$", described, re.M)
    assert re.search(rf"^Description:\s+Once, at {re.escape(rfc3339(at))}$", described, re.M)
    assert re.search(r"^Phase:\s+Failed$", described, re.M)
    assert re.search(r"^Runs:\s+0 succeeded, 1 failed, 0 missed$", described, re.M)
    sections = re.split(r"^(Conditions|Active Jobs|History|Events):$", described, flags=re.M)
    parts = dict(zip(sections[1::2], sections[2::2], strict=True))
    conditions = {row["TYPE"]: row for row in table(_dedent(parts["Conditions"]))}
    assert (conditions["Degraded"]["STATUS"], conditions["Degraded"]["REASON"]) == (
        "True",
        "RunFailed",
    )
    assert conditions["Ready"]["REASON"] == "NoRunsLeft"
    assert parts["Active Jobs"].strip() == "<none>"
    (failed,) = table(_dedent(parts["History"]))
    assert failed["SCHEDULED"] == rfc3339(at)
    assert failed["RESULT"] == "Failed"
    assert failed["MESSAGE"] == "exit code 3 (Error): disk"
    reasons = [row["REASON"] for row in table(_dedent(parts["Events"]))]
    assert "JobCreated" in reasons


def _dedent(block: str) -> str:
    return "\n".join(line[2:] for line in block.strip("\n").splitlines())


def test_run_starts_exactly_one_manual_job_per_call(
    operator: OperatorProcess, tasks: Tasks, user: User
) -> None:
    # Suspended and far from its next time: only a manual run can start a Job.
    tasks.create(
        "nightly",
        {"schedule": "0 3 * * *", "suspend": True, "jobTemplate": job_template("100ms")},
    )
    tasks.wait("nightly", lambda t: phase(t) == "Suspended")
    recorder = tasks.recorder()

    first = user.plugin("run", "nightly", "--wait")

    lines = ok(first).splitlines()
    token = re.fullmatch(
        r"scheduledtasks\.taskmaster\.dev/nightly run requested \(token (kubectl-\S+)\)", lines[0]
    )
    assert token, lines
    job = re.fullmatch(r"job\.batch/(nightly-m[0-9a-f]{10}) created", lines[1])
    assert job, lines
    (created,) = tasks.jobs("nightly")
    assert created.metadata.name == job[1]
    assert created.metadata.labels["taskmaster.dev/trigger"] == "manual"
    assert created.metadata.annotations["taskmaster.dev/run-now"] == token[1]
    assert tasks.get("nightly")["metadata"]["annotations"]["taskmaster.dev/run-now"] == token[1]

    tasks.wait(
        "nightly", lambda t: any(e["jobName"] == job[1] for e in t["status"].get("history", []))
    )
    second = ok(user.kubectl("run", "nightly", "--wait")).splitlines()
    assert second[1] != lines[1]
    recorder.wait_for(2, "nightly")
    tasks.wait("nightly", lambda t: len(t["status"].get("history", [])) >= 2)
    history = table(ok(user.kubectl("history", "nightly")))
    assert [(row["TRIGGER"], row["RESULT"]) for row in history] == [
        ("manual", "Succeeded"),
        ("manual", "Succeeded"),
    ]
    assert len(recorder.jobs("nightly")) == 2
    recorder.close()


def test_suspend_and_resume_flip_the_spec_and_the_phase(
    operator: OperatorProcess, tasks: Tasks, user: User
) -> None:
    tasks.create("hourly", {"every": "1h", "jobTemplate": job_template()})
    tasks.wait("hourly", lambda t: phase(t) == "Scheduled")

    assert (
        ok(user.kubectl("suspend", "hourly")) == "scheduledtasks.taskmaster.dev/hourly suspended\n"
    )

    task = tasks.wait("hourly", lambda t: phase(t) == "Suspended")
    assert task["spec"]["suspend"] is True
    assert condition(task, "Suspended")["status"] == "True"
    (row,) = table(ok(user.plugin("list")))
    assert (row["SUSPEND"], row["PHASE"]) == ("true", "Suspended")
    again = ok(user.plugin("suspend", "hourly"))
    assert again == "scheduledtasks.taskmaster.dev/hourly already suspended\n"

    assert ok(user.plugin("resume", "hourly")) == "scheduledtasks.taskmaster.dev/hourly resumed\n"

    task = tasks.wait("hourly", lambda t: phase(t) == "Scheduled")
    assert task["spec"]["suspend"] is False
    (row,) = table(ok(user.kubectl("list")))
    assert (row["SUSPEND"], row["PHASE"]) == ("false", "Scheduled")
    assert re.fullmatch(r"in (59m|1h)", row["NEXT RUN"])


def test_logs_print_the_chosen_run_s_pod_log_or_say_why_not(
    operator: OperatorProcess, tasks: Tasks, user: User
) -> None:
    tasks.create(
        "kept", {"every": "1s", "successfulJobsHistoryLimit": 1, "jobTemplate": job_template()}
    )
    tasks.create("later", {"every": "1h", "jobTemplate": job_template()})
    tasks.wait("kept", lambda t: t.get("status", {}).get("succeededRuns", 0) >= 3)
    tasks.patch("kept", {"spec": {"suspend": True}})  # a history that stays put
    status = tasks.wait("kept", lambda t: phase(t) == "Suspended")["status"]
    history = [entry for entry in status["history"] if entry.get("jobName")]
    assert len(history) >= 3
    until(lambda: len(tasks.jobs("kept")) == 1, timeout=30, message="older Jobs deleted")
    latest = user.kubectl("logs", "kept")

    # kwok serves every pod's log from one file (hack/kwok/container.log).
    assert (latest.code, latest.err) == (0, ""), latest.err
    assert latest.out == f"{SIMULATED_LOG}\n"

    oldest = len(history)
    gone = user.plugin("logs", "kept", "--run", str(oldest))
    assert gone.code == 1
    assert gone.err.startswith(
        f'error: the Job "{history[-1]["jobName"]}" of run {oldest} '
        f"({history[-1]['scheduledTime']}, Succeeded) no longer exists: finished Jobs are "
        "deleted beyond successfulJobsHistoryLimit (1)"
    ), gone.err

    beyond = user.kubectl("logs", "kept", "--run", str(oldest + 1))
    assert (beyond.code, beyond.err) == (
        1,
        f'error: scheduledtask "kept" in namespace "{user.namespace}" has {oldest} runs with '
        f"a Job in its history; there is no run {oldest + 1}\n",
    )

    none_yet = user.plugin("logs", "later")
    assert (none_yet.code, none_yet.err) == (
        1,
        f'error: scheduledtask "later" in namespace "{user.namespace}" '
        "has no runs with a Job yet\n",
    )


def test_a_missing_task_is_named_with_its_namespace(crds: list[str], user: User) -> None:
    for command in (
        ("describe", "ghost"),
        ("history", "ghost"),
        ("run", "ghost"),
        ("suspend", "ghost"),
        ("logs", "ghost"),
    ):
        missing = user.kubectl(*command)
        assert (missing.code, missing.out, missing.err) == (
            1,
            "",
            f'error: scheduledtask "ghost" not found in namespace "{user.namespace}"\n',
        ), command
    empty = user.plugin("list")
    assert (empty.code, empty.out) == (0, "")
    assert empty.err == f'No ScheduledTasks found in namespace "{user.namespace}".\n'


def test_the_namespace_defaults_to_the_context_s(
    tasks: Tasks, crds: list[str], user: User, tmp_path: Path
) -> None:
    tasks.create("here", {"every": "1h", "jobTemplate": job_template()})
    kubeconfig = yaml.safe_load(user.kubeconfig.read_text())
    for context in kubeconfig["contexts"]:
        context["context"]["namespace"] = user.namespace
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    elsewhere = User(path, user.namespace)

    (row,) = table(ok(elsewhere.plugin("list", namespace=False)))

    assert row["NAME"] == "here"
    assert ok(elsewhere.plugin("list", "-n", "default", namespace=False)).count("here") == 0
