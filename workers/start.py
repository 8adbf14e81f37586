"""Start a worker process on the queues it serves."""

from __future__ import annotations

from shared.logging import configure_logging
from shared.settings import Settings
from shared.state import StateStore

DEFAULT_QUEUES = ("drover.default", "transfer.image", "transfer.ssh")


def worker_argv(settings: Settings, queues: list[str], concurrency: int | None) -> list[str]:
    return [
        "worker",
        "--loglevel",
        settings.log.level,
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(concurrency or settings.worker.concurrency),
        "--without-gossip",
        "--without-mingle",
        "--events",
    ]


def run_worker(settings: Settings, queues: list[str], concurrency: int | None = None) -> None:
    from workers import liveness
    from workers.app import create_app

    configure_logging(settings.log)
    app = create_app(settings)
    store = StateStore.from_url(settings.redis_url)
    liveness.install(app, store, settings.worker.visibility_timeout_s)
    app.worker_main(worker_argv(settings, queues or list(DEFAULT_QUEUES), concurrency))
