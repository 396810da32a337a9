"""Accepting work: a job spec becomes a record and a queued job; connection checks are requested."""
