"""Proxy-VM workers (disk attachment mode): who the node is and whether it may serve."""
