"""Real Xen files (corpus/xen-4.17-domu-96m): Debian 12's Xen 4.17 in QEMU TCG, a PV and a
PVH guest (Debian 6.1 amd64 kernel, 96 MiB). The PV guest was saved with ``xl save -p``, then
dumped with ``xl dump-core`` while still paused (the same memory); the PVH guest was paused
and dumped, then saved.  The guests' own uname and
/proc/kallsyms (printed on their consoles), libkdumpfile and drgn are the judges.  See
corpus/xen-4.17-domu-96m/MANIFEST.md.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from ours import assert_peers_read, kdumptool, our_digests
from peers import drgn_open_ok, require_tool
from samples import need_sample, sample_manifest, sample_path
from test_filter import bitmap2

from kdumptool.dmesg import dmesg_text
from kdumptool.kernel.session import open_kernel
from kdumptool.open import open_dump

SET = "xen-4.17-domu-96m"
#: dump -> (guest, format, what ``info`` says of the domain)
DUMPS = {
    "domu.core": ("domu", "xen-core", "PV"),
    "domu.save": ("domu", "xen-stream", "x86 PV"),
    "domu-pvh.core": ("domu-pvh", "xen-core", "HVM"),
    "domu-pvh.save": ("domu-pvh", "xen-stream", "x86 HVM"),
}
MARKER = b"KDT-XEN-DOMU-TMPFS-MARKER-0123456789abcdef\n"
#: Xen's own slots of a 64-bit PV guest's top-level table (256-271: Xen's virtual range);
#: libxc's save zeroes them (tools/libs/guest/xg_sr_save_x86_pv.c, normalise_pagetable)
XEN_L4_SLOTS = range(256, 272)
#: the PV guest's top-level tables map themselves at slot 258 (Xen's linear page tables)
LINEAR_SLOT = 258


def dump(name: str) -> Path:
    return need_sample(SET, name)


def text(rel: str) -> str:
    return sample_path(SET, rel).read_text(encoding="utf-8")


@lru_cache(maxsize=2)
def guest_kallsyms(guest: str) -> tuple[str, ...]:
    with gzip.open(sample_path(SET, f"{guest}-guest-info/kallsyms.gz"), "rt") as f:
        return tuple(f.read().splitlines())


def guest_symbol(guest: str, name: str) -> int:
    return next(int(ln.split()[0], 16) for ln in guest_kallsyms(guest) if ln.split()[2] == name)


def test_manifest_lists_every_file() -> None:
    m = sample_manifest(SET)
    assert sorted(d["name"] for d in m["dumps"]) == sorted(DUMPS)
    assert sample_path(SET, "../recipes/xen-dumps.sh").is_file()


@pytest.mark.parametrize("name", DUMPS)
def test_info_identifies_xen_and_the_guest_kernel(name: str) -> None:
    guest, fmt, domain = DUMPS[name]
    proc = kdumptool("info", "--json", dump(name))
    assert proc.returncode == 0, proc.stderr.decode()
    info = json.loads(proc.stdout)
    assert info["format"] == fmt and info["arch"] == "x86_64" and info["page_size"] == 4096
    assert info["kernel"]["release"] == text(f"{guest}-guest-info/uname-r.txt").strip()
    assert info["xen"]["version"].startswith("4.17") and info["xen"]["domain"] == domain
    # the vCPU's registers became an NT_PRSTATUS note: its pc is kernel text of the guest
    stext, etext = guest_symbol(guest, "_stext"), guest_symbol(guest, "_etext")
    assert [stext <= int(c["pc"], 16) < etext for c in info["cpus_state"]] == [True]


#: PV: every PFN 0-0x5fff. PVH: the header counts 24592 pages, xl wrote 24545 ("j (24545) !=
#: nr_pages (24592)" in domu-pvh-xl-dump-core.txt) and padded .xen_pfn with 47 unused slots.
CORE_PAGES = {"domu.core": 24576, "domu-pvh.core": 24545}


@pytest.mark.parametrize("name", CORE_PAGES)
def test_libkdumpfile_reads_the_dump_core_as_we_do(name: str) -> None:
    path = dump(name)
    pages = our_digests(path)
    assert len(pages) == CORE_PAGES[name]
    assert_peers_read(path, pages, peers=("libkdumpfile",))


def _normalised(page: bytes, own_mfn: int, m2p: dict[int, int]) -> bytes:
    """A PV page-table page as libxc saves it: machine frames replaced by the guest's
    frames; in a top-level table (it maps itself at LINEAR_SLOT) Xen's slots are zeroed."""
    entries = np.frombuffer(page, "<u8").copy()
    mask = ((1 << 40) - 1) << 12
    top_level = (int(entries[LINEAR_SLOT]) & mask) >> 12 == own_mfn
    for i in np.flatnonzero(entries & 1):
        e = int(entries[i])
        entries[i] = (e & ~mask) | (m2p.get((e & mask) >> 12, 0) << 12)
    if top_level:
        entries[list(XEN_L4_SLOTS)] = 0
    return entries.tobytes()


