"""The baseline of the end-to-end figure: a bare Flask endpoint that enqueues a no-op into RQ (JSON serializer)."""

from __future__ import annotations

import os
import uuid

from flask import Flask
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

QUEUE = "bare"


def create_app() -> Flask:
    app = Flask("bare")
    queue = Queue(QUEUE, connection=Redis.from_url(os.environ["BENCH_REDIS_URL"]), serializer=JSONSerializer)

    @app.post("/run")
    def run() -> tuple[dict[str, str], int]:
        job = queue.enqueue_call("bench.tasks.noop", job_id=uuid.uuid4().hex)
        return {"job_id": job.id, "status": "queued"}, 202

    return app
