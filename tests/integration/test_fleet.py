"""The fixtures' real servers: a private Redis and worker processes."""

from typing import Any

import redis

from shared.settings import load_settings
from workers.app import create_app


def test_private_redis_keeps_an_append_only_file(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert not redis_url.endswith(":6379/0")


def test_worker_process_answers_and_is_configured_for_long_tasks(
    redis_url: str, celery_worker: Any
) -> None:
    app = create_app(load_settings(redis_url=redis_url))
    reply = app.send_task("drover.health.ping", queue="drover.default").get(timeout=30)
    assert reply["pid"] == celery_worker.pid or reply["pid"] > 0
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert visibility > app.conf.task_time_limit
