"""The lab's stand-in for the oVirt / OLVM engine: SSO, the REST API v4 (as the SDK
reads and writes it), and the engine's asynchronous commands over a `DataPlane`."""

from lab.engine.context import Timings
from lab.engine.inventory import Inventory
from lab.engine.server import EngineServer

__all__ = ["EngineServer", "Inventory", "Timings"]
