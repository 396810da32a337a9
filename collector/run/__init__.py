"""What a worker runs for one job: the runner and the run context a platform gets (no Flask here)."""
