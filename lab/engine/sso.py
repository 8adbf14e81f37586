"""The engine's SSO: OAuth password grant for `ovirt-app-api` and token revocation."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

SCOPE = "ovirt-app-api"


@dataclass
class Token:
    value: str
    username: str
    expires_at: float


class TokenStore:
    """Issued bearer tokens; thread safe."""

    def __init__(self, ttl_s: float = 36000.0) -> None:
        self._ttl_s = ttl_s
        self._tokens: dict[str, Token] = {}
        self._lock = threading.Lock()

    def issue(self, username: str) -> Token:
        token = Token(secrets.token_urlsafe(48), username, time.time() + self._ttl_s)
        with self._lock:
            self._tokens[token.value] = token
        return token

    def valid(self, value: str) -> bool:
        with self._lock:
            token = self._tokens.get(value)
            if token is None:
                return False
            if token.expires_at < time.time():
                del self._tokens[value]
                return False
            return True

    def revoke(self, value: str) -> bool:
        with self._lock:
            return self._tokens.pop(value, None) is not None


class Sso:
    """Answers the two SSO entry points the SDK uses. Returns (HTTP status, JSON body)."""

    def __init__(self, username: str, password: str, tokens: TokenStore) -> None:
        self._username = username
        self._password = password
        self.tokens = tokens

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "password":
            return 400, _error("unsupported_grant_type", "The grant type is not supported.")
        if form.get("scope", "") and SCOPE not in form.get("scope", "").split():
            return 400, _error("invalid_scope", f"The scope {form.get('scope')} is not valid.")
        username = form.get("username", "")
        if "@" not in username:
            return 400, _error(
                "access_denied",
                f"Cannot authenticate user '{username}': No valid profile found in credentials.",
            )
        if username != self._username or form.get("password") != self._password:
            return 400, _error(
                "access_denied",
                f"Cannot authenticate user '{username}': The username or password is incorrect.",
            )
        token = self.tokens.issue(username)
        return 200, {
            "access_token": token.value,
            "scope": SCOPE,
            "exp": str(int(token.expires_at * 1000)),
            "token_type": "bearer",
        }

    def logout(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.tokens.revoke(form.get("token", ""))
        return 200, {}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error_code": code, "error": message}
