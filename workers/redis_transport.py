"""kombu's Redis transport, with the one fix a worker needs to ride out a Redis restart.

Seen with kombu 5.7.0 (the newest release): when the broker connection drops while a task
runs (its message unacked), the consumer closes the connection twice, once per reconnect
attempt. The first close clears the transport's `client` but keeps the channel; the second
close tries to restore the channel's unacked messages, builds a connection pool from the
cleared client, and dies with "AttributeError: 'NoneType' object has no attribute
'hostname'", which the worker treats as unrecoverable (it exits with code 0). The running
task's late ack goes through the same path and is lost too. The channel here remembers the
connection it was made for, so both reach Redis once it is back.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES, redis


class Channel(redis.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._made_for = self.connection.client

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:  # closed by an earlier reconnect attempt
            self.connection.client = self._made_for
        return super()._connparams(asynchronous)  # type: ignore[no-untyped-call]


class Transport(redis.Transport):
    Channel = Channel


def is_redis(broker_url: str) -> bool:
    """A Redis broker (the transport this module fixes; also what priorities and liveness
    depend on)."""
    return broker_url.startswith("redis")  # redis://, rediss://, redis+socket://


def install() -> None:
    """Make `redis://` and `rediss://` broker URLs use this transport (in this process)."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
