"""Read a dump with python3-libkdumpfile; run by ``tests/peers.py`` in a subprocess.

Runs under the system Python that has the ``kdumpfile`` module (Debian's
python3-libkdumpfile, e.g. ``/usr/bin/python3 -I lkdf_pages.py``), never inside pytest: the C
library can kill the process (SIGBUS/SIGSEGV) on damaged files.  Standard library only, so it
also runs on Python versions older than the project's.

Request (JSON on stdin)::

    {"path": FILE, "op": "attrs" | "pages", "pfns": [PFN, ...] | null, "mmap": true}

``pfns`` null means every pfn from 0 to ``max_pfn`` - 1; ``mmap`` false sets
``file.mmap_policy`` to KDUMP_MMAP_NEVER (plain reads: no SIGBUS past the end of a truncated
file).  Answer (one JSON object on stdout)::

    {"ok": true, "attrs": {...}, "digests": {"PFN": SHA1_HEX | null}, "errors": {"PFN": "Exc: msg"}}
    {"ok": false, "stage": "open", "error": "Exc: msg"}
"""

import hashlib
import json
import sys

ATTR_KEYS = (
    "file.format",
    "file.description",
    "arch.name",
    "arch.page_size",
    "arch.page_shift",
    "linux.uts.sysname",
    "linux.uts.release",
    "linux.uts.version",
    "linux.uts.machine",
    "cpu.number",
    "max_pfn",
    "linux.phys_base",
    "linux.vmcoreinfo.raw",
)
KDUMP_MMAP_NEVER = 0


def describe(exc):
    return f"{type(exc).__name__}: {exc}"


def attr_value(k, key):
    v = k.attr[key]
    if type(v).__name__ == "blob":
        v = bytes(v)
    if isinstance(v, (bytes, bytearray)):
        v = bytes(v).decode("latin1")
    if not isinstance(v, (str, int, float, bool)) and v is not None:
        v = repr(v)
    return v


def main():
    req = json.load(sys.stdin)
    out = {"ok": False}
    try:
        import kdumpfile
    except Exception as e:
        out.update(stage="import", error=describe(e))
        return out
    try:
        k = kdumpfile.kdumpfile(req["path"])
    except Exception as e:
        out.update(stage="open", error=describe(e))
        return out
    attrs = {}
    if not req.get("mmap", True):
        try:
            k.attr["file.mmap_policy"] = KDUMP_MMAP_NEVER
        except Exception as e:
            attrs["mmap_policy_error"] = describe(e)
    try:
        k.attr["addrxlat.ostype"] = "linux"
    except Exception as e:
        attrs["ostype_error"] = describe(e)
    for key in ATTR_KEYS:
        try:
            attrs[key] = attr_value(k, key)
        except Exception:
            attrs[key] = None
    out["attrs"] = attrs
    if req.get("op") == "pages":
        page_size = attrs.get("arch.page_size") or 4096
        pfns = req.get("pfns")
        if pfns is None:
            if attrs.get("max_pfn") is None:
                out.update(stage="max_pfn", error="max_pfn has no value")
                return out
            pfns = range(attrs["max_pfn"])
        digests = {}
        errors = {}
        read = k.read
        space = kdumpfile.KDUMP_KPHYSADDR
        sha1 = hashlib.sha1
        for pfn in pfns:
            try:
                digests[pfn] = sha1(read(space, pfn * page_size, page_size)).hexdigest()
            except Exception as e:
                digests[pfn] = None
                errors[pfn] = describe(e)
        out["digests"] = digests
        out["errors"] = errors
    out["ok"] = True
    return out


if __name__ == "__main__":
    result = main()
    sys.stdout.write(json.dumps(result, separators=(",", ":")))
    sys.stdout.write("\n")
    sys.stdout.flush()
