from __future__ import annotations

from shared.settings import load_settings
from workers.app import create_app


def test_every_scheduled_task_exists() -> None:
    app = create_app(load_settings(redis_url="redis://127.0.0.1:1/0"))
    app.loader.import_default_modules()
    assert app.conf.beat_schedule
    for entry in app.conf.beat_schedule.values():
        assert entry["task"] in app.tasks
    app.close()
