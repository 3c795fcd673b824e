"""Mutation strategies and the :class:`Generator` that applies them to seeds.

Values are boundaries (0, 1, -1, max, page size +-1, file size +-1, huge) or random; the
strategies are field-aware (*structured*, *geometry*, *vmcoreinfo*), *havoc* (flips, runs,
zeroed blocks, truncations, insertions, splices), *boundary*, *flat* (re-flattening), *mixed*,
and the opt-in *scale*. Input ``i`` of a campaign seed is always the same.
"""

from __future__ import annotations

import random

from common import MAX_INPUT, B
from seeds import Seed
from structure import Field, Layout, describe, parse_field

from kdumptool.formats.elf import PT_LOAD, PT_NOTE, elf_structs

# ============================================================================================
# values and mutators
# ============================================================================================


def boundary_values(f: Field, orig: int, file_size: int, page_size: int) -> list[int]:
    """The boundary values for field ``f`` (0, 1, -1, max, page size +-1, file size +-1, huge,
    the original value +-1...), unmasked: :meth:`Field.write` keeps the field's low bits."""
    bits = 8 * f.size
    umax = (1 << bits) - 1
    smax = (1 << (bits - 1)) - 1
    return [0, 1, 2, 3, 4, 7, 8, 12, 16, 24, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, smax,
            smax + 1, umax, umax - 1, -1, -2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32,
            1 << 40, 1 << 48, 1 << 52, 1 << 62, 1 << 63, (1 << 63) - 1,
            page_size, page_size - 1, page_size + 1, page_size // 2, 2 * page_size, 512, 1000,
            1023, 1024, 1 << 16, 1 << 18, (1 << 18) + 1, 1 << 20, 1 << 21,
            file_size, file_size - 1, file_size + 1, file_size - 16, file_size - 24,
            file_size // page_size, file_size // page_size + 1, 8 * file_size,
            orig, orig + 1, orig - 1, orig * 2, orig // 2, orig + page_size, orig - page_size,
            -orig]


def interesting(f: Field, orig: int, file_size: int, page_size: int, rng: random.Random) -> int:
    """A boundary value for field ``f``, or the original value with one bit flipped."""
    bits = 8 * f.size
    vals = boundary_values(f, orig, file_size, page_size)
    vals.insert(len(vals) - 1, orig ^ (1 << rng.randrange(bits)))  # the order inputs were made with
    return rng.choice(vals) & ((1 << bits) - 1)


def field_value(f: Field, data: bytes | bytearray, page_size: int, rng: random.Random) -> int:
    """A new value for field ``f``: mostly an interesting one (boundaries), else random bits,
    else the original value off by a little.
    """
    orig = f.read(data)
    r = rng.random()
    if r < 0.72:
        return interesting(f, orig, len(data), page_size, rng)
    if r < 0.86:
        return rng.getrandbits(8 * f.size)
    return rng.randrange(0, max(2, 3 * len(data)))


_SIGNATURES = [b"KDUMP   ", b"DISKDUMP", b"KDUMP  \0", b"makedumpfile\0\0\0\0", b"\x7fELF\x02\x01\x01\0"]
_MACHINES = [b"x86_64", b"i686", b"arm", b"aarch64", b"s390x", b"ppc64", b"ppc", b"", b"x86",
             b"riscv64", b"mips", b"\xff" * 64]


def _mutate_bytes_field(d: bytearray, f: Field, rng: random.Random) -> str:
    name = f.name.rsplit(".", 1)[-1]
    if name == "signature":
        v = rng.choice(_SIGNATURES)
    elif name == "machine":
        v = rng.choice(_MACHINES)
    elif name in ("release", "version", "sysname"):
        v = rng.choice([b"", b"Linux", b"6.1.0-\xff\xfe", b"x" * 65, b"\0Linux", b"9" * 64])
    elif rng.random() < 0.5:
        v = bytes(f.size)
    else:
        v = rng.randbytes(f.size)
    v = v[:f.size].ljust(f.size, b"\0")
    if f.offset + f.size <= len(d):
        d[f.offset:f.offset + f.size] = v
    return f"{f.name}={v[:16]!r}"


