"""Start a worker process on the queues it serves."""

from __future__ import annotations

from shared.errors import ConfigError
from shared.logging import configure_logging, get_logger
from shared.settings import Settings
from shared.state import StateStore

DEFAULT_QUEUES = ("drover.default", "transfer.image", "transfer.ssh")
log = get_logger(__name__)


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


def proxy_queues(settings: Settings) -> list[str]:
    """A proxy worker's queue: its own VM's cluster's, once the node is found fit to serve."""
    from shared.engine.client import EngineClient
    from shared.proxy.node import identify
    from workers.resources import engine_settings

    store = StateStore.from_url(settings.redis_url)
    manager = settings.proxy.manager or _only_manager(store)
    with EngineClient.connect(engine_settings(manager, store)) as engine:
        node = identify(engine, settings.proxy.root)
    log.info("proxy worker", vm=node.vm_name, cluster=node.cluster, queue=node.queue)
    return [node.queue]


def _only_manager(store: StateStore) -> str:
    names = [d["name"] for d in store.documents("manager")]
    if len(names) != 1:
        raise ConfigError(
            f"a proxy worker needs its engine, and {len(names)} managers are registered",
            hint="set DROVER_PROXY__MANAGER to the manager of the proxy VM's engine",
        )
    return str(names[0])


def run_worker(settings: Settings, queues: list[str], concurrency: int | None = None) -> None:
    from workers import liveness
    from workers.app import create_app

    configure_logging(settings.log)
    app = create_app(settings)
    store = StateStore.from_url(settings.redis_url)
    liveness.install(app, store, settings.worker.visibility_timeout_s)
    app.worker_main(worker_argv(settings, queues or list(DEFAULT_QUEUES), concurrency))
