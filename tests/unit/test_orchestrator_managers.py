from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator import cli as cli_module
from orchestrator import commands
from orchestrator.cli import cli
from orchestrator.client import ApiClient
from shared.engine.errors import EngineAuthError, EngineUnreachable
from shared.engine.models import ClusterInfo
from shared.proxy import registry
from shared.proxy.node import ProxyNode
from shared.sealed import opened_fields
from shared.settings import get_settings
from shared.state import StateStore
from tests.unit.orchestrator_fakes import (
    ENGINE_URL,
    PASSWORD,
    SECRET_KEY,
    TOKEN,
    FakeEngine,
    FakeState,
    TestClient,
    World,
    api_client,
    make_api,
    make_world,
    manager_body,
    policy_body,
    quiet_logs,  # noqa: F401  (an autouse fixture)
    vm,
)
from tests.unit.test_proxy_registry import MemoryRedis


class ProxyState(FakeState):
    """The fake state with what the proxy registry reads: Redis (in memory) and the workers'
    announcements, as StateStore keeps them."""

    live_workers = StateStore.live_workers
    announce_worker = StateStore.announce_worker
    forget_worker = StateStore.forget_worker

    def __init__(self) -> None:
        super().__init__()
        self.redis = MemoryRedis()  # type: ignore[assignment]


@dataclass
class ClusterEngine(FakeEngine):
    """The fake engine with its clusters."""

    cluster_names: list[str] = field(default_factory=lambda: ["cluster1", "cluster2"])

    def clusters(self) -> list[ClusterInfo]:
        return [ClusterInfo(f"id-{name}", name) for name in self.cluster_names]


def with_proxies(world: World) -> World:
    """`world` with a state the proxy registry can use and an engine that has clusters;
    before anything is registered in it."""
    state, engine = ProxyState(), ClusterEngine()
    world.state = world.service.state = state  # type: ignore[assignment]
    world.engine = engine
    world.service.connect = engine.connect
    return world


def register_proxy(world: World, vm_id: str, name: str, cluster: str, *, alive: bool) -> str:
    """A proxy VM on the engine whose worker registered (and is announced when `alive`)."""
    worker = registry.worker_name(name, "node1")
    world.engine.vms.append(vm(vm_id, name, cluster=cluster, tags=["drover-proxy"]))
    store = world.state
    registry.register(store, ProxyNode(vm_id, name, cluster), "lab", worker, now=1000.0)  # type: ignore[arg-type]
    if alive:
        store.announce_worker(worker, ttl_s=60)  # type: ignore[attr-defined]
    return worker


@pytest.fixture
def world() -> World:
    return make_world()


@pytest.fixture
def client(world: World) -> TestClient:
    return api_client(world)


def test_add_stores_the_password_but_never_returns_it(world: World, client: TestClient) -> None:
    response = client.post("/managers", json=manager_body())
    assert response.status_code == 201, response.text
    assert response.json()["password"] == "***"
    assert response.json()["engine_version"] == "oVirt Engine 4.5.5"
    for path in ("/managers", "/managers/lab"):
        assert PASSWORD not in client.get(path).text
    stored = world.state.document("manager", "lab")
    assert stored is not None and PASSWORD not in json.dumps(stored)  # sealed at rest
    assert opened_fields(stored, SECRET_KEY)["password"] == PASSWORD  # the workers need it
    [tested] = world.engine.connected
    assert tested.url == ENGINE_URL and tested.password.get_secret_value() == PASSWORD


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"url": "http://engine/ovirt-engine/api"}, "must use https"),
        ({"url": "https://engine/api"}, "https://ENGINE_HOST[:PORT]/ovirt-engine/api"),
        ({"username": "admin"}, "must be user@domain"),
        ({"password": ""}, "the password is empty"),
        ({"name": "bad name"}, "not a valid name"),
        ({"ca_file": "/nonexistent/ca.pem"}, "does not exist on the API host"),
        ({"pasword": "x"}, "unknown key 'pasword'"),
    ],
)
def test_bad_input_is_a_clear_400(
    world: World, client: TestClient, changes: dict[str, str], expected: str
) -> None:
    response = client.post("/managers", json=manager_body(**changes))
    assert response.status_code == 400, response.text
    assert expected in response.json()["detail"]
    assert PASSWORD not in response.text
    assert world.state.document("manager", "lab") is None


