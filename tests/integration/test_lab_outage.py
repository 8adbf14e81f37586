"""The lab's injected outages (POST /ovirt-engine/lab/outage), seen through the real ovirtsdk4,
and EngineClient riding them out (or refusing to repeat what it must not)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import ovirtsdk4 as sdk
import pytest
from pydantic import SecretStr

from lab.engine import EngineServer, Timings
from lab.engine.fakeplane import FakeDataPlane
from lab.estate import EstateConfig, build_estate, host_specs
from lab.guest_client import login
from lab.pki import CertificateAuthority
from shared.engine import EngineClient, EngineNameInUse, EngineUnavailable
from shared.engine.retry import RetryPolicy
from shared.settings import EngineSettings

pytestmark = pytest.mark.integration
PASSWORD = "lab-secret"
USER = "admin@internal"
FAST = Timings(
    disk_op=0.05,
    snapshot=0.3,
    transfer_init=0.1,
    transfer_final=0.05,
    backup_step=0.05,
    vm_power=0.05,
    finished_ttl=30.0,
    monitor_interval=0.1,
)
QUICK = RetryPolicy(budget_s=15.0, first_delay_s=0.1, max_delay_s=0.5)
FINALIZE = r"^POST .*/imagetransfers/[^/]+/finalize$"
ADD_TRANSFER = r"^POST .*/imagetransfers$"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def engine(ca: CertificateAuthority) -> Iterator[EngineServer]:
    config = EstateConfig(clusters=1, vms=4)
    dataplane = FakeDataPlane(host_specs(config))
    cert, key = ca.issue("engine", ["localhost", "127.0.0.1"])
    server = EngineServer(
        build_estate(config, dataplane), dataplane, cert, key, password=PASSWORD, timings=FAST
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def lab(engine: EngineServer, ca: CertificateAuthority) -> dict[str, Any]:
    """What tests/conftest.py's `lab` fixture yields, for this in-process engine."""
    return {
        "engine": {
            "url": engine.url,
            "username": USER,
            "password": PASSWORD,
            "ca_file": str(ca.ca_file),
        }
    }


@pytest.fixture(autouse=True)
def no_outage_after(lab: dict[str, Any]) -> Iterator[None]:
    yield
    end_outage(lab)


@pytest.fixture
def client(lab: dict[str, Any]) -> Iterator[EngineClient]:
    with EngineClient.connect(settings(lab), retry=QUICK) as engine:
        yield engine


def settings(lab: dict[str, Any]) -> EngineSettings:
    engine = lab["engine"]
    return EngineSettings(
        url=engine["url"],
        username=engine["username"],
        password=SecretStr(engine["password"]),
        ca_file=engine["ca_file"],
    )


# the lab control client, also used by tests/e2e/test_engine_outage.py ---------------------
_tokens: dict[str, str] = {}


def _lab_request(lab: dict[str, Any], method: str, json: Any = None) -> dict[str, Any]:
    engine = lab["engine"]
    base = engine["url"].split("/ovirt-engine/")[0]
    with httpx.Client(base_url=base, verify=engine["ca_file"], timeout=30) as http:
        if base not in _tokens:  # logged in once, so an outage of the SSO does not lock us out
            _tokens[base] = login(http, engine)
        response = http.request(
            method,
            "/ovirt-engine/lab/outage",
            json=json,
            headers={"Authorization": f"Bearer {_tokens[base]}"},
        )
    assert response.status_code == 200, response.text
    return dict(response.json())


