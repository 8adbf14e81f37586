"""Bad input at the API: repository values, ids, a silent engine, bodies and what errors quote.

Each group answers one finding of a schemathesis run: a long `repository` reached the
filesystem (500), a job id shaped like another Redis key was read as a job, `POST /managers`
waited 300 s for an engine that never answered, and bodies of any size were read (and echoed)
before the token was checked.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.types import Message

from orchestrator import managers as mgr
from orchestrator.api import MAX_BODY_BYTES, MAX_DETAIL_CHARS, create_app
from orchestrator.auth import TokenAuth
from orchestrator.service import check_backup_id, check_job_id, check_repository
from shared.engine.errors import EngineUnreachable
from shared.errors import ConfigError
from shared.state import JobState
from tests.unit.orchestrator_fakes import (
    TOKEN,
    TestClient,
    World,
    api_client,
    make_world,
    manager_body,
    policy_body,
    quiet_logs,  # noqa: F401  (an autouse fixture)
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOB_ID = "0123456789abcdef0123456789abcdef"
LONG_NAME = "/srv/" + "a" * 300  # one component over NAME_MAX: ENAMETOOLONG before


@pytest.fixture
def world() -> World:
    return make_world()


@pytest.fixture
def client(world: World) -> TestClient:
    return api_client(world)


# 1. repository values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        (LONG_NAME, "has a path component longer than 255 bytes"),
        ("/" + "a/" * 600, "is longer than 1024 characters"),
        ("relative/repo", "is not an absolute path"),
        ("s3://bucket/backups", "S3 repositories are not supported yet"),
        ("S3://bucket/backups", "S3 repositories are not supported yet"),
        ("nfs://filer/backups", "is neither a path nor a file:// URL"),
        ("file://filer/backups", "is not a plain file:// URL of this host"),
        ("file:///srv/backups?x=1", "is not a plain file:// URL of this host"),
        ("file://[::1/backups", "is not a valid URL"),
        ("file://backups", "is not a plain file:// URL of this host"),
        ("file:///srv/%00x", "contains control characters"),
        ("/srv/back\x00ups", "contains control characters"),
        ("/srv/\ud800", "contains control characters"),
        ("file:///" + "%61" * 300, "has a path component longer than 255 bytes"),
    ],
)
def test_bad_repository_values_are_refused(location: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        check_repository(location)
    assert len(str(caught.value)) < 300  # the value is quoted in part


@pytest.mark.parametrize(
    "location", ["/srv/backups", "/", "file:///srv/backups", "file://localhost/srv/b k"]
)
def test_repository_paths_and_file_urls_pass(location: str) -> None:
    assert check_repository(location) == location


def test_long_repository_is_400_on_every_endpoint(client: TestClient, world: World) -> None:
    world.service.add_manager(manager_body())
    for response in (
        client.get("/backups", params={"repository": LONG_NAME}),
        client.get("/backups/b1", params={"repository": LONG_NAME}),
        client.post("/restores", json={"backup_id": "b1", "repository": LONG_NAME}),
    ):
        assert response.status_code == 400, response.text
        assert "path component longer than 255 bytes" in response.json()["detail"]
        assert LONG_NAME not in response.text
    assert world.repository.opened == []


def test_s3_and_relative_repositories_are_400(client: TestClient) -> None:
    s3 = client.get("/backups", params={"repository": "s3://bucket/p"})
    assert s3.status_code == 400 and "not supported yet" in s3.json()["detail"]
    relative = client.get("/backups", params={"repository": "../../etc"})
    assert relative.status_code == 400 and "absolute path" in relative.json()["detail"]


def test_a_valid_repository_reaches_the_repository(client: TestClient, world: World) -> None:
    world.repository.summaries = [{"backup_id": "b1", "vm_id": "v", "vm_name": "web1"}]
    response = client.get("/backups", params={"repository": "file:///srv/backups"})
    assert response.status_code == 200 and response.json()[0]["backup_id"] == "b1"
    assert world.repository.opened == ["file:///srv/backups"]
    assert client.get("/backups").status_code == 200  # the settings' repository (memory://)


def test_an_unreadable_repository_is_400(client: TestClient, world: World) -> None:
    def unreadable(location: str) -> Any:
        raise PermissionError(13, "Permission denied")

    world.service.open_repository = unreadable
    response = client.get("/backups", params={"repository": "file:///root/secret"})
    assert response.status_code == 400
    assert "cannot read repository 'file:///root/secret': Permission denied" in response.text


def test_policies_store_only_valid_repositories(client: TestClient) -> None:
    response = client.put("/policies/nightly", json=policy_body(repository=LONG_NAME))
    assert response.status_code == 400 and "longer than 255 bytes" in response.text
    good = client.put("/policies/nightly", json=policy_body(repository="/srv/backups"))
    assert good.status_code == 200, good.text


# 2. ids that become keys ----------------------------------------------------------------


class KeySpy:
    """Records every job id the state store is asked for."""

    def __init__(self, world: World) -> None:
        self.asked: list[str] = []
        real = world.state.job

        def job(job_id: str) -> JobState | None:
            self.asked.append(job_id)
            return real(job_id)

        world.state.job = job  # type: ignore[method-assign]


@pytest.mark.parametrize(
    "job_id",
    [f"{JOB_ID}:disks", f"{JOB_ID}:chunks:disk-1", JOB_ID.upper(), JOB_ID[:-1], "x" * 5000],
)
def test_job_ids_of_another_shape_never_become_keys(
    client: TestClient, world: World, job_id: str
) -> None:
    world.state.create_job(JobState(id=JOB_ID, vm_id="v", vm_name="web1", manager="lab"))
    spy = KeySpy(world)
    response = client.get(f"/jobs/{job_id}")
    assert response.status_code == 404
    assert "job ids are 32 lowercase hexadecimal digits" in response.json()["detail"]
    assert len(response.text) < 400 and spy.asked == []
    assert client.get(f"/jobs/{JOB_ID}").status_code == 200 and spy.asked == [JOB_ID]


def test_check_job_id() -> None:
    assert check_job_id(JOB_ID) == JOB_ID
    with pytest.raises(Exception, match="32 lowercase hexadecimal"):
        check_job_id(f"{JOB_ID}\n")


@pytest.mark.parametrize("backup_id", [".hidden", "a:b", "a/b", "x" * 129, "é"])
def test_bad_backup_ids_are_400(client: TestClient, world: World, backup_id: str) -> None:
    world.service.add_manager(manager_body())
    with pytest.raises(ConfigError, match="is not valid"):
        check_backup_id(backup_id)
    response = client.post("/restores", json={"backup_id": backup_id})
    assert response.status_code == 400 and "backup id" in response.json()["detail"]
    assert world.repository.opened == [] and world.submit.restores == []
    if "/" not in backup_id:
        assert client.get(f"/backups/{backup_id}").status_code == 400


def test_a_long_backup_id_is_quoted_in_part(client: TestClient) -> None:
    response = client.post("/restores", json={"backup_id": "b" * 100_000})
    assert response.status_code == 400 and len(response.text) < 400
    assert "(100000 characters)" in response.json()["detail"]


# 3. an engine that does not answer ------------------------------------------------------


@pytest.fixture
def silent_engine() -> Iterator[str]:
    """An engine URL whose port accepts connections (the kernel does) but never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"https://127.0.0.1:{server.getsockname()[1]}/ovirt-engine/api"


