"""Job records and their Redis keys, the job index, metrics and events: below everything but the foundation."""
