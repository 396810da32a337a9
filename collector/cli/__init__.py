"""The `collector` command, its HTTP client, progress display and embedded Redis; nothing imports it."""

from collector.cli.main import main

__all__ = ["main"]
