"""A live worker holds its messages: their delivery time in kombu's index is refreshed, so a
short visibility timeout re-delivers only the messages of dead workers."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import redis

from shared.state import StateStore
from workers.liveness import UNACKED_INDEX, Keeper

pytestmark = pytest.mark.integration


def consumer_holding(*tags: str) -> SimpleNamespace:
    qos = SimpleNamespace(_delivered=dict.fromkeys(tags))
    return SimpleNamespace(
        hostname="celery@a", task_consumer=SimpleNamespace(channel=SimpleNamespace(qos=qos))
    )


def test_a_beat_refreshes_held_messages_only_and_announces_the_worker(redis_url: str) -> None:
    broker = redis.Redis.from_url(redis_url)
    long_ago = time.time() - 3600
    broker.zadd(UNACKED_INDEX, {"held": long_ago, "of-a-dead-worker": long_ago})
    store = StateStore.from_url(redis_url)
    keeper = Keeper(consumer_holding("held", "acked-meanwhile"), broker, store, every_s=1)
    keeper._beat()
    assert broker.zscore(UNACKED_INDEX, "held") == pytest.approx(time.time(), abs=5)
    assert broker.zscore(UNACKED_INDEX, "of-a-dead-worker") == long_ago
    assert broker.zscore(UNACKED_INDEX, "acked-meanwhile") is None  # never re-added
    assert "celery@a" in store.live_workers()
    keeper.stop()
    assert "celery@a" not in store.live_workers()
    broker.delete(UNACKED_INDEX)
