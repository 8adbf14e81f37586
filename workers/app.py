"""The Celery app: one place for the broker, the result backend and task behaviour.

Tasks are long and idempotent, so a message is acknowledged only after its task ends
and is re-delivered when a worker dies (late acks, reject on worker lost). Transfer
workers take one message at a time (prefetch 1) so a slow disk never holds back others.
"""

from __future__ import annotations

from celery import Celery

from shared.settings import Settings, get_settings
from workers import redis_transport
from workers.priority import REDIS_PRIORITY_STEPS

REAP_EVERY_S = 600.0
TASK_MODULES = [
    "workers.tasks.health",
    "workers.tasks.backup",
    "workers.tasks.restore",
    "workers.tasks.maintenance",
    "workers.tasks.schedules",
]


def celery_config(settings: Settings) -> dict[str, object]:
    visibility_s = settings.worker.visibility_timeout_s
    return {
        "broker_url": settings.effective_broker_url,
        "result_backend": settings.redis_url,
        "broker_transport_options": _transport_options(settings),
        "result_backend_transport_options": {"visibility_timeout": visibility_s},
        # a Redis restart delays results (and the chord's count) instead of losing them
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.worker.task_time_limit_s,
        "task_soft_time_limit": settings.worker.task_time_limit_s - 60,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 7 * 24 * 3600,
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "task_default_queue": "drover.default",
        # what the scheduler runs besides policies: the reaper (see shared.reaper)
        "beat_schedule": {
            "reap": {"task": "drover.maintenance.reap", "schedule": REAP_EVERY_S},
        },
    }


def _transport_options(settings: Settings) -> dict[str, object]:
    options: dict[str, object] = {"visibility_timeout": settings.worker.visibility_timeout_s}
    if redis_transport.is_redis(settings.effective_broker_url):
        # one list per priority, served in order (see canvas.broker_priority)
        options |= {"priority_steps": REDIS_PRIORITY_STEPS, "queue_order_strategy": "priority"}
        # look for the messages of dead workers often (see workers.liveness)
        every_s = max(1, min(10, settings.worker.visibility_timeout_s // 4))
        options |= {"unacked_restore_interval": every_s, "unacked_restore_throttle": 1}
        # kombu holds a Redis lock while it restores (a few milliseconds); a worker killed
        # while holding it would otherwise stop every restore for kombu's default 5 minutes
        options["unacked_mutex_expire"] = max(5, settings.worker.visibility_timeout_s // 2)
    return options


def create_app(settings: Settings | None = None) -> Celery:
    redis_transport.install()
    app = Celery("drover", include=TASK_MODULES)
    app.config_from_object(celery_config(settings or get_settings()))
    return app


app = create_app()


def close_app(app: Celery) -> None:
    """Close a submitting app before its Redis goes away.

    Freezing a chord on the client subscribes to its header's results; left subscribed,
    the app tries to reconnect (loudly) when Redis stops before the process does.
    """
    consumer = getattr(app.backend, "result_consumer", None)
    if consumer is not None:
        consumer.subscribed_to.clear()
        consumer.stop()
    app.close()
