"""TaskMaster against the built-in CronJob controller on a local cluster (`make bench`)."""