def start_outage(lab: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """status, seconds, count, paths, stall: see lab.engine.outage."""
    return _lab_request(lab, "POST", spec)


def outage_state(lab: dict[str, Any]) -> dict[str, Any]:
    return _lab_request(lab, "GET")


def end_outage(lab: dict[str, Any]) -> dict[str, Any]:
    return _lab_request(lab, "DELETE")


def raw_get(lab: dict[str, Any], path: str) -> httpx.Response:
    engine = lab["engine"]
    base = engine["url"].split("/ovirt-engine/")[0]
    return httpx.get(base + path, verify=engine["ca_file"], timeout=30)


def sdk_connection(lab: dict[str, Any]) -> sdk.Connection:
    engine = lab["engine"]
    return sdk.Connection(
        url=engine["url"],
        username=engine["username"],
        password=engine["password"],
        ca_file=engine["ca_file"],
    )


# the lab endpoint ----------------------------------------------------------------------
def test_a_503_outage_answers_api_and_sso_like_a_proxy_then_ends(lab: dict[str, Any]) -> None:
    connection = sdk_connection(lab)
    connection.authenticate()
    started = start_outage(lab, status=503, seconds=1.5)
    assert started["active"] and started["status"] == 503

    page = raw_get(lab, "/ovirt-engine/api/vms")
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    with pytest.raises(sdk.Error, match="isn't the expected XML"):  # the SDK loses the 503
        connection.system_service().vms_service().list()
    with pytest.raises(sdk.Error, match="isn't the expected JSON"):  # logging in, too
        sdk_connection(lab).authenticate()

    time.sleep(1.6)
    assert connection.system_service().vms_service().list()
    state = outage_state(lab)
    assert not state["active"] and state["hits"] == 3
    connection.close()


def test_a_500_is_the_engines_fault_and_count_and_paths_limit_it(lab: dict[str, Any]) -> None:
    connection = sdk_connection(lab)
    vms = connection.system_service().vms_service()
    start_outage(lab, status=500, count=1, paths=r"^GET /ovirt-engine/api/vms$")
    assert connection.system_service().clusters_service().list()  # other paths: served
    with pytest.raises(sdk.Error) as raised:
        vms.list()
    assert raised.value.code == 500
    assert raised.value.fault.detail == "[Internal Engine Error]"
    assert vms.list()  # the count is used up
    assert outage_state(lab) == outage_state(lab) | {"active": False, "hits": 1}
    connection.close()


def test_stall_holds_requests_then_serves_them(lab: dict[str, Any]) -> None:
    connection = sdk_connection(lab)
    connection.authenticate()
    start_outage(lab, status=0, stall=1.0, count=1, paths="/vms$")
    started = time.monotonic()
    assert connection.system_service().vms_service().list()
    assert time.monotonic() - started >= 1.0
    connection.close()


def test_delete_ends_an_outage_and_bad_requests_are_refused(lab: dict[str, Any]) -> None:
    start_outage(lab, status=502)
    assert raw_get(lab, "/ovirt-engine/api").status_code == 502
    assert end_outage(lab)["active"] is False
    assert raw_get(lab, "/ovirt-engine/api").status_code == 401  # served again: no token
    with pytest.raises(AssertionError, match="bad outage request"):
        start_outage(lab, status=200)
    with pytest.raises(AssertionError, match="unknown fields"):
        start_outage(lab, minutes=3)


# EngineClient riding out outages ----------------------------------------------------------
def test_the_client_logs_in_and_reads_through_a_503_outage(lab: dict[str, Any]) -> None:
    start_outage(lab, status=503, seconds=1.0)
    with EngineClient.connect(settings(lab), retry=QUICK) as client:
        assert client.find_vms(names=["web01"])
    assert outage_state(lab)["hits"] >= 2


@contextmanager
def backup_of(client: EngineClient, vm_name: str) -> Iterator[tuple[str, str]]:
    """(disk id, backup id) of a running engine backup of the VM's first disk: the lab, like
    the engine, transfers the disks of a running VM only through a backup (or a snapshot)."""
    (vm,) = client.find_vms(names=[vm_name])
    disk_id = vm.disks[0].id
    backup = client.start_backup(vm.id, [disk_id], timeout_s=30)
    try:
        yield disk_id, backup.id
    finally:
        client.finalize_backup(vm.id, backup.id, timeout_s=30)


def test_one_500_while_finalizing_a_transfer_is_retried(
    lab: dict[str, Any], client: EngineClient
) -> None:
    with backup_of(client, "web01") as (disk_id, backup_id):
        transfer = client.start_transfer(disk_id=disk_id, backup_id=backup_id, timeout_s=30)
        start_outage(lab, status=500, count=1, paths=FINALIZE)
        client.finalize_transfer(transfer.id, timeout_s=30)
        assert outage_state(lab)["hits"] == 1
        done = client.transfer(transfer.id)
        assert done is None or done.phase == "finished_success"


def test_an_add_is_resent_only_when_it_never_reached_the_engine(
    lab: dict[str, Any], client: EngineClient
) -> None:
    with backup_of(client, "db01") as (disk_id, backup_id):
        start_outage(lab, status=500, count=1, paths=ADD_TRANSFER)
        with pytest.raises(EngineUnavailable) as raised:  # it may have been done: not resent
            client.start_transfer(disk_id=disk_id, backup_id=backup_id, timeout_s=30)
        assert raised.value.retryable and raised.value.code == 500
        assert "Internal Engine Error" in str(raised.value)
        assert outage_state(lab)["hits"] == 1
        assert client.open_transfers(disk_ids=[disk_id]) == []

        start_outage(lab, status=503, count=2, paths=ADD_TRANSFER)  # a proxy's: never arrived
        transfer = client.start_transfer(disk_id=disk_id, backup_id=backup_id, timeout_s=30)
        assert outage_state(lab)["hits"] == 2
        assert [t.id for t in client.open_transfers(disk_ids=[disk_id])] == [transfer.id]
        client.finalize_transfer(transfer.id, timeout_s=30)


def test_a_long_outage_gives_up_with_a_retryable_error(lab: dict[str, Any]) -> None:
    client = EngineClient.connect(settings(lab), retry=RetryPolicy(budget_s=1.0, max_delay_s=0.2))
    start_outage(lab, status=503, seconds=10)
    with pytest.raises(EngineUnavailable) as raised:
        client.vm("00000000-0000-0000-0000-000000000000")
    error = raised.value
    assert error.retryable and error.code == 503 and not error.reached
    assert "the engine is unavailable while reading VM" in str(error)
    assert "gave up after" in str(error)
    end_outage(lab)
    client.close()


def test_a_name_in_use_is_not_a_lock(client: EngineClient) -> None:
    (web,) = client.find_vms(names=["web01"])
    with pytest.raises(EngineNameInUse) as raised:
        client.add_vm_from_ovf(client.vm_ovf(web.id), "web01", web.cluster_name)
    error = raised.value
    assert not error.retryable and error.code == 409
    assert str(error).startswith("the name is already in use while creating VM web01")
    assert "locked" not in str(error) and "choose another name" in str(error)
