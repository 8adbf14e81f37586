"""Errors of the backup repository, each written for the operator."""

from __future__ import annotations

from shared.errors import ConfigError, DroverError


class ObjectNotFound(DroverError):
    """A backend object that does not exist (a missing chunk, manifest or config)."""

    def __init__(self, name: str, where: str) -> None:
        super().__init__(
            f"object {name!r} not found in repository {where}",
            hint="run `drover repo check` to see what else is missing",
        )
        self.name = name


class CorruptionError(DroverError):
    """Stored data that no longer matches what was written."""


class BackupNotFound(ConfigError):
    """A backup id that the repository does not hold."""

    def __init__(self, backup_id: str, where: str) -> None:
        super().__init__(
            f"backup {backup_id!r} not found in repository {where}",
            hint="list the backups with `drover backups`",
        )
        self.backup_id = backup_id
