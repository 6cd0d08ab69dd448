"""The I/O layer: talks to the API server, runs handlers and timers, serves metrics."""
