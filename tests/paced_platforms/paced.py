"""GETs one URL again and again through the HTTP client, which keeps to the platform's rate limit."""

from __future__ import annotations

from typing import Any

from collector.http_client import HttpClient
from collector.platform import Platform


class Paced(Platform):
    """Requests `url` `requests` times; every job of it, in every pool, shares ten requests a second."""

    RATE_LIMIT = "10/s"

    def __init__(self, url: str, requests: int = 1) -> None:
        self.url, self.requests = url, requests

    def _run(self, ctx: Any) -> dict[str, Any]:
        client = HttpClient(headers={}, secrets=[], max_retries=3, backoff_s=0.05, timeout_s=10)
        separator = "&" if "?" in self.url else "?"
        for n in range(self.requests):
            client.request(f"{self.url}{separator}job={ctx.job_id}&n={n}")
            ctx.progress(n + 1, self.requests)
        return {"requests": self.requests}
