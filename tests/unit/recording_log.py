"""A stand-in for a module's structlog logger in unit tests: keeps (level, event, fields)."""

from __future__ import annotations

from typing import Any


class RecordingLog:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def record(event: str, **fields: Any) -> None:
            self.records.append((level, event, fields))

        return record

    def events(self, level: str) -> list[str]:
        return [event for lvl, event, _ in self.records if lvl == level]