def m_field(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Set one schema field to a boundary or random value."""
    if not lay.fields:
        return m_flip(d, lay, rng)
    groups = sorted({f.group for f in lay.fields})
    g = rng.choice(groups)
    f = rng.choice([f for f in lay.fields if f.group == g])
    if f.kind == "bytes":
        return _mutate_bytes_field(d, f, rng)
    v = field_value(f, d, lay.page_size, rng)
    f.write(d, v)
    return f"{f.name}={v:#x}"


_VMCI: dict[str, list[str]] = {
    "PAGESIZE": ["0", "1", "512", "1024", "4096", "16384", "65536", "1048576", "2097152", "3",
                 "-4096", "4097", "0x1000", "", "99999999999999999999"],
    "OSRELEASE": ["", "x" * 300, "6.1.0-\xff", "1", "6.1.0 ", "\t"],
    "SYMBOL(init_uts_ns)": ["0", "ffffffff80000000", "ffffffffffffffff", "fffffffffffffff0",
                            "ffffffff80010000", "7fffffffffffffff", "zz", "-1", "1" + "0" * 20,
                            "ffffffff80010ffc", "ffffffff9fffffff"],
    "OFFSET(uts_namespace.name)": ["0", "4", "-4", "4096", "99999999999", "x",
                                   "-99999999999999", "4093"],
    "NUMBER(phys_base)": ["0", "-1", "-9223372036854775808", "18446744073709551615",
                          "99999999999999999999999", "4096", "x", "-4096", "-65536"],
    "NUMBER(kimage_voffset)": ["0", "-1", "18446744073709551615", "x"],
    "KERNELOFFSET": ["0", "ffffffffffffffff", "zz", "-1", "1" * 40],
    "CRASHTIME": ["0", "1", "99999999999999999999", "253402300800", "-1", "x", "4102444800",
                  "9" * 400],
    "BUILD-ID": ["", "zz" * 100, "\xff"],
    "SYMBOL(swapper_pg_dir)": ["0", "ffffffffffffffff", "ffffffff80010000", "zz"],
    "SYMBOL(_stext)": ["0", "ffffffffffffffff", "zz"],
    "NUMBER(pgtable_l5_enabled)": ["0", "1", "2", "-1", "x"],
    "NUMBER(VA_BITS)": ["0", "48", "52", "64", "99", "-1"],
    "SIZE(page)": ["0", "1", "64", "-64", "99999999"],
    "OFFSET(page.flags)": ["0", "-8", "99999999"],
    "SYMBOL(mem_map)": ["0", "ffffffffffffffff"],
    "SYMBOL(vmemmap_base)": ["0", "ffffffffffffffff", "ffffea0000000000"],
    "SYMBOL(page_offset_base)": ["0", "ffffffffffffffff", "ffff888000000000"],
    "LENGTH(mem_section)": ["0", "-1", "99999999999"],
}


def mutate_vmcoreinfo_text(text: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Change, add, duplicate or garble one ``KEY=VALUE`` line."""
    lines = text.decode("latin-1").split("\n")
    r = rng.random()
    if r < 0.7:
        key = rng.choice(list(_VMCI))
        val = rng.choice(_VMCI[key])
        new = f"{key}={val}"
        for i, ln in enumerate(lines):
            if ln.startswith(key + "="):
                lines[i] = new
                break
        else:
            lines.insert(rng.randrange(len(lines) + 1), new)
        what = f"vmcoreinfo {new[:60]}"
    elif r < 0.8 and lines:
        i = rng.randrange(len(lines))
        what = f"vmcoreinfo delete {lines[i][:40]!r}"
        del lines[i]
    elif r < 0.9 and lines:
        i = rng.randrange(len(lines))
        lines[i] = lines[i].replace("=", rng.choice(["", "==", " = ", "=\0"]), 1)
        what = f"vmcoreinfo garble {lines[i][:40]!r}"
    else:
        lines = lines * rng.choice([2, 50])
        what = "vmcoreinfo repeated"
    return "\n".join(lines).encode("latin-1"), what


def m_vmcoreinfo(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Mutate a VMCOREINFO text in place (padded or cut to its span)."""
    spans = [(a, n) for a, n in lay.texts if n > 0 and a + n <= len(d)]
    if not spans:
        return m_field(d, lay, rng)
    a, n = rng.choice(spans)
    new, what = mutate_vmcoreinfo_text(bytes(d[a:a + n]), rng)
    d[a:a + n] = new[:n].ljust(n, b"\n")
    return what


def _pos(d: bytearray, lay: Layout, rng: random.Random) -> int:
    r = rng.random()
    n = len(d)
    if r < 0.35 and lay.regions:
        a, b = rng.choice(list(lay.regions.values()))
        a, b = max(0, min(a, n - 1)), max(0, min(b, n))
        if b > a:
            return rng.randrange(a, b)
    if r < 0.65 and lay.boundaries:
        b = rng.choice(sorted(lay.boundaries)) + rng.randrange(-16, 17)
        return max(0, min(b, n - 1))
    if r < 0.8:
        return rng.randrange(min(n, 4096))
    return rng.randrange(n)


def m_flip(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Flip one to eight bits. :return: what was done"""
    if not d:
        return "flip (empty)"
    k = rng.choice([1, 1, 2, 3, 8])
    at = []
    for _ in range(k):
        p = _pos(d, lay, rng)
        d[p] ^= 1 << rng.randrange(8)
        at.append(p)
    return f"flip bits at {', '.join(hex(p) for p in at[:4])}"


def m_byte(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Set one byte to a boundary or random value. :return: what was done"""
    if not d:
        return "byte (empty)"
    p = _pos(d, lay, rng)
    d[p] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
    return f"byte {p:#x}={d[p]:#x}"


def m_run(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Overwrite a run of bytes with zeros, ``0xff`` or random bytes. :return: what was done"""
    if not d:
        return "run (empty)"
    p = _pos(d, lay, rng)
    n = min(rng.choice([2, 4, 8, 16, 64, 512]), len(d) - p)
    fill = rng.choice(["zero", "ff", "random"])
    d[p:p + n] = bytes(n) if fill == "zero" else (b"\xff" * n if fill == "ff" else rng.randbytes(n))
    return f"{fill} run {p:#x}+{n}"


def m_zero_block(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Zero a structure's region (or part of it), else a random block. :return: what was done"""
    if lay.regions and rng.random() < 0.5:
        name, (a, b) = rng.choice(list(lay.regions.items()))
        a, b = max(0, min(a, len(d))), max(0, min(b, len(d)))
        if rng.random() < 0.5 and b - a > 64:
            b = a + rng.randrange(1, b - a)
        d[a:b] = bytes(b - a)
        return f"zero {name} {a:#x}-{b:#x}"
    p = _pos(d, lay, rng) if d else 0
    n = min(rng.choice([64, 512, 4096]), len(d) - p)
    d[p:p + n] = bytes(n)
    return f"zero {p:#x}+{n}"


def m_truncate(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Cut the input at a structure boundary (give or take a few bytes), else anywhere.
    :return: what was done
    """
    if rng.random() < 0.6 and lay.boundaries:
        cut = rng.choice(sorted(lay.boundaries)) + rng.choice([0, 0, 0, -1, 1, -8, 8, -16, 12])
    else:
        cut = rng.randrange(len(d) + 1)
    cut = max(0, min(cut, len(d)))
    del d[cut:]
    return f"truncate at {cut:#x}"


def m_extend(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Append zeros, random bytes or a copy of part of the input. :return: what was done"""
    n = rng.choice([1, 16, 4096, 8192, 65536])
    kind = rng.choice(["zero", "random", "copy"])
    if kind == "copy" and d:
        p = rng.randrange(len(d))
        ext = bytes(d[p:p + n])
    else:
        ext = bytes(n) if kind == "zero" else rng.randbytes(n)
    d += ext
    return f"append {len(ext)} {kind} bytes"


def m_insert_delete(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Insert or delete bytes, mostly at a structure boundary. :return: what was done"""
    p = rng.choice(sorted(lay.boundaries)) if lay.boundaries and rng.random() < 0.7 else \
        rng.randrange(len(d) + 1)
    p = max(0, min(p, len(d)))
    n = rng.choice([1, 4, 8, 16, 24, 512, 4096])
    if rng.random() < 0.5:
        d[p:p] = bytes(n) if rng.random() < 0.5 else rng.randbytes(n)
        return f"insert {n} at {p:#x}"
    del d[p:p + n]
    return f"delete {n} at {p:#x}"


def m_copy(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Copy a chunk of the file over another place (duplicate descriptors, phdrs, records)."""
    if len(d) < 32:
        return m_flip(d, lay, rng)
    n = rng.choice([8, 16, 24, 56, 64, 4096])
    a = _pos(d, lay, rng)
    b = _pos(d, lay, rng)
    chunk = bytes(d[a:a + n])
    d[b:b + len(chunk)] = chunk
    return f"copy {a:#x}+{n} to {b:#x}"


def _fields_named(lay: Layout, suffix: str) -> list[Field]:
    return [f for f in lay.fields if f.name.endswith(suffix)]


def m_geometry(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Set related fields together, so that a huge size survives the plausibility checks."""
    huge = rng.choice([1 << 16, 1 << 20, 1 << 24, 1 << 31, (1 << 32) - 1, 1 << 40, 1 << 52,
                       (1 << 63) - 1, (1 << 64) - 1])
    if lay.fmt == "kdump":
        bs = lay.page_size
        what = rng.choice(["bitmap", "mapnr64", "sub_hdr", "block_size"])
        if what == "bitmap":
            blocks = rng.choice([1 << 12, 1 << 16, 1 << 20, (1 << 31) - 1, (1 << 32) - 2])
            mapnr = blocks * bs * 4
            for f in _fields_named(lay, ".bitmap_blocks"):
                f.write(d, blocks)
            for f in _fields_named(lay, ".max_mapnr"):
                f.write(d, min(mapnr, (1 << 32) - 1))
            for f in _fields_named(lay, ".max_mapnr_64"):
                f.write(d, mapnr)
            return f"geometry bitmap_blocks={blocks:#x}, max_mapnr={mapnr:#x}"
        if what == "mapnr64":
            for f in _fields_named(lay, ".max_mapnr_64"):
                f.write(d, huge)
            return f"geometry max_mapnr_64={huge:#x}"
        if what == "sub_hdr":
            v = rng.choice([1 << 16, (1 << 31) - 1, 1 << 20])
            for f in _fields_named(lay, ".sub_hdr_size"):
                f.write(d, v)
            return f"geometry sub_hdr_size={v:#x}"
        k = rng.choice([2, 4, 64])
        for f in _fields_named(lay, ".block_size"):
            f.write(d, bs * k)
        return f"geometry block_size={bs * k:#x}"
    if lay.fmt == "elf":
        loads = [f for f in lay.fields if f.name.startswith("phdr[") and f.name.endswith(".p_memsz")]
        if not loads:
            return m_field(d, lay, rng)
        mem = rng.choice(loads)
        k = mem.name.split(".")[0]
        named = {f.name.rsplit(".", 1)[-1]: f for f in lay.fields if f.name.startswith(k + ".")}
        what = rng.choice(["memsz", "filesz", "wrap", "top"])
        if what == "memsz":
            named["p_memsz"].write(d, huge)
        elif what == "filesz":
            named["p_memsz"].write(d, huge)
            named["p_filesz"].write(d, huge)
        elif what == "wrap":
            named["p_paddr"].write(d, (1 << (8 * named["p_paddr"].size)) - lay.page_size)
            named["p_memsz"].write(d, 4 * lay.page_size)
        else:
            named["p_paddr"].write(d, huge)
        return f"geometry {k} {what} {huge:#x}"
    if lay.fmt == "flat":
        recs = [f for f in lay.fields if f.name.startswith("record[") and f.name.endswith(".offset")]
        if recs:
            f = rng.choice(recs)
            f.write(d, huge & ((1 << 63) - 1))
            return f"geometry {f.name}={huge & ((1 << 63) - 1):#x}"
    return m_field(d, lay, rng)


HAVOC = (m_flip, m_byte, m_run, m_zero_block, m_truncate, m_extend, m_insert_delete, m_copy)


def _bitmap_pattern(n: int, rng: random.Random) -> tuple[bytes, str]:
    """``n`` bitmap bytes in a pattern that cuts memory into many runs (or none)."""
    kind = rng.choice(["alternate", "alternate", "random", "sparse", "runs", "full"])
    if kind == "alternate":
        byte = rng.choice([0x55, 0xAA, 0x33, 0x0F, 0x01])
        return bytes([byte]) * n, f"every byte {byte:#04x}"
    if kind == "random":
        return rng.randbytes(n), "random bits"
    if kind == "sparse":
        step = rng.choice([8, 64, 512])
        out = bytearray(n)
        out[::step] = b"\x01" * len(out[::step])
        return bytes(out), f"one bit every {step} bytes"
    if kind == "runs":
        out = bytearray()
        while len(out) < n:
            out += bytes([rng.choice([0, 0xFF])]) * rng.choice([1, 2, 32, 33, 4096])
        return bytes(out[:n]), "runs of 0x00/0xff bytes"
    return b"\xff" * n, "all ones"


def m_scale(d: bytearray, lay: Layout, rng: random.Random) -> str:
    """Structures with huge counts that stay inside the input: a whole bitmap rewritten so that
    memory falls into hundreds of thousands of runs, or a program header table of tens of
    thousands of PT_LOADs (alternating, overlapping, reversed), to check that time and memory
    follow the input's size with a small factor (the mutations above change a few bytes)."""
    if lay.fmt == "kdump" and "bitmap1" in lay.regions:
        a, b = lay.regions["bitmap1"]
        b = min(b, len(d))
        if b <= a:
            return m_field(d, lay, rng)
        pattern, what = _bitmap_pattern(b - a, rng)
        d[a:b] = pattern
        for f in _fields_named(lay, ".max_mapnr"):
            f.write(d, min((b - a) * 8, (1 << 32) - 1))
        for f in _fields_named(lay, ".max_mapnr_64"):
            f.write(d, (b - a) * 8)
        a2, b2 = lay.regions.get("bitmap2", (0, 0))
        b2 = min(b2, len(d))
        second = rng.choice(["kept", "same", "zero", "pattern"])
        if b2 > a2 and second != "kept":
            n = min(b2 - a2, b - a)
            fill = {"same": pattern[:n], "zero": bytes(n),
                    "pattern": _bitmap_pattern(n, rng)[0]}[second]
            d[a2:a2 + n] = fill
        return f"scale bitmap1 {what} ({(b - a) * 8} pfns), bitmap2 {second}"
    if lay.fmt == "elf" and "phdrs" in lay.regions:
        e = lay.endian
        elf_class = d[4] if len(d) > 4 and d[4] in (1, 2) else 2
        s = elf_structs(elf_class, e)
        eh = parse_field(s.Ehdr, d, 0)
        if eh is None:
            return m_field(d, lay, rng)
        phsz, ps = s.Phdr.sizeof(), lay.page_size
        notes = [bytes(d[p:p + phsz]) for p in range(*lay.regions["phdrs"], phsz)
                 if (ph := parse_field(s.Phdr, d, p)) is not None and ph.p_type == PT_NOTE]
        room = max(0, (MAX_INPUT - len(d)) // phsz - len(notes) - 1)
        n = min(rng.choice([1000, 10000, 30000, 65000]), room, 0xFFFE - len(notes))
        if n <= 0:
            return m_field(d, lay, rng)
        shape = rng.choice(["alternate", "adjacent", "overlap", "reversed", "huge"])
        data_at = max(0, min(len(d) - ps, lay.regions["phdrs"][1]))  # any page of the file
        rows = []
        for k in range(n):
            pfn = {"alternate": 2 * k, "adjacent": k, "overlap": 0, "reversed": 2 * (n - k),
                   "huge": k << 20}[shape]
            memsz = ps << 19 if shape == "huge" else ps
            filesz = ps if rng.random() < 0.5 else 0
            width = (1 << (32 * elf_class)) - 1
            rows.append(s.Phdr.build({"p_type": PT_LOAD, "p_flags": 7, "p_offset": data_at if filesz else 0,
                                      "p_vaddr": 0, "p_paddr": (pfn * ps) & width, "p_filesz": filesz,
                                      "p_memsz": memsz & width, "p_align": 0}))
        phoff = (len(d) + 7) // 8 * 8
        d += bytes(phoff - len(d)) + b"".join(notes) + b"".join(rows)
        for f in _fields_named(lay, "ehdr.e_phoff"):
            f.write(d, phoff)
        for f in _fields_named(lay, "ehdr.e_phnum"):
            f.write(d, len(notes) + n)
        return f"scale {n} PT_LOADs ({shape}, shared data page) after {len(notes)} PT_NOTE"
    return m_field(d, lay, rng)


# ============================================================================================
# the generator
# ============================================================================================

STRATEGIES = (("structured", 36), ("geometry", 6), ("vmcoreinfo", 8), ("havoc", 22),
              ("boundary", 10), ("flat", 8), ("mixed", 10))


#: Opt-in strategies (``campaign.py --strategies``): not in STRATEGIES, so that adding them
#: leaves every input of the campaigns already run the same.
EXTRA_STRATEGIES = {"scale": 1}


class Generator:
    """Makes fuzz inputs from seeds; input ``i`` of seed ``s`` is always the same."""

    def __init__(self, seeds: list[Seed], strategies: tuple[tuple[str, int], ...] = STRATEGIES) -> None:
        if not seeds:
            raise ValueError("no seeds")
        self.seeds = seeds
        self._layouts: dict[str, Layout] = {}
        self._names = [n for n, _ in strategies]
        self._weights = [w for _, w in strategies]
        self._seed_weights = [s.weight for s in seeds]

    def layout(self, seed: Seed) -> Layout:
        """The structure map of ``seed`` (made once per seed)."""
        lay = self._layouts.get(seed.name)
        if lay is None:
            lay = self._layouts[seed.name] = describe(seed.data)
        return lay

    def generate(self, seed_value: int | str, index: int) -> tuple[bytes, str]:
        """Input ``index`` of the campaign seeded with ``seed_value``: ``(bytes, description)``."""
        rng = random.Random(f"{seed_value}:{index}")
        seed = rng.choices(self.seeds, self._seed_weights)[0]
        strategy = rng.choices(self._names, self._weights)[0]
        d = bytearray(seed.data)
        lay = self.layout(seed)
        steps: list[str] = []
        if strategy == "structured":
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                steps.append(m_field(d, lay, rng))
        elif strategy == "vmcoreinfo":
            if seed.rebuild is not None and seed.vmcoreinfo is not None and rng.random() < 0.6:
                text, what = mutate_vmcoreinfo_text(seed.vmcoreinfo, rng)
                try:
                    d = bytearray(seed.rebuild(text))
                    steps.append(f"rebuilt with {what}")
                except Exception as exc:  # noqa: BLE001 - the builder refused the text
                    steps.append(f"rebuild failed ({type(exc).__name__}); {m_vmcoreinfo(d, lay, rng)}")
            else:
                steps.append(m_vmcoreinfo(d, lay, rng))
        elif strategy == "havoc":
            for _ in range(rng.choice([1, 1, 2, 3, 5])):
                steps.append(rng.choice(HAVOC)(d, lay, rng))
        elif strategy == "boundary":
            op = rng.choice([m_truncate, m_truncate, m_insert_delete, m_zero_block])
            steps.append(op(d, lay, rng))
        elif strategy == "flat":
            d, what = self._flat(seed, d, lay, rng)
            steps.append(what)
        elif strategy == "scale":
            steps.append(m_scale(d, lay, rng))
        elif strategy == "geometry":
            steps.append(m_geometry(d, lay, rng))
            if rng.random() < 0.3:
                steps.append(m_truncate(d, lay, rng))
        else:  # mixed: two or three of field, geometry, VMCOREINFO, splice, havoc
            for _ in range(rng.choice([2, 2, 3])):
                op = rng.choice(["field", "field", "geometry", "vmcoreinfo", "splice", "havoc"])
                if op == "splice":
                    other = rng.choice(self.seeds)
                    a = rng.randrange(len(other.data))
                    n = rng.choice([16, 64, 4096])
                    p = _pos(d, lay, rng) if d else 0
                    d[p:p + n] = other.data[a:a + n]
                    steps.append(f"splice {other.name}[{a:#x}+{n}] at {p:#x}")
                else:
                    fn = {"field": m_field, "geometry": m_geometry, "vmcoreinfo": m_vmcoreinfo,
                          "havoc": rng.choice(HAVOC)}[op]
                    steps.append(fn(d, lay, rng))
        if len(d) > MAX_INPUT:
            del d[MAX_INPUT:]
            steps.append(f"capped at {MAX_INPUT}")
        return bytes(d), f"{seed.name} | {strategy}: " + "; ".join(steps)

    def _flat(self, seed: Seed, d: bytearray, lay: Layout,
              rng: random.Random) -> tuple[bytearray, str]:
        """Mutate the image inside a flattened file, or flatten a mutated image."""
        if seed.fmt == "flat":
            if rng.random() < 0.5:
                return d, m_field(d, lay, rng)
            try:
                inner = bytearray(B.unflatten(bytes(d)))
            except ValueError:
                return d, m_flip(d, lay, rng)
        else:
            inner = d
        ilay = describe(inner)
        what = rng.choice([m_field, m_field, m_flip, m_truncate, m_zero_block])(inner, ilay, rng)
        rs = rng.choice([100, 512, 4096, 65536, 1 << 20])
        shuffle = random.Random(rng.random()) if rng.random() < 0.4 else None
        dup = rng.random() < 0.2
        end = rng.random() < 0.95
        out = bytearray(B.flatten(bytes(inner), record_size=rs, shuffle=shuffle,
                                  duplicate_overlaps=dup, end_marker=end))
        return out, (f"inner {what}; flatten(record_size={rs}, shuffle={shuffle is not None}, "
                     f"overlaps={dup}, end_marker={end})")
