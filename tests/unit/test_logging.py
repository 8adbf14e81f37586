import json

import pytest
import structlog

from shared.logging import bind_ids, configure_logging, get_logger
from shared.settings import LogSettings


def test_json_lines_with_ids_and_no_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogSettings(format="json"), force=True)
    structlog.contextvars.clear_contextvars()
    bind_ids(job_id="j1", vm_id="v1", disk_id="d1")
    get_logger("t").info("connected", password="hunter2", api_token="abc", ca_file="/ca.pem")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    structlog.contextvars.clear_contextvars()
    assert line["event"] == "connected"
    assert (line["job_id"], line["vm_id"], line["disk_id"]) == ("j1", "v1", "d1")
    assert line["password"] == "***"
    assert line["api_token"] == "***"
    assert line["ca_file"] == "/ca.pem"