def test_missing_password_is_named(client: TestClient) -> None:
    body = manager_body()
    del body["password"]
    response = client.post("/managers", json=body)
    assert response.status_code == 400 and "password is required" in response.json()["detail"]


def test_connection_test_failures(world: World, client: TestClient) -> None:
    world.engine.error = EngineAuthError("the engine refused user admin@internal")
    response = client.post("/managers", json=manager_body())
    assert response.status_code == 400
    assert (
        "connection test of manager 'lab' failed: the engine refused" in response.json()["detail"]
    )
    world.engine.error = EngineUnreachable("the engine did not answer")
    assert client.post("/managers", json=manager_body()).status_code == 502
    world.engine.error = OSError("boom")
    response = client.post("/managers", json=manager_body())
    assert response.status_code == 502 and "boom" in response.json()["detail"]
    assert world.state.document("manager", "lab") is None


def test_ca_file_is_kept(tmp_path: Path, world: World, client: TestClient) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert client.post("/managers", json=manager_body(ca_file=str(ca))).status_code == 201
    assert client.get("/managers/lab").json()["ca_file"] == str(ca)


def test_duplicate_replace_get_and_delete(client: TestClient) -> None:
    assert client.post("/managers", json=manager_body()).status_code == 201
    response = client.post("/managers", json=manager_body())
    assert response.status_code == 409 and "already exists" in response.json()["detail"]
    replaced = client.put("/managers/lab", json=manager_body(username="backup@internal"))
    assert replaced.status_code == 200 and replaced.json()["username"] == "backup@internal"
    assert client.put("/managers/other", json=manager_body()).status_code == 400
    assert [m["name"] for m in client.get("/managers").json()] == ["lab"]
    assert client.get("/managers/nope").status_code == 404
    assert client.put("/policies/nightly", json=policy_body()).status_code == 200
    in_use = client.delete("/managers/lab")
    assert in_use.status_code == 409 and "nightly" in in_use.json()["detail"]
    assert client.delete("/policies/nightly").status_code == 204
    assert client.delete("/managers/lab").status_code == 204
    assert client.delete("/managers/lab").status_code == 404


# sync: the proxy VMs per cluster ---------------------------------------------------------


@pytest.fixture
def proxy_world() -> World:
    world = with_proxies(make_world())
    world.service.add_manager(manager_body())
    return world


def test_sync_shows_per_cluster_its_proxies_and_whether_one_is_alive(proxy_world: World) -> None:
    world = proxy_world
    world.engine.cluster_names = ["cluster1", "cluster2", "cluster3"]  # type: ignore[attr-defined]
    alive = register_proxy(world, "p1", "drover-proxy-cluster1", "cluster1", alive=True)
    dead = register_proxy(world, "p2", "drover-proxy-cluster2", "cluster2", alive=False)
    world.engine.vms.append(vm("vm-a", "web1"))  # not a proxy: no worker registered
    synced = world.service.sync_manager("lab")
    assert synced["proxies"] == {
        "cluster1": [
            {
                "vm": "drover-proxy-cluster1",
                "vm_id": "p1",
                "worker": alive,
                "alive": True,
                "queue": "proxy.cluster1",
                "last_seen": 1000.0,
            }
        ],
        "cluster2": [
            {
                "vm": "drover-proxy-cluster2",
                "vm_id": "p2",
                "worker": dead,
                "alive": False,
                "queue": "proxy.cluster2",
                "last_seen": 1000.0,
            }
        ],
        "cluster3": [],
    }
    assert synced["clusters_without_live_proxy"] == ["cluster2", "cluster3"]
    assert alive == "proxy-drover-proxy-cluster1@node1"
    assert [s[0] for s in world.engine.searches] == [  # type: ignore[attr-defined]
        ["drover-proxy-cluster1", "drover-proxy-cluster2"]
    ]


