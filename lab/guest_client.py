"""Clients of the lab's own control API (not oVirt's): `drover lab write` asks the running
lab to write as a guest would; `engine_version` / `set_engine_version` read and switch the
engine version the lab presents (`POST /ovirt-engine/lab/version`, see lab.engine.version).

Each takes the lab as its state directory (lab.json is read from it) or as the lab.json
document itself (e.g. what the `lab` test fixture yields).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from lab.labfile import read_lab_json
from shared.errors import DroverError

LAB_PREFIX = "/ovirt-engine/lab"
Lab = Path | str | Mapping[str, Any]  # a state directory or a lab.json document


def guest_write(state_dir: Path, vm: str, disk: int, offset: int, length: int) -> dict[str, Any]:
    response = _control(
        state_dir,
        "POST",
        f"/vms/{vm}/disks/{disk}/write",
        {"offset": offset, "length": length},
        timeout_s=120,
    )
    if response.status_code != 200:
        raise DroverError(f"lab write to VM {vm!r} disk {disk} failed: {_reason(response)}")
    return dict(response.json())


def engine_version(lab: Lab) -> dict[str, Any]:
    """The version the lab's engine presents: {"version": "4.5", "full_version":
    "4.5.5-1.el8", "cluster_version": "4.7", "backup_api": true}."""
    response = _control(lab, "GET", "/version")
    if response.status_code != 200:
        raise DroverError(f"reading the lab engine's version failed: {_reason(response)}")
    return dict(response.json())


def set_engine_version(lab: Lab, version: str) -> dict[str, Any]:
    """Make the lab's engine present `version` ("4.3", "4.5.5", ...) from now on; returns
    what `engine_version` then tells."""
    response = _control(lab, "POST", "/version", {"version": version})
    if response.status_code != 200:
        raise DroverError(
            f"setting the lab engine's version to {version} failed: {_reason(response)}"
        )
    return dict(response.json())


def _control(
    lab: Lab, method: str, path: str, body: Any = None, timeout_s: float = 30
) -> httpx.Response:
    """`METHOD /ovirt-engine/lab<path>` with a fresh SSO token of the lab's admin."""
    document = read_lab_json(Path(lab)) if isinstance(lab, (str, Path)) else lab
    engine = document["engine"]
    base = engine["url"].split("/ovirt-engine/")[0]
    with httpx.Client(base_url=base, verify=engine["ca_file"], timeout=timeout_s) as client:
        token = login(client, engine)
        return client.request(
            method,
            LAB_PREFIX + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )


def login(client: httpx.Client, engine: Mapping[str, Any]) -> str:
    """An SSO token for the lab's control API (client based at the engine's origin)."""
    response = client.post(
        "/ovirt-engine/sso/oauth/token",
        data={
            "grant_type": "password",
            "scope": "ovirt-app-api",
            "username": engine["username"],
            "password": engine["password"],
        },
        headers={"Accept": "application/json"},
    )
    body = response.json()
    if "access_token" not in body:
        raise DroverError(f"the lab refused its own credentials: {body}")
    return str(body["access_token"])


def _reason(response: httpx.Response) -> str:
    text = response.text.strip()
    return f"HTTP {response.status_code}: {text[:500]}"
