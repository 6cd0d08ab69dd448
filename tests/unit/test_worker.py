"""taskmaster-worker against a local HTTP server on 127.0.0.1, and running commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from taskmaster.worker import main
from tests.support.operator import free_port

WORKER = Path(sys.executable).parent / "taskmaster-worker"


class Server:
    """Answers each path as scripted: /ok, /missing, /slow, /flaky, /huge, /echo."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.seen: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.answer()

            def do_POST(self) -> None:
                self.answer()

            def answer(self) -> None:
                path = self.path.split("?")[0]
                server.calls[path] = server.calls.get(path, 0) + 1
                length = int(self.headers.get("Content-Length") or 0)
                server.seen.append(
                    {
                        "method": self.command,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(length),
                    }
                )
                if path == "/slow":
                    time.sleep(2)
                if path == "/flaky" and server.calls[path] < 3:
                    return self.reply(503, b"busy")
                if path == "/missing":
                    return self.reply(404, b"no such thing")
                if path == "/huge":
                    return self.reply(200, b"x" * 1_000_000)
                return self.reply(200, b'{"done": true}')

            def reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.httpd.shutdown()


def run(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    log = tmp_path / "termination-log"
    code = main([args[0], "--termination-log", str(log), *args[1:]])
    return code, json.loads(log.read_text())


def test_success(server: Server, tmp_path: Path) -> None:
    heartbeat = tmp_path / "heartbeat"
    code, result = run(
        tmp_path,
        "http",
        "--url", f"{server.url}/ok",
        "--method", "post",
        "--header", "Authorization: Bearer s3cret",
        "--body", "{}",
        "--heartbeat-file", str(heartbeat),
    )  # fmt: skip

    assert code == 0
    assert result["ok"] is True
    assert (result["status"], result["attempts"], result["excerpt"]) == (200, 1, '{"done": true}')
    assert server.seen[0]["method"] == "POST"
    assert server.seen[0]["headers"]["Authorization"] == "Bearer s3cret"
    assert server.seen[0]["body"] == b"{}"
    assert heartbeat.exists()


def test_secret_headers_are_never_printed(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(tmp_path, "http", "--url", f"{server.url}/ok", "--header", "Authorization: Bearer s3cret")

    output = capsys.readouterr()
    assert "s3cret" not in output.out + output.err
    assert "s3cret" not in (tmp_path / "termination-log").read_text()


def test_a_status_outside_the_success_codes_fails_without_retry(
    server: Server, tmp_path: Path
) -> None:
    code, result = run(tmp_path, "http", "--url", f"{server.url}/missing")

    assert code == 1
    assert (result["ok"], result["status"], result["attempts"]) == (False, 404, 1)
    assert result["excerpt"] == "no such thing"


def test_success_codes_can_include_others(server: Server, tmp_path: Path) -> None:
    code, _ = run(
        tmp_path, "http", "--url", f"{server.url}/missing", "--success-codes", "200-299,404"
    )

    assert code == 0


def test_a_timeout_fails(server: Server, tmp_path: Path) -> None:
    code, result = run(
        tmp_path, "http", "--url", f"{server.url}/slow", "--timeout", "0.5", "--attempts", "1"
    )

    assert code == 1
    assert result["ok"] is False
    assert "timed out" in result["error"]


def test_connection_refused_is_retried_then_fails(tmp_path: Path) -> None:
    port = free_port()

    code, result = run(tmp_path, "http", "--url", f"http://127.0.0.1:{port}/", "--attempts", "2")

    assert code == 1
    assert result["attempts"] == 2
    assert "ConnectionRefusedError" in result["error"]


def test_5xx_is_retried_until_success(server: Server, tmp_path: Path) -> None:
    code, result = run(tmp_path, "http", "--url", f"{server.url}/flaky", "--attempts", "3")

    assert code == 0
    assert (result["status"], result["attempts"]) == (200, 3)
    assert server.calls["/flaky"] == 3


def test_a_huge_response_is_cut_to_fit_the_termination_message(
    server: Server, tmp_path: Path
) -> None:
    code, result = run(tmp_path, "http", "--url", f"{server.url}/huge")

    assert code == 0
    assert len(result["excerpt"]) == 512
    assert len((tmp_path / "termination-log").read_bytes()) <= 4096


def test_command_passes_its_exit_code_on(tmp_path: Path) -> None:
    ok, ok_result = run(tmp_path, "command", "--", "sh", "-c", "echo hello")
    failed, failed_result = run(tmp_path, "command", "--", "sh", "-c", "echo disk full; exit 3")

    assert (ok, ok_result["ok"], ok_result["excerpt"]) == (0, True, "hello\n")
    assert (failed, failed_result["exitCode"], failed_result["excerpt"]) == (3, 3, "disk full\n")


def test_sigterm_stops_cleanly_and_reports(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    heartbeat = tmp_path / "heartbeat"
    worker = subprocess.Popen(
        [str(WORKER), "command", "--termination-log", str(log), "--heartbeat-file", str(heartbeat),
         "--", "sh", "-c", "echo started; sleep 30"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert worker.stdout is not None
    assert worker.stdout.readline() == b"started\n"

    worker.send_signal(signal.SIGTERM)

    assert worker.wait(timeout=15) == 143
    assert json.loads(log.read_text())["error"] == "Terminated"


def test_probe_fails_once_the_heartbeat_is_stale(tmp_path: Path) -> None:
    heartbeat = tmp_path / "heartbeat"
    probe = ["probe", "--heartbeat-file", str(heartbeat), "--max-age", "30"]

    assert main(probe) == 1  # never touched
    heartbeat.touch()
    assert main(probe) == 0
    stale = time.time() - 60
    os.utime(heartbeat, (stale, stale))
    assert main(probe) == 1
