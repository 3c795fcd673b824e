"""Make real migration streams with the installed QEMU (``qemu-system-x86_64``), for tests.

A guest that never runs (``-S``): the generic loader puts a marker page at each chosen
guest-physical address when the machine resets, then QMP ``migrate`` to ``exec:cat > FILE``
saves the stopped machine. Each marker page is ``b"GPA%013x" % address`` repeated, so a page
found elsewhere names where it belongs. Only local processes and a unix socket are used;
every wait is bounded and QEMU is killed if it does not quit.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

from ours import HANG_S

QEMU = "qemu-system-x86_64"


def available() -> bool:
    return shutil.which(QEMU) is not None


def marker(addr: int, page_size: int = 4096) -> bytes:
    return (b"GPA%013x" % addr) * (page_size // 16)


def save_stream(workdir: Path, machine: str, mem: str, addrs: list[int], out: Path,
                timeout: float = HANG_S) -> None:
    """Start a stopped guest of ``machine`` with ``mem`` RAM and the markers, migrate it to ``out``."""
    args = []
    for a in addrs:
        blob = workdir / f"marker-{a:x}.bin"
        blob.write_bytes(marker(a))
        args += ["-device", f"loader,file={blob},addr={a:#x},force-raw=on"]
    sock = workdir / f"qmp-{len(list(workdir.iterdir()))}.sock"
    proc = subprocess.Popen(
        [QEMU, "-accel", "tcg", "-machine", machine, "-m", mem, "-S", "-nodefaults",
         "-display", "none", "-monitor", "none", "-serial", "none",
         "-qmp", f"unix:{sock},server=on,wait=off", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{QEMU} did not start: {proc.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(sock))
            f = s.makefile("rw")
            f.readline()  # greeting

            def qmp(cmd: str, **arguments: object) -> dict:
                msg = {"execute": cmd, **({"arguments": arguments} if arguments else {})}
                f.write(json.dumps(msg) + "\n")
                f.flush()
                while True:
                    reply = json.loads(f.readline())
                    if "return" in reply or "error" in reply:
                        return reply

            qmp("qmp_capabilities")
            reply = qmp("migrate", uri=f"exec:cat > {out}")
            if "error" in reply:
                raise RuntimeError(f"migrate: {reply['error']}")
            while True:
                status = qmp("query-migrate")["return"].get("status")
                if status in ("completed", "failed", "cancelled"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("migration did not finish")
                time.sleep(0.1)
            if status != "completed":
                raise RuntimeError(f"migration {status}")
            qmp("quit")
        proc.wait(timeout=HANG_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