def test_pv_save_is_the_core_with_page_tables_normalised() -> None:
    """Same memory: every page equal, except page-table pages, which the save stream holds
    with guest frames where the dump-core has machine frames (.xen_p2m maps them)."""
    with open_dump(str(dump("domu.core"))) as core, open_dump(str(dump("domu.save"))) as save:
        sh = core.section(".xen_p2m")
        rows = np.frombuffer(core.source.pread(sh.sh_offset, sh.sh_size),
                             [("pfn", "<u8"), ("gmfn", "<u8")])
        m2p = {int(g): int(p) for p, g in rows.tolist()}
        p2m = {p: g for g, p in m2p.items()}
        differing, top_level = 0, 0
        for pfn in range(core.max_pfn):
            a, b = core.read_page(pfn), save.read_page(pfn)
            if a != b:
                differing += 1
                top_level += (int.from_bytes(a[LINEAR_SLOT * 8:LINEAR_SLOT * 8 + 8], "little")
                              >> 12) & ((1 << 40) - 1) == p2m[pfn]
                assert _normalised(a, p2m[pfn], m2p) == b, f"pfn {pfn:#x}"
    assert 20 < differing < 1000 and 0 < top_level < differing


def test_pvh_save_and_core_hold_the_same_guest() -> None:
    """PVH: the dump-core was taken first (the guest paused), then the guest ran on into the
    save's suspend: most pages are equal; the dump-core leaves out the VGA hole (PFNs
    0xa0-0xbf, xc_core_arch_gpfn_may_present), the save holds it."""
    core, save = our_digests(dump("domu-pvh.core")), our_digests(dump("domu-pvh.save"))
    common = set(core) & set(save)
    same = sum(core[p] == save[p] for p in common)
    assert len(common) > 24000 and same > 0.97 * len(common)
    assert set(range(0xA0, 0xC0)) <= set(save) - set(core)
    assert not set(range(0xA0, 0xC0)) & set(core)


@pytest.mark.parametrize("name", DUMPS)
def test_symbols_equal_the_guest_kallsyms(name: str) -> None:
    guest = DUMPS[name][0]
    want = [ln for ln in guest_kallsyms(guest) if "[" not in ln]
    with open_kernel([str(dump(name))]) as kernel:
        assert kernel.origin.source == "memory"  # no VMCOREINFO note: found in memory
        ours = [s.kallsyms_line() for s in kernel.core_symbols]
        uts = kernel.symbol("init_uts_ns") + kernel.vmcoreinfo.offset("uts_namespace.name")
        fields = [kernel.read_virtual(uts + 65 * i, 65).split(b"\0")[0].decode() for i in range(5)]
    assert ours == want
    uname = text(f"{guest}-guest-info/uname-a.txt").split()
    assert fields[0] == "Linux" and fields[2] == uname[2] and fields[4] == "x86_64"
    assert fields[3] == " ".join(uname[3:-2])


