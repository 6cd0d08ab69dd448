"""/healthz and /readyz, served from a thread of their own.

The event loop cannot answer anything while it is blocked, so a probe served
by it only times out, saying nothing of why. This server runs beside the loop:
the loop beats (a timestamp, every half second), and /healthz fails with the
reason once the last beat is older than the limit, or the scheduler's own loop
has stopped turning while it should act. Kubernetes then restarts a wedged
replica instead of leaving it holding the Lease.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# How often the event loop beats.
BEAT_SECONDS = 0.5


class Health:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        limit: float,
        ready: Callable[[], bool],
        stalled: Callable[[float], bool],
    ) -> None:
        self.limit = limit
        self.ready = ready
        self.stalled = stalled
        self.beat = time.monotonic()
        health = self

        class Handler(BaseHTTPRequestHandler):
            # An idle connection holds a thread: not for long.
            timeout = 5

            def do_GET(self) -> None:
                code, text = health.answer(self.path)
                body = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds are not news

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    def answer(self, path: str) -> tuple[int, str]:
        if path == "/healthz":
            blocked = time.monotonic() - self.beat
            if blocked > self.limit:
                return 500, f"event loop blocked for {blocked:.0f}s"
            if self.stalled(self.limit):
                return 500, "stalled: the scheduler loop has not turned"
            return 200, "ok"
        if path == "/readyz":
            return (200, "ok") if self.ready() else (503, "starting")
        return 404, "not found"

    def start(self) -> None:
        self.thread.start()

    async def beat_forever(self) -> None:
        """The loop's beat; runs on the event loop until cancelled."""
        while True:
            self.beat = time.monotonic()
            await asyncio.sleep(BEAT_SECONDS)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
