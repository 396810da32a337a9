"""What happens to a job between its runs: waits, cancels, schedules, step processes, recovery and the reaper."""
