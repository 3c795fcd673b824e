#!/usr/bin/python3
"""Pack the output of arm64-kdump.sh or xen-dumps.sh into a sample set under corpus/.

Usage: pack.py arm64|xen OUT_DIR SET_DIR

Dumps are compressed with ``zstd -19 --long=30`` (one thread, so the output is reproducible);
dumps that are near-copies of another dump of the set are stored as zstd patches against it
(``--patch-from``).  Small text files are copied (``kallsyms`` gzip'ed).  ``manifest.json``
lists every dump (name, stored file, patch reference, size, sha256, how it was made) and
every text file (sha256); tests/samples.py unpacks and checks the dumps from it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

#: (name in the set, file in OUT_DIR, patch reference or None, how it was made)
PLANS: dict[str, list[tuple[str, str, str | None, str]]] = {
    "arm64": [
        ("vmcore.elf", "capture/vmcore.elf", None,
         "dd if=/proc/vmcore bs=1M in the capture kernel (sha256 equal to /proc/vmcore's)"),
        ("d31.kdump", "capture/d31.kdump", "vmcore.elf",
         "makedumpfile 1.7.2 (Debian arm64) --message-level 31 -d 31 /proc/vmcore, in the "
         "capture kernel (kdump-compressed, pages stored uncompressed)"),
        ("E-d31.elf", "capture/E-d31.elf", "vmcore.elf",
         "makedumpfile 1.7.2 (Debian arm64) --message-level 31 -E -d 31 /proc/vmcore, in the "
         "capture kernel"),
        ("qemu-elf.vmcore", "qemu-elf.vmcore", "vmcore.elf",
         "QMP stop + dump-guest-memory format=elf paging=false (QEMU 7.2), before the crash"),
    ] + [(f"d{lv}.kdump", f"derived/d{lv}.kdump", "vmcore.elf",
          f"makedumpfile 1.7.2 (Debian arm64 binary) --message-level 31 -d {lv} vmcore.elf, "
          "on the host under qemu-aarch64-static (arm64-derive.sh; its -d 31 output is "
          "byte-identical to the capture kernel's)") for lv in (1, 2, 4, 8, 16)],
    "xen": [
        ("domu.core", "domu.core", None,
         "xl dump-core domu (Xen 4.17 xl in dom0), PV guest paused right after xl save -p"),
        ("domu.save", "domu.save", "domu.core", "xl save -p domu (Xen 4.17), PV guest"),
        ("domu-pvh.core", "domu-pvh.core", "domu.core",
         "xl dump-core domu-pvh, PVH guest paused right after xl save -p"),
        ("domu-pvh.save", "domu-pvh.save", "domu-pvh.core", "xl save -p domu-pvh, PVH guest"),
    ],
}
TEXT = {
    "arm64": ["capture/dmesg.txt", "capture/capture-dmesg.txt", "capture/mdf-d31.out",
              "capture/mdf-c-d31.out", "capture/mdf-dmesg.out", "capture/sha256-vmcore.out",
              "capture/capture-cmdline.txt", "capture/capture-iomem.txt", "guest-info/uname-r.txt",
              "guest-info/uname-a.txt", "guest-info/cmdline.txt", "guest-info/iomem.txt",
              "guest-info/meminfo.txt", "guest-info/dmesg-precrash.txt", "guest-info/kallsyms.gz",
              "serial.log", "qemu-cmdline.txt", "qmp-log.jsonl",
              *(f"derived/d{lv}.out" for lv in (1, 2, 4, 8, 16, 31))],
    "xen": [f"{g}{suffix}" for g in ("domu", "domu-pvh")
            for suffix in ("-guest-info/console.log", "-xl-create.txt", "-xl-list.txt", "-xl-vcpu-list.txt",
                           "-xl-dump-core.txt", "-xl-save.txt", "-guest-info/uname-r.txt",
                           "-guest-info/uname-a.txt", "-guest-info/kallsyms.gz")]
    + ["xl-info.txt", "xl-dmesg.txt", "serial.log", "qemu-cmdline.txt"],
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def elf_vmcoreinfo(path: Path) -> str | None:
    """The VMCOREINFO note of an ELF64 little-endian core file, if it has one."""
    with open(path, "rb") as f:
        eh = f.read(64)
        phoff, = struct.unpack_from("<Q", eh, 32)
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        f.seek(phoff)
        phdrs = f.read(phentsize * phnum)
        for i in range(phnum):
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", phdrs, i * phentsize)
            if p_type != 4:
                continue
            f.seek(p_offset)
            data, pos = f.read(p_filesz), 0
            while pos + 12 <= len(data):
                namesz, descsz, _ = struct.unpack_from("<III", data, pos)
                name = data[pos + 12:pos + 12 + namesz].rstrip(b"\0")
                desc_at = pos + 12 + (namesz + 3) // 4 * 4
                if name == b"VMCOREINFO":
                    return data[desc_at:desc_at + descsz].split(b"\0")[0].decode()
                pos = desc_at + (descsz + 3) // 4 * 4
    return None


def makedumpfile_report(text: str) -> dict[str, int]:
    """The page counts makedumpfile printed (hex values) by label."""
    return {m.group(1).strip(): int(m.group(2), 16)
            for m in re.finditer(r"^\s*([A-Za-z][A-Za-z -]+?)\s*: 0x([0-9a-f]+)$", text, re.M)}


def domu_console_facts(out: Path) -> None:
    """Split each guest's console log into NAME-guest-info/ (uname, kallsyms)."""
    for guest in ("domu", "domu-pvh"):
        if not (out / f"{guest}-console.log").is_file():
            continue
        log = (out / f"{guest}-console.log").read_text(errors="replace")
        gi = out / f"{guest}-guest-info"
        gi.mkdir(exist_ok=True)
        for tag, fname in (("KDT-DOMU-UNAME-R ", "uname-r.txt"), ("KDT-DOMU-UNAME-A ", "uname-a.txt")):
            line = next(ln for ln in log.splitlines() if ln.startswith(tag))
            (gi / fname).write_text(line[len(tag):].strip() + "\n")
        body = log.split("KDT-DOMU-KALLSYMS-BEGIN", 1)[1].split("KDT-DOMU-KALLSYMS-END", 1)[0]
        # kernel messages on the same console may land inside the block ("[  148.120981]
        # hrtimer: interrupt took ... ns" in the middle of a line): drop them
        body = re.sub(r"\[\s*\d+\.\d+\][^\n]*", "", body)
        (gi / "kallsyms.gz").write_bytes(base64.b64decode("".join(body.split())))
        gzip.decompress((gi / "kallsyms.gz").read_bytes())  # must be a whole gzip stream
        n = len(body.split())
        head, tail = log.split("KDT-DOMU-KALLSYMS-BEGIN", 1)[0], log.split("KDT-DOMU-KALLSYMS-END", 1)[1]
        (gi / "console.log").write_text(f"{head}KDT-DOMU-KALLSYMS-BEGIN\n[{n} lines of base64 left "
                                        f"out: decoded as kallsyms.gz]\nKDT-DOMU-KALLSYMS-END{tail}")