def test_probe_gives_up_on_a_silent_engine(silent_engine: str) -> None:
    started = time.monotonic()
    with pytest.raises(EngineUnreachable, match=r"does not answer: no answer within 0.3 s"):
        mgr.probe(silent_engine, timeout_s=0.3)
    assert time.monotonic() - started < 3


def test_probe_reports_a_refused_connection() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(EngineUnreachable, match="does not answer"):
        mgr.probe(f"https://127.0.0.1:{port}/ovirt-engine/api", timeout_s=2)


def test_adding_a_silent_manager_fails_fast(
    world: World, silent_engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mgr, "PROBE_TIMEOUT_S", 0.3)
    world.service.connect = mgr.connect
    started = time.monotonic()
    response = api_client(world).post("/managers", json=manager_body(url=silent_engine))
    assert time.monotonic() - started < 3
    assert response.status_code == 502
    detail = response.json()["detail"]
    assert detail.startswith("connection test of manager 'lab' failed: the engine at")
    assert "no answer within 0.3 s" in detail
    assert world.state.document("manager", "lab") is None


def test_the_real_service_probes_before_it_logs_in(tmp_path: Any) -> None:
    from orchestrator.service import build_service
    from shared.settings import load_settings

    settings = load_settings(redis_url="redis://127.0.0.1:1/0", state_dir=tmp_path)
    assert build_service(settings).connect is mgr.connect


# 4. bodies, authentication first, and what errors quote ---------------------------------


def asgi_request(
    world: World, method: str, path: str, headers: dict[str, str], chunks: list[bytes]
) -> tuple[int, bytes, int]:
    """One request straight through ASGI: (status, body, how many chunks the API read)."""
    app = create_app(world.service, TokenAuth([SecretStr(TOKEN)]))
    sent: list[Message] = []
    pending = list(chunks)

    async def receive() -> Message:
        if not pending:
            await asyncio.sleep(3600)  # a client that sends nothing more
        body = pending.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message: Message) -> None:
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": raw, "client": ("127.0.0.1", 1), "server": ("t", 80),
    }  # fmt: skip
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, len(chunks) - len(pending)


