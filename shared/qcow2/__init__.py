"""A small pure-Python qcow2 library: read a layer's allocation map, write a new image.

Backups read qcow2 volumes as files (over SSH or HTTP range requests) and need to know which
guest ranges each layer of a snapshot chain holds and where those bytes are in the file;
restore writes a new qcow2 image as a stream of (file offset, bytes) writes. The format is
QEMU's docs/interop/qcow2.txt.
"""

from shared.qcow2.header import (
    QCOW2_MAGIC,
    Qcow2Error,
    Qcow2Header,
    RandomAccess,
    is_qcow2,
    read_header,
)
from shared.qcow2.layer_map import Allocation, Kind, inflate, map_layer
from shared.qcow2.writer import FileWriter, Qcow2StreamWriter, qcow2_size_bound

__all__ = [
    "QCOW2_MAGIC",
    "Allocation",
    "FileWriter",
    "Kind",
    "Qcow2Error",
    "Qcow2Header",
    "Qcow2StreamWriter",
    "RandomAccess",
    "inflate",
    "is_qcow2",
    "map_layer",
    "qcow2_size_bound",
    "read_header",
]
