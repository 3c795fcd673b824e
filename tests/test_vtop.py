"""x86_64 address translation: hand-built page tables, and the real vmcore against drgn."""

from __future__ import annotations

import struct

import pytest
from ours import kdumptool
from peers import require_tool

from corpus import need_corpus_file
from kdumptool.errors import TranslationError
from kdumptool.open import open_dumps
from kdumptool.vtop import translator_for
from kdumptool.vtop.walker import Walker
from kdumptool.vtop.x86_64 import FIVE_LEVEL, FOUR_LEVEL, decoder

P, PSE = 0x1, 0x80


def memory(tables: dict[int, dict[int, int]]):
    """read_phys over sparse page tables ``{table paddr: {index: entry}}``."""

    def read(paddr: int, size: int) -> bytes:
        table = tables.get(paddr, {})
        return b"".join(struct.pack("<Q", table.get(i, 0)) for i in range(size // 8))

    return read


def idx(vaddr: int, shift: int) -> int:
    return (vaddr >> shift) & 0x1FF


VA = 0xFFFF888012345678


def four_level(leaf_level: str) -> dict[int, dict[int, int]]:
    t = {0x1000: {idx(VA, 39): 0x2000 | P}, 0x2000: {}, 0x3000: {}, 0x4000: {}}
    if leaf_level == "pud":
        t[0x2000][idx(VA, 30)] = 0x40000000 | P | PSE  # 1 GiB page
    else:
        t[0x2000][idx(VA, 30)] = 0x3000 | P
        if leaf_level == "pmd":
            t[0x3000][idx(VA, 21)] = 0x800000 | P | PSE  # 2 MiB page
        else:
            t[0x3000][idx(VA, 21)] = 0x4000 | P
            t[0x4000][idx(VA, 12)] = 0x8000000000777000 | P  # NX bit is not address
    return t


@pytest.mark.parametrize("leaf,expected,size", [
    ("pte", 0x777678, 4096),
    ("pmd", 0x800000 | (VA & 0x1FFFFF), 2 << 20),
    ("pud", 0x40000000 | (VA & 0x3FFFFFFF), 1 << 30),
])
def test_four_level_translations(leaf: str, expected: int, size: int) -> None:
    w = Walker(FOUR_LEVEL, decoder(), 0x1000, memory(four_level(leaf))).walk(VA)
    assert (w.paddr, w.page_size) == (expected, size)
    assert [s.level for s in w.steps][-1] == leaf


def test_four_level_missing_entry_names_level_index_entry() -> None:
    t = four_level("pte")
    t[0x3000][idx(VA, 21)] = 0x4000  # present bit clear
    with pytest.raises(TranslationError) as info:
        Walker(FOUR_LEVEL, decoder(), 0x1000, memory(t)).walk(VA)
    e = info.value
    assert (e.level, e.index, e.entry, e.table) == ("pmd", idx(VA, 21), 0x4000, 0x3000)
    assert "pmd[" in str(e) and "is not present" in str(e)


def test_five_level_translation_and_failure() -> None:
    va = 0xFF11000012345678
    t = {0x1000: {idx(va, 48): 0x2000 | P}, 0x2000: {idx(va, 39): 0x3000 | P},
         0x3000: {idx(va, 30): 0x4000 | P}, 0x4000: {idx(va, 21): 0x5000 | P},
         0x5000: {idx(va, 12): 0x999000 | P}}
    w = Walker(FIVE_LEVEL, decoder(), 0x1000, memory(t)).walk(va)
    assert w.paddr == 0x999678 and [s.level for s in w.steps] == ["pgd", "p4d", "pud", "pmd", "pte"]
    del t[0x2000][idx(va, 39)]
    with pytest.raises(TranslationError) as info:
        Walker(FIVE_LEVEL, decoder(), 0x1000, memory(t)).walk(va)
    assert info.value.level == "p4d"


def test_sme_mask_is_not_part_of_the_address() -> None:
    sme = 1 << 47
    t = four_level("pte")
    t[0x4000][idx(VA, 12)] |= sme
    w = Walker(FOUR_LEVEL, decoder(sme), 0x1000, memory(t)).walk(VA)
    assert w.paddr == 0x777678


@pytest.mark.parametrize("form,va,good", [
    (FOUR_LEVEL, VA ^ (1 << 50), False),  # the same table indexes as VA, bit 50 differs
    (FOUR_LEVEL, 0x0000800000000000, False), (FOUR_LEVEL, 0xFFFF7FFFFFFFFFFF, False),
    (FOUR_LEVEL, 0x00007FFFFFFFF000, True), (FOUR_LEVEL, 0xFFFF800000000000, True),
    (FIVE_LEVEL, 0xFF11000012345678, True), (FIVE_LEVEL, 0xFE11000012345678, False),
    (FIVE_LEVEL, 0x0100000000000000, False), (FOUR_LEVEL, 1 << 64, False),
])
def test_non_canonical_addresses_are_refused_before_any_table(form, va: int, good: bool) -> None:
    """A non-canonical x86_64 address is not "not present": the walk never starts (the
    index bits of VA ^ bit 50 would otherwise find VA's page)."""
    from kdumptool.errors import NonCanonicalAddressError

    assert form.canonical(va) is good
    if not good:
        with pytest.raises(NonCanonicalAddressError, match="is not a canonical address"):
            Walker(form, decoder(), 0x1000, memory(four_level("pte"))).walk(va)


def test_real_vmcore_addresses_read_as_drgn_reads_them() -> None:
    """Direct-map, vmemmap and kernel-image addresses of the real dump: our translation
    through its page tables reads the same bytes as drgn's virtual reads."""
    drgn = require_tool("drgn")
    path = need_corpus_file("x86_64-kdump-320m/derived/c-d31.kdump")
    prog = drgn.Program()
    prog.set_core_dump(str(path))
    with open_dumps([str(path)]) as reader:
        v = reader.info.vmcoreinfo
        xlat = translator_for(reader)
        from kdumptool.filters.mem_map import find_mem_map

        ranges = find_mem_map(v, reader.max_pfn, lambda a, n: b"".join(
            reader.read(p, k) for p, k in xlat.ranges(a, n)), xlat.is_kernel_address)
        addrs = [v.symbol("mem_section"), v.symbol("init_uts_ns"), v.symbol("swapper_pg_dir"),
                 v.symbol("prb")] + [r.mem_map + 64 * 100 for r in ranges]
        for vaddr in addrs:
            ours = reader.read(xlat.translate(vaddr), 64)
            assert ours == prog.read(vaddr, 64), hex(vaddr)
        # kernel-image addresses translate the same through the page tables and phys_base
        for sym in ("init_uts_ns", "_stext", "swapper_pg_dir"):
            assert xlat.walker.translate(v.symbol(sym)) == xlat.image_to_phys(v.symbol(sym))
        raw = reader.read(xlat.translate(v.symbol("init_uts_ns")) + 65 * 2, 65)
        assert raw.split(b"\0")[0] == b"6.1.0-56-amd64"


def test_vtop_command_prints_the_walk() -> None:
    path = need_corpus_file("x86_64-kdump-320m/derived/c-d31.kdump")
    proc = kdumptool("vtop", path, "0xffff8a58d3fd2000")
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    for level in ("pgd", "pud", "pmd", "pte"):
        assert f"  {level}" in out
    assert "-> 0x13fd2000" in out
    bad = kdumptool("vtop", path, "0xffff9000deadb000")
    assert bad.returncode == 1 and b"is not present" in bad.stderr


@pytest.mark.parametrize("text", ["ffffffff99bfb000", "0xffffffff99bfb000", "0XFFFFFFFF99BFB000"])
def test_vtop_takes_hex_as_vmcoreinfo_prints_it(text: str) -> None:
    """SYMBOL(init_uts_ns)=ffffffff99bfb000 in VMCOREINFO: pasted as is, with or without 0x."""
    from ours import REPO

    proc = kdumptool("vtop", REPO / "corpus" / "x86_64-kdump-320m-c-d31.kdump", text)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().splitlines()[-1] == "0xffffffff99bfb000 -> 0xb1fb000 (2048 KiB page)"


@pytest.mark.parametrize("text,code,message", [
    ("0x0000900000000000", 1, "0x900000000000 is not a canonical address: with x86_64 4-level paging, "
                              "bits 63-47 must all equal bit 47"),
    ("12g", 2, "address '12g' is not a hexadecimal number"),
    ("+5", 2, "address '+5' is not a hexadecimal number"),
    ("1" + "0" * 16, 2, "address '10000000000000000' does not fit in 64 bits"),
])
def test_vtop_says_why_an_address_is_refused(text: str, code: int, message: str) -> None:
    from ours import REPO

    path = REPO / "corpus" / "x86_64-kdump-320m-c-d31.kdump"
    proc = kdumptool("vtop", path, text)
    assert proc.returncode == code
    assert proc.stderr.decode().endswith(f"{message}\n"), proc.stderr.decode()
    assert b"not present" not in proc.stderr


# --- aarch64 -------------------------------------------------------------------------------

from kdumptool.vtop.aarch64 import decoder as a64_decoder  # noqa: E402
from kdumptool.vtop.aarch64 import paging_form  # noqa: E402

TABLE, BLOCK, PAGE = 0b11, 0b01, 0b11


@pytest.mark.parametrize("shift,va_bits,levels", [
    (12, 39, ["L1", "L2", "L3"]), (12, 48, ["L0", "L1", "L2", "L3"]),
    (14, 47, ["L1", "L2", "L3"]), (14, 48, ["L0", "L1", "L2", "L3"]),
    (16, 42, ["L2", "L3"]), (16, 48, ["L1", "L2", "L3"]), (16, 52, ["L1", "L2", "L3"]),
])
def test_aarch64_forms(shift: int, va_bits: int, levels: list[str]) -> None:
    form = paging_form(shift, va_bits)
    assert [lvl.name for lvl in form.levels] == levels
    assert form.levels[-1].shift == shift
    assert sum(lvl.bits for lvl in form.levels) + shift == va_bits


def _a64_tables(shift: int, va_bits: int, va: int, leaf_depth: int | None, target: int,
                extra_bits: int = 0) -> dict[int, dict[int, int]]:
    form = paging_form(shift, va_bits)
    tables: dict[int, dict[int, int]] = {}
    table = 0x100000
    for depth, lvl in enumerate(form.levels):
        i = (va >> lvl.shift) & ((1 << lvl.bits) - 1)
        last = depth == len(form.levels) - 1
        if last or depth == leaf_depth:
            tables.setdefault(table, {})[i] = target | extra_bits | (PAGE if last else BLOCK)
            break
        nxt = table + (1 << shift)
        tables.setdefault(table, {})[i] = nxt | TABLE
        table = nxt
    return tables


def a64_memory(tables: dict[int, dict[int, int]]):
    def read(paddr: int, size: int) -> bytes:
        t = tables.get(paddr, {})
        return b"".join(struct.pack("<Q", t.get(i, 0)) for i in range(size // 8))
    return read


@pytest.mark.parametrize("shift,va_bits", [(12, 39), (12, 48), (14, 47), (16, 42), (16, 48)])
def test_aarch64_page_and_block_translations(shift: int, va_bits: int) -> None:
    form = paging_form(shift, va_bits)
    va = ((1 << 64) - (1 << va_bits)) | 0x12345678 & ((1 << va_bits) - 1)
    page = 0x40000000 & ~((1 << shift) - 1)
    w = Walker(form, a64_decoder(shift), 0x100000,
               a64_memory(_a64_tables(shift, va_bits, va, None, page))).walk(va)
    assert w.paddr == page | (va & ((1 << shift) - 1)) and w.page_size == 1 << shift
    # a block one level above the last
    depth = len(form.levels) - 2
    size = 1 << form.levels[depth].shift
    block = 0x80000000 & ~(size - 1)
    w = Walker(form, a64_decoder(shift), 0x100000,
               a64_memory(_a64_tables(shift, va_bits, va, depth, block))).walk(va)
    assert w.paddr == block | (va & (size - 1)) and w.page_size == size
    # an invalid descriptor names its level
    tables = _a64_tables(shift, va_bits, va, None, page)
    last_table = max(tables)
    tables[last_table] = {k: v & ~1 for k, v in tables[last_table].items()}
    with pytest.raises(TranslationError) as info:
        Walker(form, a64_decoder(shift), 0x100000, a64_memory(tables)).walk(va)
    assert info.value.level == form.levels[-1].name


def test_aarch64_52bit_physical_addresses_with_64k_lpa() -> None:
    va = (1 << 64) - (1 << 52) + 0x123456789
    target = 0x40000 << 16  # 0x4_0000_0000 = 16 GiB, below 2^48
    high = 0xA  # PA[51:48]
    tables = _a64_tables(16, 52, va, None, target, extra_bits=high << 12)
    w = Walker(paging_form(16, 52), a64_decoder(16, 52), 0x100000, a64_memory(tables)).walk(va)
    assert w.paddr == (high << 48) | target | (va & 0xFFFF)


def test_aarch64_translator_from_vmcoreinfo() -> None:
    """VMCOREINFO picks the form (VA_BITS, or 64 - TCR_EL1_T1SZ) and the root
    (swapper_pg_dir - kimage_voffset)."""
    import builders

    from kdumptool.vmcoreinfo import VmcoreInfo
    from kdumptool.vtop.aarch64 import Aarch64Translator

    text = builders.vmcoreinfo_text(machine=183)  # VA_BITS=48, kimage_voffset 0x-prefixed
    v = VmcoreInfo.parse(text)
    root = v.symbol("swapper_pg_dir") - int(v.require("NUMBER(kimage_voffset)"), 16)
    va = 0xFFFF000012345678
    tables = _a64_tables(12, 48, va, None, 0x7654000)
    tables = {root + (k - 0x100000): {i: (e - 0x100000 + root) if e & 3 == 3 and e < 0x7000000
                                      else e for i, e in t.items()} for k, t in tables.items()}
    xlat = Aarch64Translator(v, a64_memory(tables))
    assert xlat.walker.root == root and len(xlat.form.levels) == 4
    assert xlat.translate(va) == 0x7654678
    assert xlat.is_kernel_address(va) and not xlat.is_kernel_address(0x0000FFFF12345678)
    # the kernel prints TCR_EL1_T1SZ as 0x%llx (arch/arm64/kernel/crash_core.c): 0x19 = 25
    v39 = VmcoreInfo.parse(text + b"NUMBER(TCR_EL1_T1SZ)=0x19\n")
    assert len(Aarch64Translator(v39, a64_memory(tables)).form.levels) == 3
    v39_decimal = VmcoreInfo.parse(text + b"NUMBER(TCR_EL1_T1SZ)=25\n")
    assert len(Aarch64Translator(v39_decimal, a64_memory(tables)).form.levels) == 3
