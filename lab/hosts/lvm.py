"""Fake LVM tools for a host: `lvchange -ay|-an VG/LV` and `lvs`.

Block domain LV bytes live hidden in `storage/<vg>/lv/images/<disk>/<lv>`; activating
an LV on a host creates the host's device node `hosts/<host>/dev/<vg>/<lv>` (the host's
`dev_root` in lab.json) as a symlink to them, deactivating removes it. The scripts are
installed in the host's bin directory, which is first on the PATH of the host's sshd
sessions.

`lvs` answers the report forms a backup tool uses, as real LVM prints them:

    lvs [--noheadings] [-o|--options [+]FIELD,...] [--separator S] [--units hHbBsSkKmMgGtT]
        [--nosuffix] [--nameprefixes [--unquoted]] [--reportformat basic|json] [VG|VG/LV]...

Fields: lv_name, vg_name, lv_full_name, lv_attr (`-wi-a-----` active, `-wi-------` not),
lv_size, lv_path (under the host's dev root), lv_active, lv_tags (vdsm's IU_<image> and
PU_<parent>), lv_uuid; the `lv_` prefix may be left out (`-o name,attr,size`). Without
`-o`: LV VG Attr LSize; without names: every LV of every block domain. Sizes are in
human units (`256.00m`) unless `--units` says otherwise. An unknown LV prints
`  Failed to find logical volume "VG/LV"` on stderr, an unknown VG `  Volume group "VG" not
found`, and the exit status is then 5 (what is found is still reported); a bad command
line exits with 3. Options like `--config ...`, `-a`, `--readonly` are accepted and ignored.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .layout import Layout

_HEADER = '''#!{python}
"""{tool} for lab host {host}: see lab.hosts.lvm."""
from pathlib import Path

STORAGE = Path({storage!r})
DEV = Path({dev!r})
'''

_LVCHANGE = r"""
import sys

EXIT_INVALID, EXIT_FAILED = 3, 5


def hidden(vg, lv):
    found = sorted((STORAGE / vg / "lv" / "images").glob("*/" + lv))
    if not found:
        print(f'  Failed to find logical volume "{vg}/{lv}"', file=sys.stderr)
        sys.exit(EXIT_FAILED)
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


def usage(message):
    print(f"  {message}", file=sys.stderr)
    sys.exit(EXIT_INVALID)


def parse(argv):
    mode, names, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-ay", "-aey", "-asy", "-aly"):
            mode = True
        elif arg == "-an":
            mode = False
        elif arg in ("-a", "--activate"):
            i += 1
            if i == len(argv):
                usage("Option --activate needs a value")
            mode = argv[i].endswith("y")
        elif arg.startswith("--activate="):
            mode = arg.endswith("y")
        elif arg == "--config":
            i += 1
        elif arg.startswith("-"):
            pass
        else:
            names.append(arg)
        i += 1
    if mode is None or not names:
        usage("usage: lvchange -ay|-an VG/LV...")
    return mode, names


def main():
    mode, names = parse(sys.argv[1:])
    for name in names:
        vg, _, lv = name.removeprefix("/dev/").partition("/")
        if not lv:
            usage(f"Invalid logical volume name {name!r}")
        activate(vg, lv, mode)


