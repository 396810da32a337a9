"""Readings from a paged JSON weather API, for tests of the kit's recorded responses."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from collector.platform import FatalError, Platform, Secret


class Weather(Platform):
    """Temperature readings of one city, page after page, from a JSON API."""

    def __init__(self, city: str, base_url: str = "https://weather.example.invalid", token: Secret | None = None):
        self.city, self.base_url, self.token = city, base_url.rstrip("/"), token

    def _get(self, path: str, **query: object) -> dict:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(query)}" if query else f"{self.base_url}{path}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"} if self.token else {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise FatalError(f"GET {path} answered {exc.code}") from None

    def _check(self) -> str:
        return f"API version {self._get('/v1/ping')['version']}"

    def _run(self, ctx):
        rows, page = [], 1
        while page:
            body = self._get("/v1/readings", city=self.city, page=page)
            rows.extend(body["readings"])
            ctx.progress(page, body["pages"], f"page {page} of {body['pages']}")
            page = body["next"]
        ctx.dataset("original", rows)
        ctx.dataset("processed", [{"city": self.city, "celsius": round((r["f"] - 32) / 1.8, 1)} for r in rows])
        return {"readings": len(rows)}
