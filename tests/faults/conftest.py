"""Faults against the real parts: each test runs its own broker, so killing or restarting
it touches no other test's workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from bench.fleet import register_lab_hosts, register_lab_manager
from lab.redis_server import redis_server
from shared.settings import load_settings
from shared.state import StateStore
from tests.integration.engine_client import connect
from workers.app import close_app, create_app

QUEUES = "drover.default,transfer.image,transfer.ssh"
FAST_REDELIVERY = {"DROVER_WORKER__VISIBILITY_TIMEOUT_S": "20"}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path / "redis") as url:
        yield url


@pytest.fixture
def store(broker: str, lab: dict[str, Any]) -> StateStore:
    state = StateStore.from_url(broker)
    register_lab_manager(state, lab)
    register_lab_hosts(state, lab)
    return state


@pytest.fixture
def app(broker: str) -> Iterator[Celery]:
    celery = create_app(load_settings(redis_url=broker))
    yield celery
    close_app(celery)


@pytest.fixture
def connection(lab: dict[str, Any]) -> Iterator[Any]:
    with connect(lab) as conn:
        yield conn
