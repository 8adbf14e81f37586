"""SSH credentials of a manager's hosts: PUT/GET/DELETE /managers/{name}/hosts[/{host}],
what `drover manager add` and `sync` report, and the `drover host` commands."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from orchestrator import cli as cli_module
from orchestrator import commands
from orchestrator import service as service_module
from orchestrator.cli import cli
from orchestrator.client import ApiClient
from orchestrator.hosts import checked_pin
from shared.errors import ConfigError
from shared.sealed import unseal
from shared.settings import get_settings
from shared.ssh.credentials import registered_hosts
from shared.ssh_trust import fingerprint, matches
from tests.unit.orchestrator_fakes import (
    SECRET_KEY,
    TOKEN,
    TestClient,
    World,
    api_client,
    host,
    make_api,
    make_world,
    manager_body,
    policy_body,
    quiet_logs,  # noqa: F401  (an autouse fixture)
)
from tests.unit.recording_log import RecordingLog
from tests.unit.test_orchestrator_managers import with_proxies

SSH_PASSWORD = "hypervisor-s3cret-pw"


def private_text(key: Any, fmt: Any = serialization.PrivateFormat.OpenSSH) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def public_text(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


CLIENT_KEY = private_text(ed25519.Ed25519PrivateKey.generate())
HOST_KEY = ed25519.Ed25519PrivateKey.generate()
PIN = public_text(HOST_KEY)  # "ssh-ed25519 AAAA..."
SECRETS = (CLIENT_KEY, CLIENT_KEY.splitlines()[1], SSH_PASSWORD)


def body(**changes: Any) -> dict[str, Any]:
    values = {"address": "10.0.0.11", "host_key": PIN, "private_key": CLIENT_KEY}
    return {k: v for k, v in (values | changes).items() if v is not None}


def assert_no_secret(text: str) -> None:
    assert not any(secret in text for secret in SECRETS)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    world = with_proxies(make_world())  # its engine has clusters: `sync` shows their proxies
    world.service.add_manager(manager_body())
    return world


@pytest.fixture
def client(world: World) -> TestClient:
    return api_client(world)


# registering -----------------------------------------------------------------------------


def test_a_host_is_registered_with_its_key_sealed_and_never_shown(
    world: World, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = RecordingLog()
    monkeypatch.setattr(service_module, "log", log)
    response = client.put("/managers/lab/hosts/host1", json=body(port=2222, user="vdsm"))
    assert response.status_code == 200, response.text
    assert_no_secret(response.text)
    assert response.json() == {
        "manager": "lab",
        "credentials": True,
        "replaced": False,
        "name": "host1",
        "address": "10.0.0.11",
        "port": 2222,
        "user": "vdsm",
        "host_key": PIN,
        "auth": "private_key",
        "mount_root": "/rhev/data-center/mnt",
        "dev_root": "/dev",
    }
    stored = world.state.document("host", "lab:host1")
    assert stored is not None
    assert CLIENT_KEY not in json.dumps(stored)  # sealed at rest
    assert unseal(stored["private_key"], SECRET_KEY) == CLIENT_KEY
    assert stored["password"] == ""
    assert_no_secret(repr(log.records))
    assert log.events("info") == ["host credentials registered"]

    again = client.put(
        "/managers/lab/hosts/host1", json=body(private_key=None, password=SSH_PASSWORD)
    )
    assert again.status_code == 200 and again.json()["replaced"] is True
    assert again.json()["auth"] == "password"
    assert_no_secret(again.text)
    stored = world.state.document("host", "lab:host1")
    assert stored is not None and unseal(stored["password"], SECRET_KEY) == SSH_PASSWORD
    assert stored["private_key"] == ""


def test_every_engine_host_is_listed_with_or_without_credentials(
    world: World, client: TestClient
) -> None:
    assert client.put("/managers/lab/hosts/host2", json=body()).status_code == 200
    listed = client.get("/managers/lab/hosts")
    assert listed.status_code == 200, listed.text
    assert_no_secret(listed.text)
    first, second = listed.json()
    assert first == {
        "name": "host1",
        "id": "id-host1",
        "cluster_id": "id-cluster1",
        "status": "up",
        "engine_address": "host1.example",
        "on_engine": True,
        "credentials": False,
    }
    assert second["name"] == "host2" and second["credentials"] is True
    assert (second["address"], second["auth"], second["host_key"]) == (
        "10.0.0.11",
        "private_key",
        PIN,
    )
    assert "private_key" not in second and "password" not in second

    world.engine.host_list = [host("host1")]  # host2 left the engine
    [_, gone] = client.get("/managers/lab/hosts").json()
    assert (gone["name"], gone["on_engine"], gone["credentials"]) == ("host2", False, True)
    assert "status" not in gone


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"password": SSH_PASSWORD}, "give a private key or a password, not both"),
        ({"private_key": None}, "give a private key or a password"),
        ({"private_key": "   "}, "give a private key or a password"),
        (
            {
                "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5\n"
                "-----END OPENSSH PRIVATE KEY-----\n" + SSH_PASSWORD
            },
            "is not an ed25519, ECDSA or RSA key in OpenSSH or PEM form",
        ),
        ({"private_key": PIN}, "is not an ed25519, ECDSA or RSA key"),
        ({"host_key": "not a key"}, "neither a public key nor a SHA256 fingerprint"),
        ({"host_key": "ssh-ed25519 bm90IGEga2V5"}, "is a ssh-ed25519 key that does not parse"),
        ({"host_key": "ssh-rsa " + PIN.split()[1]}, "is a ssh-rsa key that does not parse"),
        ({"host_key": "ssh-dss AAAAB3NzaC1kc3M="}, "key types: ssh-ed25519, ecdsa-sha2-nistp256"),
        ({"host_key": "SHA256:tooshort"}, "is not a SHA256 fingerprint"),
        ({"host_key": ""}, "host_key: string should have at least 1 character"),
        ({"host_key": None}, "host_key is required"),
        ({"address": None}, "address is required"),
        ({"address": "10.0.0.1 -oProxyCommand=x"}, "address '10.0.0.1 -oProxyCommand=x' is not"),
        ({"user": "-oProxyCommand=x"}, "user '-oProxyCommand=x' is not valid"),
        ({"port": 0}, "port: input should be greater than or equal to 1"),
        ({"mount_root": "rhev/mnt"}, "mount_root 'rhev/mnt' is not an absolute path"),
        ({"dev_root": "dev"}, "dev_root 'dev' is not an absolute path"),
        ({"privat_key": CLIENT_KEY}, "unknown key 'privat_key' (allowed here: address, port, user"),
    ],
)
def test_bad_input_is_a_clear_400_without_secrets(
    world: World, client: TestClient, changes: dict[str, Any], expected: str
) -> None:
    response = client.put("/managers/lab/hosts/host1", json=body(**changes))
    assert response.status_code == 400, response.text
    assert expected in response.json()["detail"]
    assert_no_secret(response.text)
    assert world.state.document("host", "lab:host1") is None


def test_the_service_names_the_host_in_its_errors(world: World) -> None:
    with pytest.raises(ConfigError) as refused:
        world.service.put_host("lab", "host1", body(private_key=None, privat_key=CLIENT_KEY))
    assert refused.value.message.startswith(
        "host 'host1' of manager 'lab': unknown key 'privat_key' (allowed here: address, "
    )
    assert_no_secret(str(refused.value))
    with pytest.raises(ConfigError, match="host 'host1' of manager 'lab': give a private key"):
        world.service.put_host("lab", "host1", body(private_key=None))


def test_a_host_name_with_control_characters_is_refused(client: TestClient) -> None:
    response = client.put("/managers/lab/hosts/host%0A1", json=body())
    assert response.status_code == 400
    assert "host name 'host\\n1' is not valid" in response.json()["detail"]
    assert client.delete("/managers/lab/hosts/host%0A1").status_code == 400


def test_an_encrypted_key_is_refused(client: TestClient) -> None:
    key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    response = client.put("/managers/lab/hosts/host1", json=body(private_key=key.decode()))
    assert response.status_code == 400
    assert "is encrypted" in response.json()["detail"]
    assert "without a passphrase" in response.json()["detail"]


@pytest.mark.parametrize(
    "key",
    [
        private_text(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.OpenSSH),
        private_text(
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            serialization.PrivateFormat.TraditionalOpenSSL,  # PEM
        ),
    ],
    ids=["ecdsa-openssh", "rsa-pem"],
)
def test_ecdsa_and_rsa_keys_are_accepted(client: TestClient, key: str) -> None:
    response = client.put("/managers/lab/hosts/host1", json=body(private_key=key))
    assert response.status_code == 200, response.text
    assert key.splitlines()[1] not in response.text


def test_a_host_the_engine_does_not_have_is_named_with_those_it_has(
    world: World, client: TestClient
) -> None:
    response = client.put("/managers/lab/hosts/host9", json=body())
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "the engine of manager 'lab' has no host named 'host9' (its hosts: host1, host2)" in (
        detail
    )
    assert "drover host list lab" in detail
    assert registered_hosts(world.state, "lab") == []  # type: ignore[arg-type]


def test_an_unregistered_manager_is_404(client: TestClient) -> None:
    for response in (
        client.put("/managers/nope/hosts/host1", json=body()),
        client.get("/managers/nope/hosts"),
        client.delete("/managers/nope/hosts/host1"),
        client.post("/managers/nope/sync"),
    ):
        assert response.status_code == 404
        assert "manager 'nope' is not registered" in response.json()["detail"]


def test_remove(world: World, client: TestClient) -> None:
    assert client.put("/managers/lab/hosts/host1", json=body()).status_code == 200
    assert client.delete("/managers/lab/hosts/host1").status_code == 204
    missing = client.delete("/managers/lab/hosts/host1")
    assert missing.status_code == 404 and "has no SSH credentials" in missing.json()["detail"]
    assert world.state.document("host", "lab:host1") is None


def test_the_endpoints_need_the_token(world: World) -> None:
    client = TestClient(make_api(world), raise_server_exceptions=False)
    assert client.get("/managers/lab/hosts").status_code == 401
    assert client.put("/managers/lab/hosts/host1", json=body()).status_code == 401
    assert client.delete("/managers/lab/hosts/host1").status_code == 401
    assert client.post("/managers/lab/sync").status_code == 401


# pins ------------------------------------------------------------------------------------


def test_pins_are_normalised() -> None:
    blob = PIN.split()[1]
    assert checked_pin(f"  {PIN} root@host1\n", "h") == PIN  # the comment is dropped
    assert checked_pin(f"host1,10.0.0.11 {PIN}", "h") == PIN  # a known_hosts line
    assert checked_pin(f"|1|abc=|def= {PIN}", "h") == PIN  # hashed host names
    sha = fingerprint(paramiko.PKey.from_type_string("ssh-ed25519", base64.b64decode(blob)))
    assert checked_pin(sha, "h") == sha
    assert checked_pin(sha + "=", "h") == sha  # ssh-keygen -E sha256 pads
    presented = paramiko.PKey.from_type_string("ssh-ed25519", base64.b64decode(blob))
    for pin in (f"host1 {PIN} comment", sha + "="):  # what ssh_trust checks at connect time
        assert matches(presented, checked_pin(pin, "h"))
    ecdsa_pin = public_text(ec.generate_private_key(ec.SECP384R1()))
    assert checked_pin(ecdsa_pin, "h") == ecdsa_pin
    with pytest.raises(ConfigError, match="ssh-keyscan"):
        checked_pin("host1 AAAA", "h")


# managers report their hosts -------------------------------------------------------------


def test_manager_add_and_sync_report_the_hosts_without_ssh(
    world: World, client: TestClient
) -> None:
    added = client.post("/managers", json=manager_body(name="other"))
    assert added.status_code == 201, added.text
    assert added.json()["hosts"] == ["host1", "host2"]
    assert added.json()["hosts_without_ssh"] == ["host1", "host2"]
    assert client.put("/managers/lab/hosts/host1", json=body()).status_code == 200
    synced = client.post("/managers/lab/sync")
    assert synced.status_code == 200, synced.text
    assert synced.json() == {
        "name": "lab",
        "engine_version": "oVirt Engine 4.5.5",
        "hosts": ["host1", "host2"],
        "hosts_without_ssh": ["host2"],
        "credentials_without_host": [],
        "proxies": {"cluster1": [], "cluster2": []},
        "clusters_without_live_proxy": ["cluster1", "cluster2"],
    }
    world.engine.host_list = [host("host2"), host("host3")]
    synced = client.post("/managers/lab/sync").json()
    assert synced["hosts_without_ssh"] == ["host2", "host3"]
    assert synced["credentials_without_host"] == ["host1"]
    replaced = client.put("/managers/lab", json=manager_body())
    assert replaced.json()["credentials_without_host"] == ["host1"]


def test_removing_a_manager_forgets_its_hosts(world: World, client: TestClient) -> None:
    client.post("/managers", json=manager_body(name="other"))
    for manager in ("lab", "other"):
        assert client.put(f"/managers/{manager}/hosts/host1", json=body()).status_code == 200
    assert client.delete("/managers/lab").status_code == 204
    assert world.state.document("host", "lab:host1") is None
    assert world.state.document("host", "other:host1") is not None


def test_mode_ssh_does_not_warn_once_a_host_has_credentials(client: TestClient) -> None:
    assert client.put("/managers/lab/hosts/host1", json=body()).status_code == 200
    stored = client.put("/policies/nightly", json=policy_body(mode="ssh"))
    assert stored.status_code == 200 and stored.json()["warnings"] == []


# the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_world(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    http = TestClient(make_api(world), raise_server_exceptions=False)
    monkeypatch.setattr(
        commands, "make_client", lambda: ApiClient("http://testserver", TOKEN, http=http)
    )
    monkeypatch.setattr(cli_module, "configure_logging", lambda *_args, **_kw: None)
    get_settings.cache_clear()
    yield world
    get_settings.cache_clear()


def drover(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519"
    path.write_text(CLIENT_KEY)
    return path


ADD = ("host", "add", "lab", "host1", "--address", "10.0.0.11", "--host-key", PIN)


def test_host_add_sends_the_key_file_text(cli_world: World, key_file: Path) -> None:
    result = drover(*ADD, "--key-file", str(key_file), "--port", "2222")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "host host1 of manager lab: SSH credentials registered (root@10.0.0.11:2222, private_key)\n"
    )
    stored = cli_world.state.document("host", "lab:host1")
    assert stored is not None and unseal(stored["private_key"], SECRET_KEY) == CLIENT_KEY
    as_json = drover(*ADD, "--key-file", str(key_file), "--json")
    assert json.loads(as_json.stdout)["replaced"] is True
    assert_no_secret(result.output + as_json.output)


def test_host_add_reads_the_password_from_the_environment(cli_world: World) -> None:
    result = drover(
        *ADD, "--password-env", "HOST_PW", "--user", "backup", env={"HOST_PW": SSH_PASSWORD}
    )
    assert result.exit_code == 0, result.output
    assert "(backup@10.0.0.11:22, password)" in result.output
    stored = cli_world.state.document("host", "lab:host1")
    assert stored is not None and unseal(stored["password"], SECRET_KEY) == SSH_PASSWORD


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--key-file", "KEY", "--password-env", "HOST_PW"), "one way, not both"),
        ((), "no SSH credentials given"),
        (("--key-file", "/nonexistent/key"), "cannot read the key file /nonexistent/key"),
        (("--password-env", "UNSET_VAR"), "environment variable UNSET_VAR is not set"),
        (("--key-file", "PUB"), "holds a public key"),
        (("--key-file", "KEY", "--mount-root", "mnt"), "mount_root 'mnt' is not an absolute"),
    ],
)
def test_host_add_errors_are_one_line(
    cli_world: World, key_file: Path, args: tuple[str, ...], expected: str
) -> None:
    public = key_file.with_suffix(".pub")
    public.write_text(PIN + "\n")
    paths = {"KEY": str(key_file), "PUB": str(public)}
    result = drover(*ADD, *(paths.get(a, a) for a in args), env={"HOST_PW": SSH_PASSWORD})
    assert result.exit_code == 1, result.output
    [line] = result.output.splitlines()
    assert line.startswith("drover: error: ") and expected in line
    assert_no_secret(result.output)
    assert cli_world.state.document("host", "lab:host1") is None


def test_host_add_parsing(cli_world: World, key_file: Path) -> None:
    missing_pin = drover(
        "host", "add", "lab", "host1", "--address", "a", "--key-file", str(key_file)
    )
    assert missing_pin.exit_code == 2 and "--host-key" in missing_pin.output
    bad_port = drover(*ADD, "--key-file", str(key_file), "--port", "70000")
    assert bad_port.exit_code == 2 and "70000 is not in the range 1<=x<=65535" in bad_port.output
    no_host = drover("host", "add", "lab", "--address", "a")
    assert no_host.exit_code == 2


def test_host_list_and_remove(cli_world: World, key_file: Path) -> None:
    assert drover(*ADD, "--key-file", str(key_file)).exit_code == 0
    listed = drover("host", "list", "lab")
    assert listed.exit_code == 0, listed.output
    first, second = listed.output.splitlines()
    assert first.split() == ["host1", "up", "root@10.0.0.11:22", "(private_key)"]
    assert second.split() == ["host2", "up", "no", "SSH", "credentials"]
    as_json = json.loads(drover("host", "list", "lab", "--json").stdout)
    assert [h["credentials"] for h in as_json] == [True, False]
    removed = drover("host", "remove", "lab", "host1")
    assert removed.exit_code == 0 and "removed" in removed.output
    again = drover("host", "remove", "lab", "host1")
    assert again.exit_code == 1 and "has no SSH credentials registered" in again.output


def test_manager_add_and_sync_print_the_hosts_without_ssh(cli_world: World, key_file: Path) -> None:
    added = drover(
        "manager", "add", "other", "--url", manager_body()["url"], "--username", "a@internal",
        "--password-env", "ENGINE_PW", env={"ENGINE_PW": "pw"},
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "hosts: host1, host2" in added.output
    assert "hosts without SSH credentials: host1, host2" in added.output
    assert "drover host add other HOST" in added.output
    assert drover(*ADD, "--key-file", str(key_file)).exit_code == 0
    synced = drover("manager", "sync", "lab")
    assert synced.exit_code == 0, synced.output
    assert synced.stdout.splitlines() == [
        "manager lab: oVirt Engine 4.5.5",
        "hosts: host1, host2",
        "hosts without SSH credentials: host2 (mode ssh needs them: "
        "`drover host add lab HOST --address ... --host-key ... --key-file ...`)",
        "cluster cluster1: proxies: no proxy VM has registered",
        "cluster cluster2: proxies: no proxy VM has registered",
    ]
    assert [line.split(" (")[0] for line in synced.stderr.splitlines()] == [
        "warning: no live proxy worker serves cluster cluster1",
        "warning: no live proxy worker serves cluster cluster2",
    ]
    cli_world.engine.host_list = []
    synced = drover("manager", "sync", "lab", "--json")
    assert json.loads(synced.stdout)["credentials_without_host"] == ["host1"]