def compress(src: Path, dst: Path, ref: Path | None) -> None:
    # -19 for whole dumps; patches at -9 (as small within a few KiB, and minutes faster:
    # zstd's optimal parser over a 300 MB reference is very slow)
    cmd = ["zstd", "-q", "-f", "-9" if ref else "-19", "--long=30", "--single-thread"]
    if ref is not None:
        cmd.append(f"--patch-from={ref}")
    subprocess.run([*cmd, str(src), "-o", str(dst)], check=True)


def main(kind: str, out: Path, set_dir: Path) -> None:
    set_dir.mkdir(parents=True, exist_ok=True)
    if kind == "xen":
        domu_console_facts(out)
    dumps = []
    for name, rel, ref, how in PLANS[kind]:
        src = out / rel
        if not src.is_file():
            print(f"pack.py: {src} missing, left out", file=sys.stderr)
            continue
        stored = name + (".patch.zst" if ref else ".zst")
        dst = set_dir / stored
        if not dst.is_file():
            compress(src, dst, out / next(r for n, r, _, _ in PLANS[kind] if n == ref) if ref else None)
        dumps.append({"name": name, "stored": stored, "patch_from": ref, "size": src.stat().st_size,
                      "sha256": sha256(src), "stored_size": dst.stat().st_size, "made_by": how})
    texts = []
    for rel in TEXT[kind]:
        src = out / rel
        if not src.is_file():
            continue
        name = rel.removeprefix("capture/")
        dst = set_dir / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        texts.append({"name": name, "size": dst.stat().st_size, "sha256": sha256(dst)})
    manifest: dict[str, object] = {"kind": kind, "dumps": dumps, "text_files": texts}
    if kind == "arm64":
        vmci = elf_vmcoreinfo(out / "capture/vmcore.elf")
        if vmci:
            (set_dir / "vmcoreinfo.txt").write_text(vmci)
        manifest["makedumpfile_report_d31"] = makedumpfile_report((out / "capture/mdf-d31.out").read_text())
    (set_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
