from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.engine.errors import EngineAuthError, EngineUnreachable
from shared.sealed import opened_fields
from tests.unit.orchestrator_fakes import (
    ENGINE_URL,
    PASSWORD,
    SECRET_KEY,
    TestClient,
    World,
    api_client,
    make_world,
    manager_body,
    policy_body,
    quiet_logs,  # noqa: F401  (an autouse fixture)
)


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
