from __future__ import annotations

import hmac
from typing import Any

import pytest
from pydantic import SecretStr

from orchestrator import auth
from orchestrator.api import check_serving
from orchestrator.flower import basic_auth, flower_argv
from shared.errors import ConfigError
from shared.settings import Settings
from tests.unit.orchestrator_fakes import (
    TOKEN,
    TestClient,
    make_api,
    make_world,
    quiet_logs,  # noqa: F401  (an autouse fixture)
)


@pytest.fixture
def client() -> TestClient:
    return TestClient(make_api(make_world()), raise_server_exceptions=False)


def test_health_needs_no_token(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
def test_missing_or_wrong_token_is_401(client: TestClient, headers: dict[str, str]) -> None:
    for path in ("/jobs", "/managers", "/policies", "/backups"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401, path
        assert "DROVER_API_TOKENS" in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.post("/policies/x/run", headers=headers).status_code == 401


def test_right_token_passes(client: TestClient) -> None:
    response = client.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.json() == []


def test_insecure_local_needs_no_token() -> None:
    client = TestClient(make_api(make_world(), auth=False))
    assert client.get("/jobs").status_code == 200


def test_every_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    tokens = [SecretStr("first"), SecretStr("second"), SecretStr("third")]
    assert auth.token_matches("first", tokens)
    assert len(calls) == 3  # no early exit on the first match
    assert not auth.token_matches("fourth", tokens)
    assert not auth.token_matches("", tokens)
    assert not auth.token_matches("x", [])


def test_empty_configured_tokens_never_match() -> None:
    dependency = auth.TokenAuth([SecretStr("")])
    assert dependency.tokens == []


def test_api_refuses_to_start_without_tokens() -> None:
    with pytest.raises(ConfigError, match="no API token") as info:
        check_serving(Settings(api_tokens=[]), "127.0.0.1", insecure_local=False)
    assert "DROVER_API_TOKENS" in str(info.value)
    check_serving(Settings(api_tokens=[SecretStr("t")]), "0.0.0.0", insecure_local=False)


def test_insecure_local_binds_loopback_only() -> None:
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1 only"):
        check_serving(Settings(), "0.0.0.0", insecure_local=True)
    check_serving(Settings(), "127.0.0.1", insecure_local=True)
    check_serving(Settings(), "localhost", insecure_local=True)


def test_flower_needs_credentials() -> None:
    with pytest.raises(ConfigError, match="DROVER_FLOWER_PASSWORD"):
        basic_auth(Settings(), "0.0.0.0", insecure_local=False)
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1 only"):
        basic_auth(Settings(), "10.0.0.1", insecure_local=True)
    assert basic_auth(Settings(), "127.0.0.1", insecure_local=True) == ""
    settings = Settings(flower_user="ops", flower_password=SecretStr("pw"))
    credentials = basic_auth(settings, "0.0.0.0", insecure_local=False)
    assert flower_argv("0.0.0.0", 5555, credentials)[-1] == "--basic-auth=ops:pw"
    assert not any("basic" in a for a in flower_argv("127.0.0.1", 5555, ""))
    with pytest.raises(ConfigError, match="may not contain"):
        basic_auth(Settings(flower_user="a:b", flower_password=SecretStr("p")), "::1", False)
