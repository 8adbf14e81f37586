from __future__ import annotations

import textwrap

import pytest

from orchestrator.policies import (
    VmSelector,
    backup_request,
    is_proxy,
    keeps_snapshot,
    parse_policies,
    selects,
    validate_policy,
)
from shared.backup.enqueue import selected_disks
from shared.errors import ConfigError
from shared.modes.auto import ModeChoice
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
    request = backup_request(policy, machine, "job1", "/repo", ModeChoice("image_transfer", "x"))
    assert request.vm_id == "web1" and request.vm_name == "web1" and request.job_id == "job1"
    assert request.mode == "image_transfer" and not request.incremental
    assert not (request.snapshot_chain or request.netcat or request.keep_snapshot)
    assert request.full_every == 3 and request.priority == 7 and request.repository == "/repo"
    assert request.pre_command is not None and request.pre_command.host == "10.0.0.5"
    assert request.post_command is None
    assert selected_disks(machine, request.excluded_disks) == []  # by name and by id
    assert [d.name for d in selected_disks(machine, ("scratch",))] == ["web1_os"]


def test_proxy_vms_are_recognised() -> None:
    assert is_proxy(vm("p", "drover-proxy-c1", tags=["drover-proxy"]))
    assert not is_proxy(vm("v", "web1", tags=["prod"]))


# snapshot_chain and netcat -----------------------------------------------------------------


def test_the_new_keys_default_to_off() -> None:
    policy = validate_policy({"name": "p", "manager": "lab", "vms": {"names": ["x"]}})
    assert (policy.snapshot_chain, policy.netcat) == (False, False)


@pytest.mark.parametrize(
    ("mode", "key"),
    [("image_transfer", "snapshot_chain"), ("auto", "snapshot_chain"), ("ssh", "netcat")],
)
def test_the_new_keys_with_their_modes(mode: str, key: str) -> None:
    policy = validate_policy(policy_body(mode=mode, **{key: True}))
    assert getattr(policy, key) is True


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "mode: ssh\nsnapshot_chain: true",
            "snapshot_chain: applies to mode image_transfer or auto only, and "
            "mode ssh always reads snapshot chains off the hypervisor: remove snapshot_chain",
        ),
        (
            "mode: disk_attachment\nbackup: {type: full}\nsnapshot_chain: true",
            "snapshot_chain: applies to mode image_transfer or auto only, and "
            "mode disk_attachment does not read snapshot chains",
        ),
        (
            "mode: image_transfer\nnetcat: true",
            "netcat: applies to mode ssh only (the data over a plain TCP connection from "
            "the hypervisor), not to mode image_transfer: remove netcat, or use mode ssh",
        ),
        ("netcat: true", "not to mode auto"),  # auto never chooses ssh
        ("mode: disk_attachment\nbackup: {type: full}\nnetcat: true", "not to mode disk_att"),
        ("netcat: maybe", "netcat: input should be a valid boolean"),
    ],
)
def test_the_new_keys_are_refused_with_other_modes(extra: str, expected: str) -> None:
    message = error_of(f"name: p\nmanager: lab\nvms: {{names: [x]}}\n{extra}\n")
    assert expected in message and "policy 'p'" in message


def test_the_expansion_carries_the_choice_and_netcat() -> None:
    policy = validate_policy(policy_body(mode="ssh", netcat=True, backup={"type": "full"}))
    request = backup_request(policy, vm("v", "web1"), "j", "/r", ModeChoice("ssh", "set"))
    assert (request.mode, request.netcat, request.snapshot_chain) == ("ssh", True, False)
    chained = backup_request(
        validate_policy(policy_body(mode="auto")),
        vm("v", "web1"),
        "j",
        "/r",
        ModeChoice("image_transfer", "engine 4.3", snapshot_chain=True),
    )
    assert (chained.mode, chained.snapshot_chain, chained.netcat) == ("image_transfer", True, False)


# keep_snapshot ---------------------------------------------------------------------------


def test_keep_snapshot_when_any_policy_selecting_the_vm_is_incremental() -> None:
    weekly = validate_policy(policy_body(name="weekly", backup={"type": "full"}))
    web = vm("v1", "web1", tags=["prod"])
    incremental_web = validate_policy(policy_body(name="inc", vms={"patterns": ["web*"]}))
    incremental_db = validate_policy(policy_body(name="db", vms={"names": ["db01"]}))
    other_manager = validate_policy(
        policy_body(name="elsewhere", manager="other", vms={"patterns": ["*"]})
    )

    assert keeps_snapshot(weekly, web, [weekly, incremental_web])
    assert not keeps_snapshot(weekly, web, [weekly, incremental_db, other_manager])
    assert not keeps_snapshot(weekly, web)
    assert keeps_snapshot(incremental_db, web)  # the policy itself selected the VM
    request = backup_request(
        weekly, web, "j", "/r", ModeChoice("ssh", "x"), [weekly, incremental_db, incremental_web]
    )
    assert request.keep_snapshot and not request.incremental


# selects ---------------------------------------------------------------------------------


WEB = vm("v1", "web01", cluster="Prod-A", tags=["prod", "linux"])


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"names": ["web01"]}, True),
        ({"names": ["WEB01"]}, True),  # the engine's search ignores case
        ({"names": ["web0"]}, False),  # a name is compared whole
        ({"names": ["web*"]}, False),  # names are not patterns
        ({"patterns": ["web*"]}, True),
        ({"patterns": ["WE*1"]}, True),
        ({"patterns": ["*"]}, True),
        ({"patterns": ["db*", "*01"]}, True),
        ({"patterns": ["web?1"]}, False),  # only * is a wildcard
        ({"patterns": ["web"]}, False),
        ({"patterns": ["web.*"]}, False),  # a dot is a dot
        ({"names": ["db01"], "patterns": ["w*"]}, True),  # names or patterns
        ({"tags": ["prod"]}, True),
        ({"tags": ["test", "LINUX"]}, True),  # any tag
        ({"tags": ["test"]}, False),
        ({"clusters": ["prod-a"]}, True),
        ({"clusters": ["Prod-*"]}, True),
        ({"clusters": ["Prod-B", "dev"]}, False),
        ({"patterns": ["web*"], "tags": ["prod"], "clusters": ["Prod-A"]}, True),
        ({"patterns": ["web*"], "tags": ["test"]}, False),  # every criterion must hold
        ({"names": ["web01"], "clusters": ["dev"]}, False),
        ({"tags": ["prod"], "clusters": ["dev"]}, False),
    ],
)
def test_selects_as_the_engine_search(selector: dict[str, list[str]], expected: bool) -> None:
    assert selects(VmSelector.model_validate(selector), WEB) is expected


def test_selects_a_vm_without_tags_only_without_a_tag_criterion() -> None:
    bare = vm("v2", "db01")
    assert selects(VmSelector(patterns=["*"]), bare)
    assert not selects(VmSelector(patterns=["*"], tags=["prod"]), bare)
