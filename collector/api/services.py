"""The shared clients a request uses (config, Redis, platforms, job store, submitter), kept on the app."""

from __future__ import annotations

import dataclasses

import redis
from flask import current_app

from collector.config import Config
from collector.spec.registry import Registry
from collector.store.records import JobStore
from collector.submit.submitter import Submitter


@dataclasses.dataclass
class Services:
    """The shared clients a request uses, kept in `app.extensions["collector"]`."""

    config: Config
    connection: redis.Redis
    registry: Registry

    def __post_init__(self) -> None:
        self.store = JobStore(self.connection, self.config)
        self.submitter = Submitter(connection=self.connection, config=self.config, registry=self.registry)


def services() -> Services:
    """The services of the app serving the current request."""
    return current_app.extensions["collector"]
