"""The CLI's client for the Drover HTTP API.

Failures become `DroverError`s with the API's own `detail`, so the CLI prints one line:
an unreachable API says how to start it, a refused token says which variable to set.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from shared.errors import ConfigError, DroverError, ServiceError
from shared.settings import Settings

TIMEOUT_S = 120.0  # a policy run searches the engine, which may take a while
logging.getLogger("httpx").setLevel(logging.WARNING)  # no request lines on the CLI's stderr


class ApiClient:
    def __init__(self, url: str, token: str = "", *, http: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = http or httpx.Client(base_url=self.url, timeout=TIMEOUT_S)
        self.http.headers.update(headers)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiClient:
        return cls(settings.api_url, settings.api_token.get_secret_value())

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(
        self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        try:
            response = self.http.request(method, path, json=body, params=params)
        except httpx.TimeoutException as e:
            raise ServiceError(
                f"the Drover API at {self.url} did not answer in time ({type(e).__name__})",
                hint="check the API's log",
            ) from None
        except httpx.TransportError:
            raise ServiceError(
                f"cannot reach the Drover API at {self.url}: start it with `drover api`",
                hint="or set DROVER_API_URL to where it runs",
            ) from None
        return self._result(response)

    def _result(self, response: httpx.Response) -> Any:
        if response.status_code == 401:
            raise ConfigError(
                f"the Drover API at {self.url} refused the request: missing or wrong API token",
                hint="set DROVER_API_TOKEN to one of the tokens in the API's DROVER_API_TOKENS",
            )
        if response.status_code >= 400:
            raise _error(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def _error(response: httpx.Response) -> DroverError:
    detail = _detail(response)
    if response.status_code == 500:
        return ServiceError(f"the Drover API failed: {detail}")
    if response.status_code > 500:
        return ServiceError(detail)
    return ConfigError(detail)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str) and detail:
        return detail
    return f"HTTP {response.status_code} from {response.request.url.path}: {response.text[:200]}"