MiB = 1 << 20
CHUNK = b"x" * (64 * 1024)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_no_body_is_read_without_a_token(world: World, headers: dict[str, str]) -> None:
    declared = headers | {"Content-Length": str(100 * MiB), "Content-Type": "application/json"}
    status, body, read = asgi_request(world, "POST", "/policies", declared, [CHUNK] * 1600)
    assert (status, read) == (401, 0)
    assert b"missing or wrong API token" in body


def test_a_declared_large_body_is_413_unread(world: World) -> None:
    headers = AUTH | {"Content-Length": str(400 * MiB), "Content-Type": "application/json"}
    status, body, read = asgi_request(world, "POST", "/policies", headers, [CHUNK] * 6400)
    assert (status, read) == (413, 0)
    assert b"larger than 1.0 MiB" in body and len(body) < 200


def test_a_streamed_large_body_is_413_after_the_limit(world: World) -> None:
    headers = AUTH | {"Content-Type": "application/json"}  # chunked: no Content-Length
    status, body, read = asgi_request(world, "POST", "/policies", headers, [CHUNK] * 64)
    assert status == 413 and b"the most the Drover API accepts" in body
    assert read * len(CHUNK) <= MAX_BODY_BYTES + len(CHUNK)


def test_a_body_in_pieces_under_the_limit_passes(world: World) -> None:
    import json

    raw = json.dumps(policy_body()).encode()
    headers = AUTH | {"Content-Type": "application/json"}
    status, body, _ = asgi_request(world, "POST", "/policies", headers, [raw[:20], raw[20:]])
    assert status == 201, body
    assert world.state.document("policy", "nightly") is not None


def test_a_body_at_the_limit_is_read(client: TestClient) -> None:
    padding = " " * (MAX_BODY_BYTES - 200)
    response = client.post(
        "/policies",
        content=f'{{"name": "nightly"{padding}}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400 and "is required" in response.text  # parsed, then refused
    over = client.post("/policies", content=b" " * (MAX_BODY_BYTES + 1))
    assert over.status_code == 413


def test_a_client_that_leaves_mid_body_gets_nothing(world: World) -> None:
    app = create_app(world.service, TokenAuth([SecretStr(TOKEN)]))
    messages: list[Message] = [
        {"type": "http.request", "body": b"{", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/policies", "query_string": b"",
        "headers": [(b"authorization", AUTH["Authorization"].encode())],
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent == []


def test_documentation_and_health_stay_public(client: TestClient) -> None:
    client.headers.pop("Authorization")
    assert client.get("/health").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/nowhere").status_code == 401


def test_validation_errors_quote_input_in_part(client: TestClient) -> None:
    name = "n" * 400_000
    response = client.post("/policies", json=policy_body(name=name))
    assert response.status_code == 400 and len(response.text) < 600
    assert "is not a valid name" in response.json()["detail"]
    assert "(399936 more characters)" in response.json()["detail"]
    repository = "r" * 400_000  # its validator's message quotes the value
    response = client.post("/policies", json=policy_body(repository=repository))
    assert response.status_code == 400 and len(response.text) < 600
    assert "is neither an absolute path nor a URL" in response.json()["detail"]


def test_many_problems_are_counted_not_listed(client: TestClient) -> None:
    body = policy_body() | {f"unknown{i}": i for i in range(5000)}
    response = client.post("/policies", json=body)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert len(detail) <= MAX_DETAIL_CHARS + 50 and "and 4990 more problems" in detail


def test_a_long_policy_repository_is_quoted_in_part(client: TestClient) -> None:
    response = client.post("/policies", json=policy_body(repository="s3://b/" + "k" * 100_000))
    assert response.status_code == 400 and len(response.text) < 400
    assert "is longer than 1024 characters" in response.json()["detail"]


def test_other_errors_are_clipped(client: TestClient, world: World) -> None:
    def failing(location: str) -> Any:
        raise ConfigError("the repository failed: " + "?" * 100_000)

    world.service.open_repository = failing
    response = client.get("/backups", params={"repository": "file:///srv/backups"})
    assert response.status_code == 400 and "the repository failed" in response.text
    assert response.json()["detail"].endswith("... (98023 more characters)")


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer  {TOKEN} ", True),
        (f"Bearer {TOKEN}x", False),
        (f"Basic {TOKEN}", False),
        ("Bearer ", False),
        ("", False),
        (None, False),
    ],
)
def test_token_auth_accepts(header: str | None, accepted: bool) -> None:
    assert TokenAuth([SecretStr(TOKEN)]).accepts(header) is accepted
    assert TokenAuth([SecretStr(TOKEN)], enabled=False).accepts(header) is True
