"""Worker liveness: a message held by a worker that died as a whole goes to a live worker.

On a Redis broker, kombu keeps each delivered, unacknowledged message in `unacked` with its
delivery time in the `unacked_index` sorted set, and every worker regularly restores to its
queue any message delivered longer ago than the visibility timeout. A live worker holds its
messages by refreshing their delivery time while it works (`HOLD_EVERY`), so the timeout
can be short (settings.worker.visibility_timeout_s, minutes) without re-delivering a long
task that is still running. When a worker dies as a whole (SIGKILL of its process group,
power loss), its refreshes stop and another worker restores its messages after the timeout;
the re-delivered step resumes from what Redis recorded. (A pool process that dies alone is
re-delivered at once by `task_reject_on_worker_lost`. AMQP brokers re-deliver on their own
when the connection of a dead worker drops.)

Each worker also announces itself under drover:worker:<hostname> (see shared.state). A proxy
worker also records its proxy VM in the proxy registry (shared.proxy.registry) at each beat,
which keeps the record's last_seen; its proxy is alive while the worker is announced.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from celery import Celery, signals

from shared.logging import get_logger
from shared.proxy.registry import ProxyWorker
from shared.state import StateStore
from workers.redis_transport import is_redis

UNACKED_INDEX = "unacked_index"  # kombu's default `unacked_index_key`
log = get_logger(__name__)


def hold_every_s(visibility_timeout_s: int) -> float:
    return max(1.0, visibility_timeout_s / 4)


class Keeper(threading.Thread):
    """In the worker's main process: refreshes the delivery time of the messages it holds
    and its presence (and a proxy worker's record of its VM), until the worker shuts down."""

    def __init__(
        self,
        consumer: Any,
        broker: redis.Redis | None,
        store: StateStore,
        every_s: float,
        proxy: ProxyWorker | None = None,
    ):
        super().__init__(name="drover-liveness", daemon=True)
        self._consumer = consumer
        self._broker = broker
        self._store = store
        self._every_s = every_s
        self._proxy = proxy
        self._stopped = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self._beat()
            except Exception as error:  # a broker outage: try again next beat
                log.warning("liveness beat failed", error=str(error))
            if self._stopped.wait(self._every_s):
                return

    def stop(self) -> None:
        self._stopped.set()
        self._store.forget_worker(self._consumer.hostname)

    def _beat(self) -> None:
        tags = _held_tags(self._consumer) if self._broker is not None else []
        if tags and self._broker is not None:
            now = time.time()
            self._broker.zadd(UNACKED_INDEX, {tag: now for tag in tags}, xx=True)
        ttl_s = int(self._every_s * 3)
        self._store.announce_worker(self._consumer.hostname, ttl_s, _queues(self._consumer))
        if self._proxy is not None:
            self._proxy.register(self._store, self._consumer.hostname)


def _queues(consumer: Any) -> list[str]:
    task_consumer = getattr(consumer, "task_consumer", None)
    return [str(q.name) for q in list(getattr(task_consumer, "queues", None) or ())]


def _held_tags(consumer: Any) -> list[str]:
    task_consumer = getattr(consumer, "task_consumer", None)
    channel = getattr(task_consumer, "channel", None)
    delivered = getattr(getattr(channel, "qos", None), "_delivered", None)
    for _attempt in range(3):
        try:
            return [str(tag) for tag in list(delivered or ())]
        except RuntimeError:  # changed while copied by the consumer's thread
            continue
    return []


def install(
    app: Celery, store: StateStore, visibility_timeout_s: int, proxy: ProxyWorker | None = None
) -> None:
    """Start a keeper when this process's worker is ready; stop it when it shuts down. On a
    broker that is not Redis, the keeper only announces the worker (and its proxy VM): the
    broker itself re-delivers a dead worker's messages.
    `proxy`: the worker's proxy VM, recorded in the proxy registry at each beat."""
    broker_url = str(app.conf.broker_url or "")
    keepers: list[Keeper] = []

    def start(sender: Any, **_: Any) -> None:
        broker = redis.Redis.from_url(broker_url) if is_redis(broker_url) else None
        keeper = Keeper(sender, broker, store, hold_every_s(visibility_timeout_s), proxy)
        keepers.append(keeper)
        keeper.start()

    def stop(**_: Any) -> None:
        for keeper in keepers:
            keeper.stop()

    signals.worker_ready.connect(start, weak=False)
    signals.worker_shutdown.connect(stop, weak=False)
