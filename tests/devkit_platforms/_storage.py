"""Storage backends for tests of connection checks: one with a `_check`, one without."""

from __future__ import annotations

from collections.abc import Iterable

from collector.platform import Secret
from storage.base import Row, Storage


class Ledger(Storage):
    """Keeps rows in memory; its token must be `letmein`."""

    TYPE = "ledger"

    def __init__(self, token: Secret, name: str = "main") -> None:
        self.token, self.name = token, name
        self.rows: list[Row] = []

    def _check(self) -> str:
        if self.token != "letmein":
            raise PermissionError(f"ledger {self.name} refused token {self.token}")
        return f"ledger {self.name} is writable"

    def write(self, rows: Iterable[Row]) -> int:
        batch = list(rows)
        self.rows.extend(batch)
        self._written(len(batch))
        return len(batch)


class Plain(Storage):
    """Keeps nothing and has nothing to check."""

    TYPE = "plain"

    def write(self, rows: Iterable[Row]) -> int:
        return len(list(rows))
