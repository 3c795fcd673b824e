"""Run one drgn operation of ``tests/peers.py`` in a child process (``isolate=True``).

drgn's bundled libkdumpfile mmaps the dump, so a damaged file can kill the process with
SIGBUS; running here keeps the test process alive.  Started with the test's own Python
(``sys.executable``).  Request (JSON on stdin)::

    {"op": "pages", "path": FILE, "pfns": [PFN, ...], "page_size": 4096}
    {"op": "open", "path": FILE}

Answer (JSON on stdout): for "pages" ``{"digests": {...}, "errors": {...}, "attrs": {...}}``
or ``{"exception": "Error: message"}`` when drgn cannot open the file; for "open"
``{"ok": bool, "message": str}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import peers  # noqa: E402  (tests/ is put on sys.path just above)


def main() -> dict[str, Any]:
    req = json.load(sys.stdin)
    if req["op"] == "open":
        ok, message = peers.drgn_open_inprocess(req["path"])
        return {"ok": ok, "message": message}
    try:
        scan = peers.drgn_scan_inprocess(req["path"], req["pfns"], req.get("page_size", 4096))
    except Exception as e:
        return {"exception": f"{type(e).__name__}: {e}"}
    return {"digests": scan.digests, "errors": scan.errors, "attrs": scan.attrs}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(main(), separators=(",", ":")) + "\n")
    sys.stdout.flush()
