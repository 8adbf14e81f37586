"""Fixtures that start real servers on free ports and stop them afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.processes import lab_process, worker_process
from lab.redis_server import redis_server


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One lab for the session (`drover lab up` as a process); yields lab.json."""
    with lab_process(tmp_path_factory.mktemp("lab") / "state") as document:
        yield document


@pytest.fixture
def celery_worker(redis_url: str, tmp_path: Path) -> Iterator[Any]:
    with worker_process(redis_url, tmp_path / "worker.log") as process:
        yield process
