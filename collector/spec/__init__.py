"""What a job is: discovered platforms, their settings schemas, retry policies, job specs and their secrets."""
