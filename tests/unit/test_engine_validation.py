"""Engine URL and user name checks, and what they tell the operator."""

from __future__ import annotations

import pytest

from shared.engine.client import EngineClient
from shared.engine.validation import validate_engine_url, validate_username
from shared.errors import ConfigError
from shared.settings import EngineSettings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://olvm.example/ovirt-engine/api", "https://olvm.example/ovirt-engine/api"),
        (
            "https://olvm.example:8443/ovirt-engine/api/",
            "https://olvm.example:8443/ovirt-engine/api",
        ),
        (" https://10.0.0.5/ovirt-engine/api ", "https://10.0.0.5/ovirt-engine/api"),
    ],
)
def test_good_urls(url: str, expected: str) -> None:
    assert validate_engine_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "",
        "olvm.example",
        "http://olvm.example/ovirt-engine/api",
        "https://olvm.example",
        "https://olvm.example/ovirt-engine",
        "https://olvm.example/api",
        "https:///ovirt-engine/api",
        "https://olvm.example:port/ovirt-engine/api",
        "https://olvm.example/ovirt-engine/api?x=1",
    ],
)
def test_bad_urls_name_the_expected_form(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_engine_url(url)
    assert "https://ENGINE_HOST[:PORT]/ovirt-engine/api" in str(info.value)


def test_credentials_in_the_url_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        validate_engine_url("https://admin:s3cret@olvm.example/ovirt-engine/api")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("name", ["admin@internal", "backup@corp.example.com"])
def test_good_user_names(name: str) -> None:
    assert validate_username(name) == name


@pytest.mark.parametrize("name", ["", "admin", "@internal", "admin@", "a b@internal", "a@b@c"])
def test_bad_user_names(name: str) -> None:
    with pytest.raises(ConfigError, match="user@domain"):
        validate_username(name)


def settings(**changes: str) -> EngineSettings:
    values: dict[str, str] = {
        "url": "https://127.0.0.1:1/ovirt-engine/api",
        "username": "admin@internal",
        "password": "pw",
        "ca_file": "",
    }
    values.update(changes)
    return EngineSettings.model_validate(values)


def test_connect_checks_settings_before_any_request() -> None:
    with pytest.raises(ConfigError, match="ovirt-engine/api"):
        EngineClient.connect(settings(url="https://127.0.0.1:1/"))
    with pytest.raises(ConfigError, match="user@domain"):
        EngineClient.connect(settings(username="admin"))
    with pytest.raises(ConfigError, match="no password"):
        EngineClient.connect(settings(password=""))
    with pytest.raises(ConfigError, match="CA file"):
        EngineClient.connect(settings(ca_file="/nonexistent/ca.pem"))
