"""Start a worker process on the queues it serves.

A proxy worker (`drover worker --proxy`, disk attachment mode) first finds the VM it runs in
and checks it may serve (`shared.proxy.node.identify`); it then consumes its cluster's
`proxy.<cluster>` queue under a Celery hostname that names its VM (proxy-<vm name>@<host>),
and records itself in the proxy registry (`shared.proxy.registry`) once it is ready.
"""

from __future__ import annotations

from shared.errors import ConfigError
from shared.logging import configure_logging, get_logger
from shared.proxy.registry import ProxyWorker
from shared.settings import Settings
from shared.state import StateStore

DEFAULT_QUEUES = ("drover.default", "transfer.image", "transfer.ssh")
log = get_logger(__name__)


def worker_argv(
    settings: Settings, queues: list[str], concurrency: int | None, hostname: str = ""
) -> list[str]:
    """`hostname`: the Celery nodename (name@host); empty: Celery's default, celery@<host>."""
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
        *(["--hostname", hostname] if hostname else []),
    ]


def identify_proxy(settings: Settings) -> ProxyWorker:
    """The proxy VM this node is, once found fit to serve, and the manager of its engine."""
    from shared.engine.client import EngineClient
    from shared.proxy.node import identify
    from workers.resources import engine_settings

    store = StateStore.from_url(settings.redis_url)
    manager = settings.proxy.manager or _only_manager(store)
    with EngineClient.connect(engine_settings(manager, store)) as engine:
        node = identify(engine, settings.proxy.root)
    proxy = ProxyWorker(node, manager)
    log.info(
        "proxy worker",
        vm=node.vm_name,
        cluster=node.cluster,
        queue=node.queue,
        manager=manager,
        worker=proxy.worker,
    )
    return proxy


def _only_manager(store: StateStore) -> str:
    names = [d["name"] for d in store.documents("manager")]
    if len(names) != 1:
        raise ConfigError(
            f"a proxy worker needs its engine, and {len(names)} managers are registered",
            hint="set DROVER_PROXY__MANAGER to the manager of the proxy VM's engine",
        )
    return str(names[0])


def run_proxy_worker(settings: Settings, concurrency: int | None = None) -> None:
    """`drover worker --proxy`: serve this proxy VM's cluster queue, named after the VM."""
    proxy = identify_proxy(settings)
    run_worker(settings, [proxy.node.queue], concurrency, proxy=proxy)


def run_worker(
    settings: Settings,
    queues: list[str],
    concurrency: int | None = None,
    *,
    proxy: ProxyWorker | None = None,
) -> None:
    from workers import liveness
    from workers.app import create_app

    configure_logging(settings.log)
    app = create_app(settings)
    store = StateStore.from_url(settings.redis_url)
    liveness.install(app, store, settings.worker.visibility_timeout_s, proxy=proxy)
    hostname = proxy.worker if proxy else ""
    app.worker_main(worker_argv(settings, queues or list(DEFAULT_QUEUES), concurrency, hostname))
