"""TaskMaster: a Kubernetes operator that runs ScheduledTask resources as Jobs.

The package is layered (enforced by import-linter, see `.importlinter`):

- `taskmaster.core`: pure logic (schedule math, spec parsing, Job rendering,
  status reduction). It never performs I/O and imports no Kubernetes client,
  so it is unit-tested exhaustively without a cluster.
- `taskmaster.shell`: the thin layer doing I/O (kopf handlers, API calls,
  leader election, metrics). It may use `core`; `core` never uses it.
"""

__version__ = "0.1.0"
