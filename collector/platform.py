"""What a platform file imports: the `Platform` base class and the setting types it annotates with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from collector.errors import FatalError, SettingError, TransientError
from collector.types import Secret
from storage.base import Storage

if TYPE_CHECKING:
    from collector.run.context import RunContext


class Platform:
    """Base class of a data source. Settings are the annotated parameters of `__init__`.

    Class attributes are constants, never settings. `_run(ctx)` does the work and returns a small
    JSON-able summary, stored as the job's `result`.
    """

    TIMEOUT_S: ClassVar[int | None] = None   # a job of this platform running longer is failed
    CONCURRENCY: ClassVar[int | None] = None  # its jobs running at once per concurrency key, over every pool
    RATE_LIMIT: ClassVar[str | None] = None  # "10/s", "600/min", "5000/h": its requests over every job and pool

    def _run(self, ctx: RunContext) -> dict[str, Any] | None:
        raise NotImplementedError(f"{type(self).__name__} must define _run(self, ctx)")


__all__ = ["FatalError", "Platform", "Secret", "SettingError", "Storage", "TransientError"]
