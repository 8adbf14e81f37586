"""Drover's job priority (0 low .. 9 high) as the broker orders messages.

kombu's Redis transport keeps one list per priority step and serves step 0 first (BRPOP
lists the steps in order), so with Redis a high Drover priority is a low number; AMQP
brokers serve the highest number first. Ten steps keep Drover's ten priorities apart.
"""

from __future__ import annotations

from celery import Celery

from workers.redis_transport import is_redis

MAX_PRIORITY = 9
REDIS_PRIORITY_STEPS = list(range(MAX_PRIORITY + 1))


def broker_priority(app: Celery, priority: int) -> int:
    return MAX_PRIORITY - priority if is_redis(str(app.conf.broker_url or "")) else priority
