"""Pure logic: no I/O, no Kubernetes client, no clock reads (time is an argument)."""
