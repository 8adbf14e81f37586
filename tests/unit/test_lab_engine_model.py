"""Unit tests of the lab engine's pieces that need no server: search, OVF, SSO, estate."""

from __future__ import annotations

import time

import pytest
from ovirtsdk4 import reader, types

from lab.dataplane import DomainKind, VolumeFormat
from lab.engine import search
from lab.engine.context import Engine, Timings
from lab.engine.fakeplane import FakeDataPlane
from lab.engine.faults import ApiError
from lab.engine.inventory import Inventory, VmState
from lab.engine.ovf import parse_ovf
from lab.engine.sso import Sso, TokenStore
from lab.engine.tasks import Tasks
from lab.engine.vms import vm_ovf
from lab.engine.xml import make, parse, render
from lab.estate import PROXY_TAG, EstateConfig, build_estate, host_specs


@pytest.fixture
def estate() -> tuple[Inventory, FakeDataPlane]:
    config = EstateConfig(clusters=2, vms=5, disk_size=32 << 20)
    dataplane = FakeDataPlane(host_specs(config))
    return build_estate(config, dataplane), dataplane


def test_search_language() -> None:
    fields: dict[str, search.Field] = {
        "name": lambda item, v: search.match(item["name"], v),
        "tag": lambda item, v: any(search.match(t, v) for t in item["tags"]),
    }
    items = [{"name": "web01", "tags": ["prod"]}, {"name": "DB01", "tags": ["db", "prod"]}]

    def names(query: str) -> list[str]:
        predicate = search.compile_query(query, fields)
        return [i["name"] for i in items if predicate(i)]

    assert names("name=db01") == ["DB01"]
    assert names('name="w*"') == ["web01"]
    assert names("tag=prod and name!=web01") == ["DB01"]
    assert names("name=web01 or tag=db") == ["web01", "DB01"]
    with pytest.raises(ApiError) as bad:
        names("color=red")
    assert bad.value.status == 400


def test_estate_layout(estate: tuple[Inventory, FakeDataPlane]) -> None:
    inv, dataplane = estate
    assert [h.name for h in host_specs(EstateConfig(clusters=3))] == ["host1", "host2", "host3"]
    assert {sd.kind for sd in inv.domains.values()} == set(DomainKind)
    assert len(dataplane.domains) == 3
    vms = {vm.name: vm for vm in inv.vms.values()}
    assert {"web01", "db01", "app01", "file01", "web02"} <= set(vms)
    proxies = [vm for vm in vms.values() if vm.is_proxy]
    assert sorted(vm.virtio_scsi for vm in proxies) == [False, True, True, True]
    assert all(inv.tags[t].name == PROXY_TAG for vm in proxies for t in vm.tag_ids)
    assert {vm.guest_agent for vm in vms.values()} == {True, False}
    assert all(vm.status == VmState.UP for vm in vms.values())
    kinds = {inv.domains[d.sd_id].kind for d in inv.disks.values()}
    assert {DomainKind.BLOCK, DomainKind.GLUSTER} <= kinds
    assert {d.base_format for d in inv.disks.values()} == {VolumeFormat.RAW, VolumeFormat.COW}
    assert all(d.incremental <= (d.base_format == VolumeFormat.COW) for d in inv.disks.values())
    filled = {ref.disk_id for ref, _, _, _ in dataplane.called("fill_volume")}  # type: ignore[misc]
    assert filled == {d.id for d in inv.disks.values() if not d.name.startswith("drover-proxy")}
    again = build_estate(EstateConfig(clusters=2, vms=5, disk_size=32 << 20), FakeDataPlane())
    assert set(again.vms) == set(inv.vms)


def test_ovf_round_trip(estate: tuple[Inventory, FakeDataPlane]) -> None:
    inv, _ = estate
    vm = inv.vm_by_name("db01")
    parsed = parse_ovf(vm_ovf(inv, vm))
    assert parsed.name == "db01"
    assert parsed.memory == vm.memory and parsed.cpus == vm.cpus
    assert sorted(parsed.disk_ids) == sorted(vm.own_disk_ids())
    with pytest.raises(ApiError):
        parse_ovf("<not-ovf")


def test_sso_tokens() -> None:
    sso = Sso("admin@internal", "pw", TokenStore())
    status, answer = sso.token(
        {
            "grant_type": "password",
            "scope": "ovirt-app-api",
            "username": "admin@internal",
            "password": "pw",
        }
    )
    assert status == 200 and answer["token_type"] == "bearer"
    assert sso.tokens.valid(answer["access_token"])
    sso.logout({"token": answer["access_token"]})
    assert not sso.tokens.valid(answer["access_token"])
    status, answer = sso.token(
        {"grant_type": "password", "username": "admin@internal", "password": "x"}
    )
    assert status == 400 and answer["error_code"] == "access_denied"
    assert "incorrect" in answer["error"]


def test_xml_glue_adds_links_and_rejects_garbage() -> None:
    text = render(make(types.Vm, "/ovirt-engine/api/vms/1", id="1", name="x"))
    vm = reader.Reader.read(text)
    assert vm.snapshots.href == "/ovirt-engine/api/vms/1/snapshots"
    with pytest.raises(ApiError) as bad:
        parse(b"<vm><name>", types.Vm)
    assert bad.value.status == 400
    with pytest.raises(ApiError):
        parse(b"<disk/>", types.Vm)


def test_tasks_stop_wakes_sleeping_jobs() -> None:
    tasks = Tasks()
    ran: list[int] = []
    tasks.later(30, lambda: ran.append(1))
    tasks.later(0, lambda: ran.append(2))
    engine = Engine(Inventory(), FakeDataPlane(), tasks, Timings())
    assert engine.tasks is tasks
    time.sleep(0.1)
    tasks.stop()
    assert ran == [2]
