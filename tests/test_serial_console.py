"""The kernel log read from a dump equals what the guest printed on its serial console.

The corpus keeps each guest's serial console (``serial.log``). The console prints every
record whose level is below ``console_loglevel`` (7 here: no ``KERN_DEBUG``), each line of
a multi-line record with the record's timestamp (Linux ``kernel/printk/printk.c``,
``record_print_text``), while ``makedumpfile --dump-dmesg`` indents continuation lines;
so the records are rendered here the console's way and compared line for line.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from corpus import corpus_text, need_corpus_file
from kdumptool.dmesg import dmesg_records
from kdumptool.open import adopt_vmcoreinfo, open_dumps
from kdumptool.scan import scan_vmcoreinfo

_KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d{6}\] ")
#: ``CONSOLE_LOGLEVEL_DEFAULT`` of the Debian kernel: records of level 7 (debug) stay off it
CONSOLE_LOGLEVEL = 7


def console_lines(records: list[dict]) -> list[str]:
    out = []
    for rec in records:
        if rec["level"] >= CONSOLE_LOGLEVEL:
            continue
        sec, nsec = divmod(rec["ts_nsec"], 10**9)
        out += [f"[{sec:5d}.{nsec // 1000:06d}] {line}" for line in rec["text"].split("\n")]
    return out


def serial_kernel_lines(rel: str, boot: int = 0) -> list[str]:
    """The kernel's lines of the ``boot``-th kernel on the console (0: the crashed one)."""
    lines = [ln.rstrip("\r") for ln in corpus_text(rel).splitlines() if _KERNEL_LINE.match(ln)]
    starts = [i for i, ln in enumerate(lines) if "] Linux version " in ln]
    bounds = [*starts, len(lines)]
    return lines[bounds[boot]:bounds[boot + 1]]


def test_qemu_dump_log_equals_serial_console() -> None:
    reader = open_dumps([str(need_corpus_file("x86_64-qemu-256m/qemu-elf.vmcore"))])
    expected = serial_kernel_lines("x86_64-qemu-256m/serial.log")
    assert len(expected) > 300
    assert console_lines(dmesg_records(reader)) == expected


def test_qemu_kdump_zlib_log_equals_serial_console() -> None:
    reader = open_dumps([str(need_corpus_file("x86_64-qemu-256m/qemu-kdump-zlib.vmcore"))])
    assert console_lines(dmesg_records(reader)) == serial_kernel_lines("x86_64-qemu-256m/serial.log")


def test_dump_without_vmcoreinfo_log_equals_serial_console() -> None:
    """No VMCOREINFO note: the kernel's own copy in memory is found and used."""
    reader = open_dumps([str(need_corpus_file("x86_64-qemu-256m-novmcoreinfo/qemu-elf.vmcore"))])
    assert reader.info.vmcoreinfo is None
    found = scan_vmcoreinfo(reader, first_only=True)
    assert found and found[0].vmcoreinfo.osrelease == "6.1.0-56-amd64"
    adopt_vmcoreinfo(reader, found[0].vmcoreinfo)
    expected = serial_kernel_lines("x86_64-qemu-256m-novmcoreinfo/serial.log")
    assert len(expected) > 300
    assert console_lines(dmesg_records(reader)) == expected


def test_dmesg_command_recovers_vmcoreinfo_from_memory(tmp_path: Path) -> None:
    path = need_corpus_file("x86_64-qemu-256m-novmcoreinfo/qemu-elf.vmcore")
    proc = subprocess.run([sys.executable, "-m", "kdumptool", "dmesg", "--json", str(path)],
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert b"using the copy found in memory at 0x" in proc.stderr
    import json

    expected = serial_kernel_lines("x86_64-qemu-256m-novmcoreinfo/serial.log")
    assert console_lines(json.loads(proc.stdout)) == expected


@pytest.mark.parametrize("rel", ["x86_64-kdump-320m/vmcore.elf", "x86_64-kdump-320m/derived/c-d31.kdump"])
def test_kdump_log_equals_serial_console_of_crashed_kernel(rel: str) -> None:
    reader = open_dumps([str(need_corpus_file(rel))])
    ours = console_lines(dmesg_records(reader))
    expected = serial_kernel_lines("x86_64-kdump-320m/serial.log", boot=0)
    assert len(expected) > 300
    assert ours == expected
