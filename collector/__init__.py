"""collector: a Redis-backed job executor for data collection."""

__version__ = "0.1.0"
