"""The lab's data plane: storage domains, volumes, qemu-nbd exports, imageio, sshd, proxies.

`lab.hosts.dataplane.LabDataPlane` implements `lab.dataplane.DataPlane` on top of the
small single-purpose modules in this package.
"""
