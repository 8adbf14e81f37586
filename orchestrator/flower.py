"""Celery Flower for the fleet, behind basic authentication from settings.

Without `flower_user` / `flower_password` it refuses to start, unless `--insecure-local`,
which serves without authentication on 127.0.0.1 only. The credentials go to Flower in
memory (never on a process command line, never in a log).
"""

from __future__ import annotations

from orchestrator.auth import is_loopback
from shared.errors import ConfigError
from shared.settings import Settings

DEFAULT_PORT = 5555
AUTH_HINT = "set DROVER_FLOWER_USER and DROVER_FLOWER_PASSWORD (or flower_user/flower_password)"


def basic_auth(settings: Settings, host: str, insecure_local: bool) -> str:
    """`user:password` for Flower, or "" for --insecure-local; ConfigError when unsafe."""
    if insecure_local:
        if not is_loopback(host):
            raise ConfigError(
                f"--insecure-local serves Flower without authentication on 127.0.0.1 only, "
                f"not {host}",
                hint=f"drop --host, or drop --insecure-local and {AUTH_HINT}",
            )
        return ""
    user, password = settings.flower_user, settings.flower_password.get_secret_value()
    if not user or not password:
        raise ConfigError(
            "Flower needs a user and password, or anyone could see and control the workers",
            hint=f"{AUTH_HINT}; or pass --insecure-local to serve on 127.0.0.1 without them",
        )
    if ":" in user or "," in user or "," in password:
        raise ConfigError(
            "the Flower user may not contain ':' or ',' and the password may not contain ','",
            hint="choose other credentials",
        )
    return f"{user}:{password}"


def flower_argv(host: str, port: int, auth: str) -> list[str]:
    argv = ["flower", f"--address={host}", f"--port={port}"]
    return [*argv, f"--basic-auth={auth}"] if auth else argv


def run_flower(settings: Settings, host: str, port: int, insecure_local: bool = False) -> None:
    from workers.app import create_app

    auth = basic_auth(settings, host, insecure_local)
    create_app(settings).start(flower_argv(host, port, auth))
