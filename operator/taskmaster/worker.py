"""`taskmaster-worker`: runs one action in a task's pod and reports how it went.

    taskmaster-worker http --url URL [--method M] [--header 'K: V']... [--body TEXT]
                           [--timeout SECONDS] [--success-codes 200-299,304] [--attempts N]
    taskmaster-worker command -- ARGV...
    taskmaster-worker probe --heartbeat-file PATH --max-age SECONDS

Both write a JSON summary to the termination log (the pod's terminationMessagePath,
which the operator copies into the task's history), touch `--heartbeat-file`
while the action makes progress (the pod's liveness probe checks its age), stop
cleanly on SIGTERM, and exit 0 on success, non-zero otherwise.

Standard library only: the worker image carries nothing else. Header values
are never logged: they may come from Secrets.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

# Kubernetes keeps at most 4096 bytes of a termination message.
_MESSAGE_LIMIT = 4096
_EXCERPT = 512
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TERMINATED = 143


class Terminated(Exception):
    """SIGTERM arrived: stop what runs and report."""


def parse_codes(text: str) -> list[range]:
    """`200-299,304` to ranges; ValueError on anything else."""
    ranges = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        first, last = int(low), int(high or low)
        if not 100 <= first <= last <= 599:
            raise ValueError(f"{part!r} is not a status code or range of them")
        ranges.append(range(first, last + 1))
    return ranges


def parse_header(text: str) -> tuple[str, str]:
    name, separator, value = text.partition(":")
    if not separator or not name.strip():
        raise ValueError("a header is 'Name: value'")
    return name.strip(), value.strip()


class Heartbeat:
    """Touches a file whenever the action makes progress."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def beat(self) -> None:
        if self.path is not None:
            self.path.touch()


class Report:
    """The result summary, written once to the termination log."""

    def __init__(self, path: Path, action: str) -> None:
        self.path = path
        self.result: dict[str, Any] = {"action": action, "ok": False, "attempts": 0}
        self.started = time.monotonic()

    def write(self) -> None:
        self.result["durationSeconds"] = round(time.monotonic() - self.started, 3)
        text = json.dumps(self.result, separators=(",", ":"))
        while len(text.encode()) > _MESSAGE_LIMIT and self.result.get("excerpt"):
            self.result["excerpt"] = self.result["excerpt"][: len(self.result["excerpt"]) // 2]
            text = json.dumps(self.result, separators=(",", ":"))
        try:
            self.path.write_text(text)
        except OSError as error:
            print(f"taskmaster-worker: cannot write {self.path}: {error}", file=sys.stderr)
        print(text, file=sys.stderr)


def _request(options: argparse.Namespace, heartbeat: Heartbeat) -> tuple[int, str]:
    url = urllib.parse.urlsplit(options.url)
    connection_class = (
        http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(url.netloc, timeout=options.timeout)
    try:
        path = url.path or "/"
        if url.query:
            path += f"?{url.query}"
        body = options.body.encode() if options.body is not None else None
        connection.request(options.method, path, body=body, headers=dict(options.header))
        response = connection.getresponse()
        chunks = []
        size = 0
        while chunk := response.read(65536):
            heartbeat.beat()
            if size < _EXCERPT:
                chunks.append(chunk)
            size += len(chunk)
        excerpt = b"".join(chunks)[:_EXCERPT].decode(errors="replace")
        return response.status, excerpt
    finally:
        connection.close()


def run_http(options: argparse.Namespace, report: Report, heartbeat: Heartbeat) -> int:
    codes = options.success_codes
    delay = 1.0
    for attempt in range(1, options.attempts + 1):
        report.result["attempts"] = attempt
        heartbeat.beat()
        try:
            status, excerpt = _request(options, heartbeat)
        except (OSError, http.client.HTTPException) as error:
            report.result.update(error=f"{type(error).__name__}: {error}", status=None)
            retry = True
        else:
            report.result.update(status=status, excerpt=excerpt)
            report.result.pop("error", None)
            if any(status in accepted for accepted in codes):
                report.result["ok"] = True
                return 0
            retry = status >= 500
        if not retry or attempt == options.attempts:
            break
        time.sleep(delay)
        delay *= 2
    return EXIT_FAILED


def run_command(argv: Sequence[str], report: Report, heartbeat: Heartbeat) -> int:
    report.result["attempts"] = 1
    excerpt: list[str] = []
    try:
        child = subprocess.Popen(  # noqa: S603 (runs the task's own argv)
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    except OSError as error:
        report.result["error"] = f"{type(error).__name__}: {error}"
        return 127
    try:
        for line in child.stdout or ():
            heartbeat.beat()
            sys.stdout.write(line)
            sys.stdout.flush()
            excerpt.append(line)
            del excerpt[:-20]
        code = child.wait()
    except Terminated:
        child.terminate()
        child.wait(timeout=10)
        raise
    finally:
        report.result["excerpt"] = "".join(excerpt)[-_EXCERPT:]
    report.result["exitCode"] = code
    report.result["ok"] = code == 0
    return code


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="taskmaster-worker", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--termination-log", type=Path, default=Path("/dev/termination-log"))
    common.add_argument("--heartbeat-file", type=Path)
    actions = parser.add_subparsers(dest="action", required=True)
    http_action = actions.add_parser("http", parents=[common], help="call a URL")
    http_action.add_argument("--url", required=True)
    http_action.add_argument("--method", default="GET", type=str.upper)
    http_action.add_argument("--header", action="append", default=[], type=parse_header)
    http_action.add_argument("--body")
    http_action.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    http_action.add_argument("--success-codes", default="200-299", type=parse_codes)
    http_action.add_argument(
        "--attempts", type=int, default=3, help="tries on transport errors and 5xx (default 3)"
    )
    command = actions.add_parser("command", parents=[common], help="run an argv")
    command.add_argument("argv", nargs="+")
    probe = actions.add_parser(
        "probe", help="liveness: has the heartbeat file been touched lately?"
    )
    probe.add_argument("--heartbeat-file", type=Path, required=True)
    probe.add_argument("--max-age", type=float, required=True, metavar="SECONDS")
    return parser.parse_args(argv)


def probe(heartbeat: Path, max_age: float) -> int:
    try:
        age = time.time() - heartbeat.stat().st_mtime
    except OSError as error:
        print(f"no heartbeat: {error}", file=sys.stderr)
        return EXIT_FAILED
    if age > max_age:
        print(f"no progress for {age:.0f}s (limit {max_age:.0f}s)", file=sys.stderr)
        return EXIT_FAILED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if options.action == "probe":
        return probe(options.heartbeat_file, options.max_age)
    report = Report(options.termination_log, options.action)
    heartbeat = Heartbeat(options.heartbeat_file)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)
    try:
        if options.action == "http":
            code = run_http(options, report, heartbeat)
        else:
            code = run_command(options.argv, report, heartbeat)
    except Terminated:
        report.result.update(ok=False, error="Terminated")
        code = EXIT_TERMINATED
    report.write()
    return code


def entrypoint() -> None:
    sys.exit(main())
