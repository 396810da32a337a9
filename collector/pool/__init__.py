"""The pre-forked worker pool: the supervisor, its children, their supervision, heartbeats and maintenance."""
