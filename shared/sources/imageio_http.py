"""The boundary to ovirt-imageio's HTTP backend (untyped): open a transfer URL, falling back
from the host's daemon (transfer_url) to the engine's proxy (proxy_url)."""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import urlparse

from ovirt_imageio._internal import http as imageio_http
from ovirt_imageio._internal.backends import http as backend_http

from shared.errors import ServiceError
from shared.logging import get_logger
from shared.redact import redact

log = get_logger(__name__)
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
# what a broken or refused connection raises; worth a new connection
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


class ImageioError(ServiceError):
    """The imageio daemon or proxy could not be reached, or refused a request. Its message
    never carries a transfer's ticket."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(redact(message), hint=redact(hint))


def open_backend(url: str, ca_file: str | None, *, secure: bool = True) -> Any:
    return backend_http.open(
        urlparse(url),
        "r+",
        cafile=ca_file,
        secure=secure,
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
    )


def open_transfer(
    transfer_url: str | None, proxy_url: str | None, ca_file: str | None, *, secure: bool = True
) -> tuple[Any, str]:
    """(backend, url used): the host's daemon first, the engine's proxy if the host is down."""
    try:
        return _open_transfer(transfer_url, proxy_url, ca_file, secure)
    except imageio_http.Error as e:
        raise ImageioError(
            f"imageio refused the image transfer: {e}",
            hint="the ticket may have expired or the transfer ended; start a new transfer",
        ) from e


def _open_transfer(
    transfer_url: str | None, proxy_url: str | None, ca_file: str | None, secure: bool
) -> tuple[Any, str]:
    if transfer_url:
        try:
            return open_backend(transfer_url, ca_file, secure=secure), transfer_url
        except OSError as e:
            if not proxy_url:
                raise ImageioError(
                    f"cannot reach imageio at {transfer_url}: {e}",
                    hint="open port 54322 from the workers to the hosts, or use the proxy",
                ) from e
            log.warning(
                "imageio on the host unreachable, using the engine proxy",
                transfer_url=transfer_url,
                proxy_url=proxy_url,
                error=str(e),
            )
    if not proxy_url:
        raise ImageioError("the image transfer has neither a transfer_url nor a proxy_url")
    try:
        return open_backend(proxy_url, ca_file, secure=secure), proxy_url
    except OSError as e:
        raise ImageioError(
            f"cannot reach the engine's imageio proxy at {proxy_url}: {e}",
            hint="open port 54323 from the workers to the engine",
        ) from e


def is_http_error(error: BaseException) -> bool:
    return isinstance(error, imageio_http.Error)


def close_quietly(obj: Any, what: str) -> None:
    """`obj.close()` for cleanup: a failure is logged, never raised, so the error being
    handled stays the one the caller sees (as ovirt-imageio's backends do in `__exit__`)."""
    try:
        obj.close()
    except Exception as e:
        log.warning("closing failed", what=what, error=str(e), exc_info=True)