def test_sync_ignores_proxies_the_engine_does_not_have(proxy_world: World) -> None:
    world = proxy_world
    register_proxy(world, "p1", "drover-proxy-cluster1", "cluster1", alive=True)
    world.engine.vms = []  # removed from this engine (or a proxy of another manager)
    synced = world.service.sync_manager("lab")
    assert synced["proxies"] == {"cluster1": [], "cluster2": []}
    assert synced["clusters_without_live_proxy"] == ["cluster1", "cluster2"]


def test_a_proxy_whose_vm_moved_does_not_serve_its_new_cluster(proxy_world: World) -> None:
    world = proxy_world
    register_proxy(world, "p1", "drover-proxy-cluster1", "cluster1", alive=True)
    world.engine.vms = [vm("p1", "drover-proxy-cluster1", cluster="cluster2")]
    synced = world.service.sync_manager("lab")
    [moved] = synced["proxies"]["cluster2"]
    assert moved["alive"] is True and moved["queue"] == "proxy.cluster1"
    assert synced["clusters_without_live_proxy"] == ["cluster1", "cluster2"]


def test_sync_without_proxies_searches_no_vm(proxy_world: World) -> None:
    synced = proxy_world.service.sync_manager("lab")
    assert synced["proxies"] == {"cluster1": [], "cluster2": []}
    assert proxy_world.engine.searches == []


def test_sync_reports_proxies_it_could_not_read_and_still_answers(world: World) -> None:
    """The plain fakes: no clusters on the engine, no Redis behind the state."""
    world.service.add_manager(manager_body())
    synced = world.service.sync_manager("lab")
    assert synced["hosts"] == ["host1", "host2"]
    assert synced["proxies"] == {}
    assert synced["proxies_error"].startswith("reading the proxy VMs failed")


@pytest.fixture
def cli_world(proxy_world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    http = TestClient(make_api(proxy_world), raise_server_exceptions=False)
    monkeypatch.setattr(
        commands, "make_client", lambda: ApiClient("http://testserver", TOKEN, http=http)
    )
    monkeypatch.setattr(cli_module, "configure_logging", lambda *_args, **_kw: None)
    get_settings.cache_clear()
    yield proxy_world
    get_settings.cache_clear()


def test_manager_sync_prints_a_line_per_cluster_and_warns_without_a_live_proxy(
    cli_world: World,
) -> None:
    alive = register_proxy(cli_world, "p1", "drover-proxy-cluster1", "cluster1", alive=True)
    synced = CliRunner().invoke(cli, ["manager", "sync", "lab"], catch_exceptions=False)
    assert synced.exit_code == 0, synced.output
    lines = synced.stdout.splitlines()
    assert f"cluster cluster1: proxies: drover-proxy-cluster1 (alive, worker {alive})" in lines
    assert "cluster cluster2: proxies: no proxy VM has registered" in lines
    assert synced.stderr.splitlines() == [
        "warning: no live proxy worker serves cluster cluster2 (queue proxy.cluster2): mode "
        "disk_attachment cannot run there; start `drover worker --proxy` in a proxy VM of "
        "that cluster"
    ]
    cli_world.state.forget_worker(alive)  # type: ignore[attr-defined]
    synced = CliRunner().invoke(cli, ["manager", "sync", "lab"], catch_exceptions=False)
    [line] = [x for x in synced.stdout.splitlines() if x.startswith("cluster cluster1")]
    assert "drover-proxy-cluster1 (not alive, last seen " in line and alive in line
    assert len(synced.stderr.splitlines()) == 2
    as_json = CliRunner().invoke(cli, ["manager", "sync", "lab", "--json"])
    document = json.loads(as_json.stdout)
    assert [p["vm"] for p in document["proxies"]["cluster1"]] == ["drover-proxy-cluster1"]
    assert document["proxies"]["cluster2"] == []
