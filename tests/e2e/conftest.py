"""The whole fleet for end-to-end tests: the session's Redis and lab plus worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.processes import worker_process
from shared.settings import load_settings
from shared.state import StateStore
from workers.app import close_app, create_app

QUEUES = "drover.default,transfer.image,transfer.ssh"


@pytest.fixture(scope="session")
def manager(redis_url: str, lab: dict[str, Any]) -> str:
    """The lab's engine registered as manager "lab" (as `drover manager add` stores it)."""
    engine = lab["engine"]
    StateStore.from_url(redis_url).put_document(
        "manager",
        "lab",
        {
            "name": "lab",
            "url": engine["url"],
            "username": engine["username"],
            "password": engine["password"],
            "ca_file": engine["ca_file"],
        },
    )
    return "lab"


@pytest.fixture(scope="session")
def fleet(redis_url: str, manager: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    logs = tmp_path_factory.mktemp("fleet")
    with worker_process(redis_url, logs / "worker-1.log", QUEUES, concurrency=2) as first:
        yield first


@pytest.fixture
def celery_app(redis_url: str) -> Iterator[Any]:
    app = create_app(load_settings(redis_url=redis_url))
    yield app
    close_app(app)


@pytest.fixture
def store(redis_url: str) -> StateStore:
    return StateStore.from_url(redis_url)


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return tmp_path / "repository"
