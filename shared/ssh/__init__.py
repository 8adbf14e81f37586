"""SSH transfer mode, worker side: read and write volume files on a hypervisor over SSH.

`HostSession(HostAccess(...))` logs in with a pinned host key; `session.agent()` starts the
small stdlib-only agent (`python3 -c ...`) that serves random-access requests; with
`NetcatOptions` its answers come over a plain TCP connection (`nc`) for speed.
"""

from shared.ssh.access import HostAccess
from shared.ssh.agent import ConnectionDropped, RemoteAgent, RemoteIOError, Segment
from shared.ssh.netcat import NetcatConnectFailed, NetcatOptions, NoFreePort
from shared.ssh.session import (
    HostAuthFailed,
    HostSession,
    HostUnreachable,
    RemoteCommandFailed,
)
from shared.ssh_trust import HostKeyRefused

__all__ = [
    "ConnectionDropped",
    "HostAccess",
    "HostAuthFailed",
    "HostKeyRefused",
    "HostSession",
    "HostUnreachable",
    "NetcatConnectFailed",
    "NetcatOptions",
    "NoFreePort",
    "RemoteAgent",
    "RemoteCommandFailed",
    "RemoteIOError",
    "Segment",
]
