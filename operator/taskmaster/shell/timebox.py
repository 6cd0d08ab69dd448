"""A time box for the synchronous work done for one task on the event loop.

The core bounds its own work (no field can make a decision loop), but the
event loop is shared by every task: should one task's parse or decision ever
run long anyway, every schedule would wait behind it, and SIGTERM with them.
The box interrupts such work: a virtual interval timer (the process' CPU
time: what pure work spends, and no other user of SIGALRM's real-time timer
is disturbed) raises `Overrun` inside the block once its budget is spent, and
the caller reports the task instead of acting on it.

Only the main thread receives signals, and only pure code runs in a box (no
`await`: the timer must not fire into another task's coroutine). Outside the
main thread, the block simply runs unboxed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

# The CPU seconds one task's parse or decision may hold the event loop for.
# The core bounds its own work far below this (milliseconds, `make bench`
# reports the slowest seen); past it the work is abandoned and reported, and
# every other task keeps its schedule.
TIME_BOX_SECONDS = 2.0


class Overrun(BaseException):
    """The boxed work ran past its budget and was abandoned.

    A BaseException, like KeyboardInterrupt: the boxed code's own `except
    Exception` (croniter's errors are caught that way) must not swallow it.
    """


class _Box:
    armed = False


def _expired(signum: int, frame: FrameType | None) -> None:
    # A late signal (the block just ended) finds the box disarmed: nothing to stop.
    if _Box.armed:
        _Box.armed = False
        raise Overrun


@contextmanager
def time_box(seconds: float) -> Iterator[None]:
    """Run the block; raise Overrun in it once it has taken `seconds` of CPU time."""
    if threading.current_thread() is not threading.main_thread() or _Box.armed:
        yield  # signals reach the main thread only; a box inside a box is the outer's
        return
    if signal.getsignal(signal.SIGVTALRM) is not _expired:
        signal.signal(signal.SIGVTALRM, _expired)
    _Box.armed = True
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        _Box.armed = False
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
