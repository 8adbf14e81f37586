from __future__ import annotations

import textwrap

import pytest

from orchestrator.policies import (
    backup_request,
    is_proxy,
    parse_policies,
    validate_policy,
)
from shared.backup.enqueue import selected_disks
from shared.errors import ConfigError
from tests.unit.orchestrator_fakes import (
    policy_body,
    quiet_logs,  # noqa: F401  (an autouse fixture)
    vm,
)

EXAMPLE = """
name: nightly-prod
manager: lab
repository: /var/lib/drover/repo
vms: {names: [db01], patterns: ["web*"], tags: [prod], clusters: [cluster1]}
mode: image_transfer
schedule: {cron: "0 2 * * *"}
backup: {type: incremental, full_every: 7}
retention: {keep_last: 14}
exclude_disks: [scratch]
quiesce: true
pre_snapshot:
  {command: "fsfreeze -f /data", host: 10.0.0.5, host_key: "SHA256:abc", key_file: /etc/k}
post_snapshot: {command: "fsfreeze -u /data", host: 10.0.0.5, host_key: "SHA256:abc"}
priority: 5
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_policies(textwrap.dedent(text), "p.yaml")
    return str(info.value)


def test_the_documented_example_parses() -> None:
    [policy] = parse_policies(EXAMPLE)
    assert policy.name == "nightly-prod"
    assert policy.vms.patterns == ["web*"]
    assert policy.schedule is not None and policy.schedule.cron == "0 2 * * *"
    assert policy.pre_snapshot is not None and policy.pre_snapshot.port == 22
    assert policy.retention.keep_last == 14


def test_a_list_under_policies_and_a_bare_list() -> None:
    one = "name: a\nmanager: lab\nvms: {names: [x]}\n"
    two = "name: b\nmanager: lab\nvms: {tags: [t]}\n"
    listed = "policies:\n" + "".join(
        "  - " + textwrap.indent(doc, "    ").lstrip() for doc in (one, two)
    )
    assert [p.name for p in parse_policies(listed)] == ["a", "b"]
    bare = "- {name: a, manager: m, vms: {names: [x]}}"
    assert [p.name for p in parse_policies(bare)] == ["a"]


def test_defaults_and_auto_mode() -> None:
    policy = validate_policy({"name": "p", "manager": "lab", "vms": {"names": ["x"]}})
    assert policy.mode == "auto"
    assert policy.backup.type == "incremental" and policy.backup.full_every == 7
    assert policy.priority == 5 and policy.quiesce


def test_unknown_key_names_the_allowed_ones() -> None:
    message = error_of("name: p\nmanager: lab\nvms: {names: [x]}\nretension: {keep_last: 3}\n")
    assert "unknown key 'retension'" in message
    assert "retention" in message and "policy 'p'" in message


def test_nested_unknown_key() -> None:
    message = error_of("name: p\nmanager: lab\nvms: {namez: [x]}\n")
    assert "unknown key 'vms.namez'" in message
    assert "names, patterns, tags, clusters" in message


def test_unknown_mode() -> None:
    message = error_of("name: p\nmanager: lab\nvms: {names: [x]}\nmode: nbd\n")
    assert "mode:" in message and "'image_transfer'" in message and "'auto'" in message


def test_empty_selector() -> None:
    message = error_of("name: p\nmanager: lab\nvms: {}\n")
    assert "selects no VM" in message and "patterns: ['*']" in message


@pytest.mark.parametrize("priority", [-1, 10])
def test_priority_out_of_range(priority: int) -> None:
    message = error_of(f"name: p\nmanager: lab\nvms: {{names: [x]}}\npriority: {priority}\n")
    assert "priority" in message


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("schedule: {cron: 'every night'}", "is not a cron expression"),
        ("retention: {keep_last: 0}", "retention.keep_last"),
        ("backup: {type: differential}", "backup.type"),
        ("backup: {full_every: 0}", "backup.full_every"),
        ("mode: disk_attachment", "full backups only"),
        ("repository: relative/dir", "neither an absolute path nor a URL"),
        ("pre_snapshot: {command: x}", "pre_snapshot.host is required"),
        ("vms: {names: ['']}", "entries must not be empty"),
    ],
)
def test_bad_values(extra: str, expected: str) -> None:
    base = {"name": "p", "manager": "lab", "vms": "{names: [x]}"}
    key = extra.split(":", 1)[0]
    lines = [f"{k}: {v}" for k, v in base.items() if k != key] + [extra]
    assert expected in error_of("\n".join(lines) + "\n")


def test_missing_and_bad_names() -> None:
    assert "manager is required" in error_of("name: p\nvms: {names: [x]}\n")
    assert "not a valid name" in error_of("name: 'bad name'\nmanager: lab\nvms: {names: [x]}\n")


def test_disk_attachment_full_is_fine() -> None:
    policy = validate_policy(policy_body(mode="disk_attachment", backup={"type": "full"}))
    assert policy.mode == "disk_attachment"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\n", "not valid YAML"),
        ("", "holds no policy"),
        ("policies: []\n", "holds no policy"),
        ("- 3\n", "must be a mapping"),
    ],
)
def test_bad_files(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_duplicates_are_refused() -> None:
    text = "policies:\n  - {name: a, manager: m, vms: {names: [x]}}\n" * 1
    text += "  - {name: a, manager: m, vms: {names: [y]}}\n"
    assert "more than once" in error_of(text)


def test_expansion_into_a_backup_request() -> None:
    policy = validate_policy(
        policy_body(
            exclude_disks=["scratch", "web1-d0"],
            backup={"type": "full", "full_every": 3},
            pre_snapshot={"command": "sync", "host": "10.0.0.5", "host_key": "SHA256:abc"},
        )
    )
    machine = vm("web1", "web1")
    request = backup_request(policy, machine, "job1", "/repo", "image_transfer")
    assert request.vm_id == "web1" and request.vm_name == "web1" and request.job_id == "job1"
    assert request.mode == "image_transfer" and not request.incremental
    assert request.full_every == 3 and request.priority == 7 and request.repository == "/repo"
    assert request.pre_command is not None and request.pre_command.host == "10.0.0.5"
    assert request.post_command is None
    assert selected_disks(machine, request.excluded_disks) == []  # by name and by id
    assert [d.name for d in selected_disks(machine, ("scratch",))] == ["web1_os"]


def test_proxy_vms_are_recognised() -> None:
    assert is_proxy(vm("p", "drover-proxy-c1", tags=["drover-proxy"]))
    assert not is_proxy(vm("v", "web1", tags=["prod"]))