@pytest.mark.parametrize("name", DUMPS)
def test_guest_pages_hold_its_markers(name: str) -> None:
    """2 MiB of marker lines in the guest's tmpfs: 512 pages of them, wherever they lie."""
    found = 0
    with open_dump(str(dump(name))) as reader:
        for batch in reader.iter_batches():
            rows = batch.data.reshape(len(batch.data), -1)
            found += sum(MARKER in bytes(r[:4096]) for r in rows)
    assert found >= 512


def test_dmesg_of_core_and_save_is_the_guest_log() -> None:
    """PV: the save and the dump-core hold the same log, which ends with the suspend. PVH
    (dump-core of the running guest, then the save): the save's log continues the core's."""
    logs = {}
    for name, (guest, _, _) in DUMPS.items():
        with open_kernel([str(dump(name))]) as kernel:
            logs[name] = dmesg_text(kernel.reader).decode().splitlines()
        assert "Linux version " + text(f"{guest}-guest-info/uname-r.txt").strip() in logs[name][0]
    assert logs["domu.core"] == logs["domu.save"]
    assert "suspending xenstore" in logs["domu.save"][-1]
    core, save = logs["domu-pvh.core"], logs["domu-pvh.save"]
    assert save[:len(core)] == core and "suspending xenstore" in save[-1]
    assert any("Freezing user space processes" in line for line in save[len(core):])


def test_pv_core_page_tables_are_walked_through_the_p2m(tmp_path: Path) -> None:
    """A PV guest's page tables hold machine frames: filtering (vmemmap, direct map) of the
    dump-core keeps exactly the pages it keeps from the save, whose tables hold guest frames."""
    vmci = tmp_path / "vmcoreinfo.txt"
    proc = kdumptool("vmcoreinfo", "--scan", dump("domu.core"))
    assert proc.returncode == 0, proc.stderr.decode()
    vmci.write_bytes(proc.stdout)
    kept = []
    for name in ("domu.core", "domu.save"):
        out = tmp_path / f"{name}.kdump"
        proc = kdumptool("convert", "-q", "-d", "31", "-i", vmci, dump(name), out)
        assert proc.returncode == 0, proc.stderr.decode()
        kept.append(bitmap2(out))
    assert np.array_equal(kept[0], kept[1]) and 1000 < int(kept[0].sum()) < 96 << 8


@pytest.mark.parametrize("name", ["domu-pvh.core", "domu.save"])
def test_conversion_opens_in_drgn(name: str, tmp_path: Path) -> None:
    require_tool("drgn")
    vmci = tmp_path / "vmcoreinfo.txt"
    vmci.write_bytes(kdumptool("vmcoreinfo", "--scan", dump(name)).stdout)
    out = tmp_path / "out.elf"
    proc = kdumptool("convert", "-q", "-E", "-i", vmci, dump(name), out)
    assert proc.returncode == 0, proc.stderr.decode()
    ok, release = drgn_open_ok(out, isolate=True)
    assert ok, release
    assert release == text(f"{DUMPS[name][0]}-guest-info/uname-r.txt").strip()


def test_ps_of_the_pv_core_walks_the_direct_map() -> None:
    """Tasks live in the direct map, reached through the PV page tables (machine frames):
    ``ps`` of the dump-core lists what it lists of the save, including the guest's shells."""
    out = []
    for name in ("domu.core", "domu.save"):
        proc = kdumptool("ps", dump(name))
        assert proc.returncode == 0, proc.stderr.decode()
        out.append(proc.stdout.decode())
    assert out[0] == out[1]
    comms = [line.split()[-1] for line in out[0].splitlines()[1:]]
    assert comms[:2] == ["swapper/0", "init"] and "sh" in comms and len(comms) > 40
