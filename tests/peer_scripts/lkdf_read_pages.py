#!/usr/bin/python3
"""Read pages of a dump with libkdumpfile; run by Debian's /usr/bin/python3 from tests.

Single files are opened with the python3-libkdumpfile bindings
(``kdumpfile.kdumpfile(file=...)``).  Those bindings (0.5.1) cannot open a
``--split`` file set (setting ``file.set.number`` after opening aborts with a double
free), so sets go through ctypes to the same libkdumpfile.so (``kdump_open_fdset``).

Usage: lkdf_read_pages.py < request.json
Request: {"files": [path, ...], "page_size": 4096, "pfns": [pfn, ...],
          "ostype": "linux" | null, "addrspace": "KPHYSADDR" | "MACHPHYSADDR"}
Prints one JSON object: {"ok": bool, "error": str, "attrs": {...},
                          "pages": {pfn: {"sha256": hex, "head": hex} | {"error": str}}}
Only hashes are returned; the test hashes the pages it expects.
"""
import ctypes
import ctypes.util
import hashlib
import json
import os
import sys

ATTRS = ("file.format", "file.description", "arch.name", "arch.byte_order", "arch.ptr_size",
         "arch.page_size", "max_pfn", "linux.uts.release", "linux.uts.machine",
         "linux.uts.sysname", "cpu.number", "linux.phys_base", "linux.vmcoreinfo.raw",
         "linux.vmcoreinfo.lines.OSRELEASE")
SPACES = {"KPHYSADDR": 0, "MACHPHYSADDR": 1}


def page_result(data):
    return {"sha256": hashlib.sha256(data).hexdigest(), "head": data[:16].hex()}


def via_bindings(req, res):
    import kdumpfile

    k = kdumpfile.kdumpfile(file=req["files"][0])
    if req.get("ostype"):
        try:
            k.attr["addrxlat.ostype"] = req["ostype"]
        except Exception as e:  # noqa: BLE001 - everything is reported as data
            res["ostype_error"] = f"{type(e).__name__}: {e}"
    attrs = {}
    for key in ATTRS:
        try:
            v = k.attr[key]
            if type(v).__name__ == "blob":
                v = bytes(v)
            if isinstance(v, bytes):
                v = v.decode("latin1")
            if not isinstance(v, (int, str, float, type(None))):
                v = str(v)
        except Exception as e:  # noqa: BLE001
            v = {"error": f"{type(e).__name__}: {e}"}
        attrs[key] = v
    res["attrs"] = attrs
    space = SPACES[req.get("addrspace", "KPHYSADDR")]
    ps = req.get("page_size", 4096)
    pages = {}
    for pfn in req.get("pfns", []):
        try:
            pages[str(pfn)] = page_result(bytes(k.read(space, pfn * ps, ps)))
        except Exception as e:  # noqa: BLE001
            pages[str(pfn)] = {"error": f"{type(e).__name__}: {e}"}
    res["pages"] = pages


def via_ctypes(req, res):
    lib = ctypes.CDLL(ctypes.util.find_library("kdumpfile") or "libkdumpfile.so.10")
    lib.kdump_new.restype = ctypes.c_void_p
    lib.kdump_get_err.restype = ctypes.c_char_p
    lib.kdump_get_err.argtypes = [ctypes.c_void_p]
    lib.kdump_open_fdset.argtypes = [ctypes.c_void_p, ctypes.c_uint,
                                     ctypes.POINTER(ctypes.c_int)]
    lib.kdump_read.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64,
                               ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
    lib.kdump_free.argtypes = [ctypes.c_void_p]
    ctx = lib.kdump_new()
    fds = [os.open(p, os.O_RDONLY) for p in req["files"]]
    arr = (ctypes.c_int * len(fds))(*fds)
    st = lib.kdump_open_fdset(ctx, len(fds), arr)
    if st != 0:
        raise RuntimeError("kdump_open_fdset: " + lib.kdump_get_err(ctx).decode())
    space = SPACES[req.get("addrspace", "MACHPHYSADDR")]
    ps = req.get("page_size", 4096)
    buf = ctypes.create_string_buffer(ps)
    pages = {}
    for pfn in req.get("pfns", []):
        n = ctypes.c_size_t(ps)
        st = lib.kdump_read(ctx, space, pfn * ps, buf, ctypes.byref(n))
        if st == 0 and n.value == ps:
            pages[str(pfn)] = page_result(buf.raw)
        else:
            pages[str(pfn)] = {"error": f"status {st}: {lib.kdump_get_err(ctx).decode()}"}
    res["pages"] = pages
    res["attrs"] = {}
    lib.kdump_free(ctx)


def main():
    req = json.load(sys.stdin)
    res = {"ok": False}
    try:
        if len(req["files"]) == 1:
            via_bindings(req, res)
        else:
            via_ctypes(req, res)
        res["ok"] = True
    except Exception as e:  # noqa: BLE001
        res["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(res))


if __name__ == "__main__":
    main()
