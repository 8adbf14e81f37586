"""The fixtures' real servers: a private Redis and worker processes."""

from typing import Any

import redis

from shared.settings import load_settings
from shared.state import StateStore
from workers.app import create_app


def test_private_redis_keeps_an_append_only_file(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert not redis_url.endswith(":6379/0")


def test_worker_process_answers_and_holds_long_tasks(
    redis_url: str, celery_worker: Any
) -> None:
    app = create_app(load_settings(redis_url=redis_url))
    reply = app.send_task("drover.health.ping", queue="drover.default").get(timeout=30)
    assert reply["pid"] == celery_worker.pid or reply["pid"] > 0
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    # long tasks are held by refreshing their delivery time (workers.liveness), so the
    # timeout can be short and a dead worker's message moves on within minutes
    options = app.conf.broker_transport_options
    assert options["visibility_timeout"] <= 300
    assert options["unacked_restore_interval"] <= options["visibility_timeout"] // 4
    # a worker killed while restoring must not stop restores for kombu's default 5 minutes
    assert options["unacked_mutex_expire"] < options["visibility_timeout"]
    live = StateStore.from_url(redis_url).live_workers()
    assert live, "the worker announces itself in Redis"
