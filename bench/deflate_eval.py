"""Deflate implementations for ``-c``: speed, size and whether the same page always gives
the same bytes.

    python bench/deflate_eval.py DUMP [--pages N]

For each implementation (kdumptool's page encoder, the standard zlib, zlib-ng, libdeflate,
ISA-L) at the levels that matter, on the first N non-zero pages of DUMP (a raw ELF vmcore or
any file of pages):
CPU time per page, MiB/s and the compressed size. Then determinism: adversarial pages
(a 4-byte key repeated at the start, the keys spread over every slot of a 16-bit hash and of
ISA-L's 13-bit CRC-32C hash, plus random and real pages) are compressed in this thread, on
two live threads at once (distinct stacks), in a forked child and in two fresh interpreters
(ASLR moves every address); any difference is reported. ISA-L level 1 is the control: its
output depends on the compressor's stack address (issue 17), and this check must see it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import struct
import subprocess
import sys
import threading
import time
import zlib

PAGE = 4096


def implementations() -> dict[str, object]:
    """name -> compress(page) for every implementation installed."""
    impls: dict[str, object] = {"zlib-1": lambda p: zlib.compress(p, 1)}
    try:
        from kdumptool import _pagezip

        impls["pagezip"] = _pagezip.compress
    except ImportError:
        pass
    try:
        from zlib_ng import zlib_ng

        impls["zlib-ng-1"] = lambda p: zlib_ng.compress(p, 1)
        impls["zlib-ng-2"] = lambda p: zlib_ng.compress(p, 2)
    except ImportError:
        pass
    try:
        import deflate

        for lvl in (1, 2, 3, 4):
            impls[f"libdeflate-{lvl}"] = (lambda lv: lambda p: deflate.zlib_compress(p, lv))(lvl)
    except ImportError:
        pass
    try:
        from isal import isal_zlib

        impls["isal-0"] = lambda p: isal_zlib.compress(p, 0)
        impls["isal-1"] = lambda p: isal_zlib.compress(p, 1)
    except ImportError:
        pass
    return impls


def _crc32c_raw(value: int) -> int:
    c = 0
    for b in struct.pack("<I", value):
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
    return c


def adversarial_pages() -> list[bytes]:
    """Pages whose first positions hit every slot of the hash tables."""
    pages = []
    keys = [k << 16 for k in range(8192)]  # every CRC-32C slot of ISA-L's 8192 (4 KiB input)
    keys += [k * 0x9E3779B1 & 0xFFFFFFFF for k in range(4096)]  # spread over multiplicative hashes
    for k in keys:
        head = struct.pack("<I", k) * 4
        pages.append((head + bytes(48) + head).ljust(PAGE, b"\0"))
    rnd = random.Random(17)
    for _ in range(512):  # runs from a small alphabet: many short matches at every distance
        pages.append(bytes(rnd.choice(b"ab\0\xff") for _ in range(PAGE)))
    return pages


def digest(name: str, pages: list[bytes]) -> str:
    f = implementations()[name]
    h = hashlib.sha256()
    for p in pages:
        h.update(f(p))  # type: ignore[operator]
    return h.hexdigest()


def determinism(name: str, pages: list[bytes]) -> list[str]:
    """Where ``name`` gave other bytes than in this thread: 'thread', 'fork', 'process'."""
    here = digest(name, pages)
    bad = []
    got: dict[int, str] = {}
    barrier = threading.Barrier(2)

    def work(n: int) -> None:
        barrier.wait()
        got[n] = digest(name, pages)

    ts = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if set(got.values()) != {here}:
        bad.append("thread")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, digest(name, pages).encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    if child != here:
        bad.append("fork")
    want = digest(name, adversarial_pages())  # what the fresh interpreters compress
    for _ in range(2):
        out = subprocess.run([sys.executable, __file__, "--digest", name], capture_output=True,
                             text=True, check=True).stdout.strip()
        if out != want:
            bad.append("process")
            break
    return bad


def real_pages(path: str, n: int) -> list[bytes]:
    out = []
    with open(path, "rb") as f:
        f.seek(1 << 20)
        while len(out) < n:
            p = f.read(PAGE)
            if len(p) < PAGE:
                break
            if p.count(0) != PAGE:
                out.append(p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dump", nargs="?")
    ap.add_argument("--pages", type=int, default=20000)
    ap.add_argument("--digest")
    args = ap.parse_args()
    if args.digest:
        print(digest(args.digest, adversarial_pages()))
        return
    pages = real_pages(args.dump, args.pages) if args.dump else []
    adv = adversarial_pages() + pages[:2000]
    print("| implementation | CPU µs/page | MiB/s | size of the pages | vs zlib-1 | same bytes everywhere |")
    print("|---|---|---|---|---|---|")
    base = None
    for name, f in implementations().items():
        t = time.process_time()
        size = sum(min(len(f(p)), PAGE) for p in pages)  # type: ignore[operator]
        dt = time.process_time() - t
        base = base or size
        bad = determinism(name, adv)
        rate = len(pages) * PAGE / 2**20 / max(dt, 1e-9)
        print(f"| {name} | {dt / max(len(pages), 1) * 1e6:.1f} | {rate:.0f} "
              f"| {size / 2**20:.1f} MiB | {size / max(base, 1):.3f} | "
              f"{'yes' if not bad else 'NO: ' + ', '.join(bad)} |", flush=True)


if __name__ == "__main__":
    main()
