"""Fake LVM tools for a host: `lvchange -ay|-an VG/LV` and `lvs`.

Block domain LV bytes live hidden in `storage/<vg>/lv/images/<disk>/<lv>`; activating
an LV on a host creates the host's device node `hosts/<host>/dev/<vg>/<lv>` as a
symlink to them, deactivating removes it. The scripts are installed in the host's
bin directory, which is first on the PATH of the host's sshd sessions.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .layout import Layout

_LVCHANGE = '''#!{python}
"""lvchange for lab host {host}: -ay|-an|--activate y|n VG/LV..."""
import os
import sys
from pathlib import Path

STORAGE = Path({storage!r})
DEV = Path({dev!r})


def hidden(vg, lv):
    found = sorted((STORAGE / vg / "lv" / "images").glob("*/" + lv))
    if not found:
        sys.exit(f"  Failed to find logical volume \\"{{vg}}/{{lv}}\\"")
    return found[0]


def activate(vg, lv, on):
    node = DEV / vg / lv
    if on:
        target = hidden(vg, lv)
        node.parent.mkdir(parents=True, exist_ok=True)
        if not node.is_symlink():
            node.symlink_to(target)
    elif node.is_symlink():
        node.unlink()


def parse(argv):
    mode, names, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-ay", "-aey", "-asy"):
            mode = True
        elif arg == "-an":
            mode = False
        elif arg in ("-a", "--activate"):
            i += 1
            mode = argv[i].endswith("y")
        elif arg.startswith("--activate="):
            mode = arg.endswith("y")
        elif arg.startswith("-"):
            pass
        else:
            names.append(arg)
        i += 1
    if mode is None or not names:
        sys.exit("usage: lvchange -ay|-an VG/LV...")
    return mode, names


def main():
    mode, names = parse(sys.argv[1:])
    for name in names:
        vg, _, lv = name.partition("/")
        if not lv:
            sys.exit(f"  Invalid logical volume name {{name!r}}")
        activate(vg, lv, mode)


main()
'''

_LVS = '''#!{python}
"""lvs for lab host {host}: LV VG Attr LSize of every block domain volume."""
from pathlib import Path

STORAGE = Path({storage!r})
DEV = Path({dev!r})

print(f"  {{'LV':36}} {{'VG':36}} {{'Attr':10}} LSize")
for vg_dir in sorted(STORAGE.glob("*/lv")):
    vg = vg_dir.parent.name
    for lv in sorted(vg_dir.glob("images/*/*")):
        active = (DEV / vg / lv.name).is_symlink()
        attr = "-wi-a-----" if active else "-wi-------"
        print(f"  {{lv.name:36}} {{vg:36}} {{attr}} {{lv.stat().st_size}}B")
'''


def install_tools(layout: Layout, host: str) -> Path:
    """Write the host's lvchange and lvs scripts; returns the bin directory."""
    bin_dir = layout.host_bin(host)
    bin_dir.mkdir(parents=True, exist_ok=True)
    layout.host_dev(host).mkdir(parents=True, exist_ok=True)
    values = {
        "python": sys.executable,
        "host": host,
        "storage": str(layout.state_dir / "storage"),
        "dev": str(layout.host_dev(host)),
    }
    for name, template in (("lvchange", _LVCHANGE), ("lvs", _LVS)):
        script = bin_dir / name
        script.write_text(template.format(**values))
        script.chmod(0o755)
    return bin_dir


def is_active(layout: Layout, host: str, sd_id: str, volume_id: str) -> bool:
    return layout.lv_device(host, sd_id, volume_id).is_symlink()
