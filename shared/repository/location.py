"""From a repository location (a path or URL) to its backend."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from shared.errors import ConfigError
from shared.repository.backend import Backend
from shared.repository.local import LocalBackend


def backend_for(location: str) -> Backend:
    """`/path`, `relative/path` or `file:///path`; `s3://` is planned, not yet supported."""
    if not location.strip():
        raise ConfigError("the repository location is empty", hint="set a directory path")
    if "://" not in location:
        return _local(Path(location), location)
    url = urlparse(location)
    if url.scheme == "file":
        if url.netloc not in ("", "localhost"):
            raise ConfigError(
                f"repository URL {location!r} names host {url.netloc!r}",
                hint="file:// URLs are local: write file:///path (mount remote storage first)",
            )
        return _local(Path(unquote(url.path)), location)
    if url.scheme == "s3":
        raise ConfigError(
            f"repository {location!r}: S3 repositories are not supported yet",
            hint="use a filesystem path or a file:// URL (an S3 bucket can be mounted)",
        )
    raise ConfigError(
        f"repository {location!r} has an unknown scheme {url.scheme!r}",
        hint="use a filesystem path or a file:// URL",
    )


def _local(path: Path, location: str) -> LocalBackend:
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"repository {location!r} is not a directory", hint="point it at a directory"
        )
    return LocalBackend(path)