main()
"""

_LVS = r'''
import hashlib
import json
import math
import sys

EXIT_INVALID, EXIT_FAILED = 3, 5
NULL_UUID = "00000000-0000-0000-0000-000000000000"
# field: (heading, right aligned)
FIELDS = {
    "lv_name": ("LV", False),
    "vg_name": ("VG", False),
    "lv_full_name": ("LV", False),
    "lv_attr": ("Attr", False),
    "lv_size": ("LSize", True),
    "lv_path": ("Path", False),
    "lv_active": ("Active", False),
    "lv_tags": ("LV Tags", False),
    "lv_uuid": ("LV UUID", False),
}
DEFAULT_FIELDS = ["lv_name", "vg_name", "lv_attr", "lv_size"]
VALUE_OPTIONS = {"-o": "options", "--options": "options", "-O": "sort", "--sort": "sort",
                 "--separator": "separator", "--units": "units", "--reportformat": "format",
                 "--headings": "headings", "--config": None}
FLAGS = {"--noheadings": "noheadings", "--nosuffix": "nosuffix",
         "--nameprefixes": "nameprefixes", "--unquoted": "unquoted", "--aligned": "aligned"}
IGNORED = {"-a", "--all", "-q", "--quiet", "-v", "-vv", "-vvv", "--verbose", "-d", "--debug",
           "--readonly", "--nolocking", "--unbuffered", "--ignorelockingfailure",
           "--ignoreskippedcluster", "-P", "--partial", "--binary"}
UNITS = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}


def fail_usage(message):
    print(message, file=sys.stderr)
    print("  Error during parsing of command line.", file=sys.stderr)
    sys.exit(EXIT_INVALID)


def parse(argv):
    opts = {"options": [], "separator": None, "units": "h", "format": "basic"}
    names, i = [], 0
    while i < len(argv):
        arg = argv[i]
        key, value = arg, None
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
        elif arg[:2] in ("-o", "-O") and len(arg) > 2:
            key, value = arg[:2], arg[2:]
        if key in VALUE_OPTIONS:
            if value is None:
                i += 1
                if i == len(argv):
                    fail_usage(f"lvs: option '{key}' requires an argument")
                value = argv[i]
            name = VALUE_OPTIONS[key]
            if name == "options":
                opts["options"].append(value)
            elif name == "headings":
                opts["noheadings"] = value in ("none", "0")
            elif name is not None:
                opts[name] = value
        elif key in FLAGS:
            opts[FLAGS[key]] = True
        elif key in IGNORED:
            pass
        elif arg.startswith("-") and arg != "-":
            fail_usage(f"lvs: unrecognized option '{arg}'")
        else:
            names.append(arg)
        i += 1
    if opts["format"] not in ("basic", "json"):
        fail_usage(f'  Invalid report format "{opts["format"]}".')
    units = opts["units"]
    if len(units) != 1 or units not in "hHbBsS" + "".join(UNITS) + "".join(UNITS).upper():
        fail_usage(f"  Invalid units specification: {units}")
    return opts, names


def fields_of(specs):
    fields = []
    for number, spec in enumerate(specs):
        if number == 0 and spec.startswith("+"):
            fields = list(DEFAULT_FIELDS)
        for name in spec.lstrip("+").split(","):
            name = name.strip()
            if not name:
                continue
            field = name if name in FIELDS else "lv_" + name
            if field not in FIELDS:
                print(f"  Unrecognised field: {name}", file=sys.stderr)
                sys.exit(EXIT_FAILED)
            fields.append(field)
    return fields or list(DEFAULT_FIELDS)


def volume_groups():
    return sorted(p.parent.name for p in STORAGE.glob("*/lv") if p.is_dir())


def logical_volumes(vg):
    return sorted(p for p in (STORAGE / vg / "lv").glob("images/*/*") if p.is_file())


def selected(names):
    """[(vg, hidden lv path)] named on the command line, and the exit status."""
    if not names:
        return [(vg, lv) for vg in volume_groups() for lv in logical_volumes(vg)], 0
    rows, status = [], 0
    for name in names:
        name = name.rstrip("/")
        for prefix in (str(DEV) + "/", "/dev/mapper/", "/dev/"):
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        vg, _, lv = name.partition("/")
        if not (STORAGE / vg / "lv").is_dir():
            print(f'  Volume group "{vg}" not found', file=sys.stderr)
            print(f"  Cannot process volume group {vg}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        found = [p for p in logical_volumes(vg) if not lv or p.name == lv]
        if lv and not found:
            print(f'  Failed to find logical volume "{vg}/{lv}"', file=sys.stderr)
            status = EXIT_FAILED
        rows += [(vg, p) for p in found[:1 if lv else None]]
    unique = sorted(set(rows), key=lambda row: (row[0], row[1].name))
    return unique, status


def size_text(size, units, suffix):
    if units in "bB":
        return f"{size}B" if suffix else str(size)
    if units in "sS":
        return f"{size // 512}S" if suffix else str(size // 512)
    si = units.isupper()
    base = 1000 if si else 1024
    if units in "hH":
        power = 0
        for letter, exponent in sorted(UNITS.items(), key=lambda kv: -kv[1]):
            if size >= base ** exponent:
                power, units = exponent, letter.upper() if si else letter
                break
        if power == 0:
            return f"{size}B" if suffix else str(size)
    else:
        power = UNITS[units.lower()]
    exact = size / base ** power
    shown = math.floor(exact * 100) / 100
    text = f"{shown:.2f}"
    if not suffix:
        return text
    return ("<" if shown != exact else "") + text + units


def lv_uuid(vg, lv):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    digest = hashlib.sha256(f"{vg}/{lv}".encode()).digest()
    chars = "".join(alphabet[b % len(alphabet)] for b in digest[:32])
    parts, start = [], 0
    for length in (6, 4, 4, 4, 4, 4, 6):
        parts.append(chars[start:start + length])
        start += length
    return "-".join(parts)


def tags(vg, path):
    result = [f"IU_{path.parent.name}"]
    meta = STORAGE / vg / "meta" / f"{path.name}.meta"
    try:
        lines = meta.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition("=")
        if key == "PUUID":
            result.append(f"PU_{value}")
    return ",".join(sorted(result))


def values(vg, path, fields, opts):
    lv = path.name
    active = (DEV / vg / lv).is_symlink()
    known = {
        "lv_name": lambda: lv,
        "vg_name": lambda: vg,
        "lv_full_name": lambda: f"{vg}/{lv}",
        "lv_attr": lambda: "-wi-a-----" if active else "-wi-------",
        "lv_size": lambda: size_text(path.stat().st_size, opts["units"], not opts.get("nosuffix")),
        "lv_path": lambda: str(DEV / vg / lv),
        "lv_active": lambda: "active" if active else "",
        "lv_tags": lambda: tags(vg, path),
        "lv_uuid": lambda: lv_uuid(vg, lv),
    }
    return [known[field]() for field in fields]


def basic(fields, rows, opts):
    separator = opts["separator"]
    if opts.get("nameprefixes"):
        quote = "" if opts.get("unquoted") else "'"
        for row in rows:
            pairs = [f"LVM2_{f.upper()}={quote}{v}{quote}" for f, v in zip(fields, row)]
            print("  " + (separator if separator is not None else " ").join(pairs))
        return
    headings = [FIELDS[f][0] for f in fields]
    table = ([] if opts.get("noheadings") else [headings]) + rows
    if separator is not None and not opts.get("aligned"):
        for line in table:
            print("  " + separator.join(line))
        return
    widths = [max(len(line[i]) for line in [headings, *rows]) for i in range(len(fields))]
    for number, line in enumerate(table):
        heading = number == 0 and not opts.get("noheadings")
        cells = []
        for i, cell in enumerate(line):
            right = FIELDS[fields[i]][1] and not heading
            cells.append(cell.rjust(widths[i]) if right else cell.ljust(widths[i]))
        print("  " + (separator if separator is not None else " ").join(cells))


def main():
    opts, names = parse(sys.argv[1:])
    fields = fields_of(opts["options"])
    found, status = selected(names)
    rows = [values(vg, path, fields, opts) for vg, path in found]
    if opts["format"] == "json":
        report = {"report": [{"lv": [dict(zip(fields, row)) for row in rows]}]}
        print(json.dumps(report, indent=4))
    else:
        basic(fields, rows, opts)
    sys.exit(status)


main()
'''


def install_tools(layout: Layout, host: str) -> Path:
    """Write the host's lvchange and lvs scripts; returns the bin directory."""
    bin_dir = layout.host_bin(host)
    bin_dir.mkdir(parents=True, exist_ok=True)
    layout.host_dev(host).mkdir(parents=True, exist_ok=True)
    for name, body in (("lvchange", _LVCHANGE), ("lvs", _LVS)):
        header = _HEADER.format(
            python=sys.executable,
            tool=name,
            host=host,
            storage=str(Path(layout.state_dir / "storage").absolute()),
            dev=str(layout.host_dev(host).absolute()),
        )
        script = bin_dir / name
        script.write_text(header + body)
        script.chmod(0o755)
    return bin_dir


def is_active(layout: Layout, host: str, sd_id: str, volume_id: str) -> bool:
    return layout.lv_device(host, sd_id, volume_id).is_symlink()
