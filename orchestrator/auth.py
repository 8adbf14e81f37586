"""Bearer-token authentication of the HTTP API.

Tokens come from settings (`api_tokens`). The presented token is compared with every
configured token in constant time, so timing tells nothing about how much of it matched
or which token it was close to.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}
_BEARER = HTTPBearer(auto_error=False, description="one of the tokens in DROVER_API_TOKENS")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
UNAUTHORIZED = (
    "missing or wrong API token: send 'Authorization: Bearer TOKEN' "
    "with one of the tokens in DROVER_API_TOKENS (the CLI reads DROVER_API_TOKEN)"
)
TOKEN_HINT = (
    "set DROVER_API_TOKENS='[\"<a long random token>\"]' (e.g. from `openssl rand -hex 32`)"
)


def token_matches(presented: str, tokens: Sequence[SecretStr]) -> bool:
    """True when `presented` equals one of `tokens`; every token is always compared."""
    given = presented.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, token.get_secret_value().encode())
    return matched


class TokenAuth:
    """A FastAPI dependency: 401 unless the request carries a configured bearer token."""

    def __init__(self, tokens: Sequence[SecretStr], *, enabled: bool = True) -> None:
        self.tokens = [t for t in tokens if t.get_secret_value()]
        self.enabled = enabled

    def __call__(self, credentials: Credentials) -> None:
        if not self.enabled:
            return
        if credentials is None or not token_matches(credentials.credentials, self.tokens):
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail=UNAUTHORIZED,
                headers={"WWW-Authenticate": "Bearer"},
            )

    def accepts(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header value carries a configured bearer token."""
        if not self.enabled:
            return True
        scheme, _, presented = (authorization or "").partition(" ")
        presented = presented.strip()  # as fastapi's HTTPBearer reads it
        return (
            scheme.lower() == "bearer" and bool(presented) and token_matches(presented, self.tokens)
        )


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")
