"""Disk sources (read a disk) and sinks (write one), in ovirt-imageio's backend shape."""

from shared.sources.base import DiskSink, DiskSource
from shared.sources.extent import Extent
from shared.sources.imageio import ImageioError, ImageioSink, ImageioSource

__all__ = ["DiskSink", "DiskSource", "Extent", "ImageioError", "ImageioSink", "ImageioSource"]
