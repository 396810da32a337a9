"""Sealing of secret setting values with the key the API and the workers share (Fernet)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from collector import defaults
from collector.errors import ConfigError


def check_key(secret_key: str) -> None:
    """`ConfigError` for a `COLLECTOR_SECRET_KEY` too short to resist guessing (it opens every sealed secret and
    signs resume tokens); checked when a process starts, so a weak key never seals anything."""
    size = len(secret_key.encode())
    if size < defaults.MIN_SECRET_KEY_BYTES:
        raise ConfigError(
            f"COLLECTOR_SECRET_KEY is {size} bytes long; it must be at least {defaults.MIN_SECRET_KEY_BYTES} "
            "(it opens every sealed secret and signs resume tokens): set a long random string, e.g. "
            "`openssl rand -hex 32`, the same for every API and worker process"
        )


class Sealer:
    """Seals and unseals JSON values; any passphrase works as a key (it is stretched to a Fernet key)."""

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ConfigError("COLLECTOR_SECRET_KEY is empty; set it to a long random string")
        digest = hashlib.sha256(secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, value: Any) -> str:
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def unseal(self, token: str) -> Any:
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise ConfigError(
                "sealed secrets cannot be opened with this COLLECTOR_SECRET_KEY; "
                "give the API and the workers the same key"
            ) from None


def new_key() -> str:
    """A fresh random key, for a session that has none configured."""
    return Fernet.generate_key().decode()
