from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.settings import load_settings


def test_defaults() -> None:
    settings = load_settings()
    assert settings.effective_broker_url == settings.redis_url
    # live workers hold their messages (workers.liveness): the timeout only bounds how long
    # a dead worker's message waits, minutes rather than the longest task
    assert settings.worker.visibility_timeout_s <= 300


def test_yaml_below_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "drover.yaml"
    config.write_text(
        "redis_url: redis://yaml:1/0\n"
        "engine:\n  url: https://e/ovirt-engine/api\n  password: s3cret\n"
    )
    monkeypatch.setenv("DROVER_CONFIG", str(config))
    monkeypatch.setenv("DROVER_REDIS_URL", "redis://env:2/0")
    settings = load_settings()
    assert settings.redis_url == "redis://env:2/0"
    assert settings.engine.url == "https://e/ovirt-engine/api"
    assert settings.engine.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_nested_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROVER_ENGINE__USERNAME", "backup@internal")
    assert load_settings().engine.username == "backup@internal"


def test_bad_yaml_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "drover.yaml"
    config.write_text("- just\n- a list\n")
    monkeypatch.setenv("DROVER_CONFIG", str(config))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings()


def test_missing_yaml_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROVER_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings()


def test_invalid_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROVER_WORKER__CONCURRENCY", "many")
    with pytest.raises(ConfigError, match=r"worker\.concurrency"):
        load_settings()
