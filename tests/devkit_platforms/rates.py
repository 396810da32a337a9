"""Daily exchange rates from a JSON API: the example of the README's "Writing a platform"."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request

from collector.platform import FatalError, Platform, Secret, TransientError


class Rates(Platform):
    """Exchange rates of one base currency on one day, a row per currency."""

    def __init__(self, base_url: str, api_key: Secret, base: str = "EUR", day: dt.date = "yesterday") -> None:
        self.base_url, self.api_key, self.base, self.day = base_url.rstrip("/"), api_key, base, day

    def _get(self, path: str) -> dict:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        try:
            with urllib.request.urlopen(urllib.request.Request(self.base_url + path, headers=headers), timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                raise TransientError(f"{path} answered {exc.code}; the job may be retried later") from None
            raise FatalError(f"{path} answered {exc.code}; check base_url and api_key") from None
        except OSError as exc:                # DNS, refused, reset, timed out (urllib's URLError is one)
            raise TransientError(f"{path} could not be reached ({exc}); the job may be retried later") from None

    def _check(self) -> str:
        return f"signed in as {self._get('/v1/me')['account']}"

    def _run(self, ctx):
        body = self._get(f"/v1/rates/{self.day.isoformat()}?base={self.base}")
        rows = [{"day": str(self.day), "currency": c, "rate": r} for c, r in sorted(body["rates"].items())]
        ctx.progress(len(rows), len(rows), f"{len(rows)} currencies")
        ctx.dataset("original", [body])
        ctx.dataset("processed", rows)
        return {"currencies": len(rows)}
