"""The kubectl plugin: `kubectl taskmaster list|describe|history|run|suspend|resume|logs`.

A client of the API server, as kubectl is: it reads ScheduledTasks, their Jobs,
pods and Events, and writes only what a user would (`spec.suspend`, the run-now
annotation). Nothing of the operator imports it.
"""

from __future__ import annotations

from taskmaster.kubectl.cli import main

__all__ = ["main"]
