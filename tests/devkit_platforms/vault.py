"""A source behind a login, for tests of `collector run`/`check`: a secret password and a `_check`."""

from __future__ import annotations

from collector.platform import FatalError, Platform, Secret, Storage


class Vault(Platform):
    """Numbered rows behind a login; only the password `open-sesame` opens it."""

    PASSWORD = "open-sesame"

    def __init__(self, username: str, password: Secret, rows: int = 3, storage: Storage | None = None) -> None:
        self.username, self.password, self.rows, self.storage = username, password, rows, storage

    def _login(self) -> None:
        if self.password != self.PASSWORD:
            # The password is in the text on purpose: what leaves the job must have it masked.
            raise FatalError(f"login refused for {self.username} with password {self.password}")

    def _check(self) -> str:
        self._login()
        return f"logged in as {self.username}"

    def _run(self, ctx):
        ctx.log.info("logging in as %s with password %s", self.username, self.password)
        self._login()
        rows = [{"n": n, "user": self.username} for n in range(1, self.rows + 1)]
        for n in range(1, self.rows + 1):
            ctx.progress(n, self.rows, f"row {n}")
        ctx.dataset("original", rows)
        if self.storage:
            self.storage.write(rows)
        return {"rows": len(rows)}
