"""dmesg: the kernel log held in a dump, printed as ``makedumpfile --dump-dmesg`` prints it.

Spec: makedumpfile 1.7.2 (commit 9fefc68) ``printk.c`` ``dump_lockless_dmesg`` /
``dump_record`` and ``makedumpfile.c`` ``dump_dmesg`` / ``dump_log_entry``; the kernel's
``kernel/printk/printk_ringbuffer.[ch]`` and ``kernel/printk/printk.c``.

Three log layouts exist; which one a dump holds is decided by VMCOREINFO keys, as
makedumpfile decides it:

``lockless`` (``SYMBOL(prb)``, Linux 5.10+, kernel commit 896fbe20b4e2)
    ``struct printk_ringbuffer``: a descriptor ring (``prb_desc`` state + text block
    positions, ``printk_info`` seq / ts_nsec / text_len / facility / level / caller_id)
    and a text data ring whose blocks start with the descriptor id.
``printk_log`` (``SYMBOL(log_first_idx)``, no ``SYMBOL(log_end)``, Linux 3.5 - 5.9)
    variable-length ``struct printk_log`` records in ``log_buf``, walked from
    ``log_first_idx`` to ``log_next_idx``; a record of ``len == 0`` marks the wrap.
``plain`` (``SYMBOL(log_end)``, before Linux 3.5)
    ``log_buf`` is the text itself, a ring of ``log_buf_len`` bytes ending at ``log_end``;
    it is printed unchanged.

Record output (lockless and printk_log) is ``"[%5lld.%06ld] "`` (seconds, microseconds)
followed by the text, where a newline inside the text becomes a newline plus as many
spaces as the prefix is wide, bytes that C's ``isprint``/``isspace`` accept (C locale) are
copied, and every other byte is written ``\\x%02x`` of the C ``char`` — which is signed in
the x86_64 build of makedumpfile, so a byte ``0xc3`` prints as ``\\xffffffc3`` (pass
``signed_char=False`` to mimic a build where ``char`` is unsigned, e.g. aarch64).
makedumpfile 1.7.2 prints no caller id; ``caller=True`` adds the ``"[%8s] "`` caller field
(``T<pid>`` or ``C<cpu>``) of later makedumpfile (commit 48bb1e0) when VMCOREINFO has
``OFFSET(printk_info.caller_id)`` / ``OFFSET(printk_log.caller_id)``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdumptool.errors import DmesgError, KdumpToolError
from kdumptool.vmcoreinfo import VmcoreInfo

#: ``read(reader, vaddr, size) -> bytes``, the signature of :func:`kdumptool.vtop.read_virtual`.
ReadFn = Callable[[Any, int, int], bytes]

#: ``prb_desc`` state values (``enum desc_state``, kernel/printk/printk_ringbuffer.c).
DESC_COMMITTED = 0x1
DESC_FINALIZED = 0x2

#: Width of the caller id field of makedumpfile after 1.7.2 (``PID_CHARS_DEFAULT``).
PID_CHARS_DEFAULT = 8
_CALLER_CPU = 0x80000000
#: Largest printk ring accepted (CONFIG_LOG_BUF_SHIFT is at most 25; log_buf_len= up to 2 GiB).
MAX_RING_BITS = 31


@dataclass
class LogRecord:
    """One record of the kernel log (lockless or printk_log layout)."""

    seq: int | None
    ts_nsec: int
    level: int | None
    facility: int | None
    caller_id: int | None
    text: bytes

    def as_dict(self) -> dict[str, Any]:
        """The record for JSON: ``text`` decoded as UTF-8 (undecodable bytes replaced)."""
        return {
            "seq": self.seq,
            "ts_nsec": self.ts_nsec,
            "level": self.level,
            "facility": self.facility,
            "caller_id": self.caller_id,
            "text": self.text.decode("utf-8", errors="replace"),
        }


@dataclass
class KernelLog:
    """What :func:`read_log` found: the layout and either records or the plain text."""

    layout: str  # "lockless", "printk_log" or "plain"
    records: list[LogRecord]
    plain: bytes = b""
    #: set when the printk_log chain is corrupt: the records before the problem are kept
    error: str | None = None


def log_layout(vmcoreinfo: VmcoreInfo) -> str:
    """The log layout the kernel of this VMCOREINFO uses.

    :return: ``"lockless"``, ``"printk_log"`` or ``"plain"``
    :raises KdumpToolError: VMCOREINFO describes no kernel log
    """
    if vmcoreinfo.has("SYMBOL(prb)"):
        return "lockless"
    if not (vmcoreinfo.has("SYMBOL(log_buf)") and vmcoreinfo.has("SYMBOL(log_buf_len)")):
        raise KdumpToolError("VMCOREINFO has no SYMBOL(prb) nor SYMBOL(log_buf)/log_buf_len")
    if vmcoreinfo.has("SYMBOL(log_end)"):
        return "plain"
    if not (vmcoreinfo.has("SYMBOL(log_first_idx)") and vmcoreinfo.has("SYMBOL(log_next_idx)")):
        raise KdumpToolError("VMCOREINFO has no SYMBOL(log_first_idx)/log_next_idx")
    return "printk_log"


# --------------------------------------------------------------------------------------------
# reading


class _Mem:
    """Typed reads of kernel virtual memory and of byte strings, in the dump's byte order."""

    def __init__(self, reader: Any, read: ReadFn | None) -> None:
        info = reader.info
        vmci = getattr(info, "vmcoreinfo", None)
        if vmci is None:
            raise KdumpToolError(f"{getattr(info, 'path', '?')}: the dump has no VMCOREINFO")
        if read is None:
            from kdumptool.vtop import read_virtual

            read = read_virtual
        self.reader = reader
        self.vi: VmcoreInfo = vmci
        self.path: str | None = getattr(info, "path", None)
        self.endian: str = getattr(info, "endian", "<") or "<"
        self.word: int = getattr(info, "word_size", 8) or 8
        self._read = read

    def read(self, vaddr: int, size: int) -> bytes:
        data = self._read(self.reader, vaddr, size)
        if len(data) != size:
            raise KdumpToolError(f"read {len(data)} bytes at {vaddr:#x}, wanted {size}")
        return data

    def uint(self, buf: bytes, off: int, size: int) -> int:
        if off < 0 or off + size > len(buf):
            raise IndexError(off)
        return int.from_bytes(buf[off : off + size], "little" if self.endian == "<" else "big")

    def ulong(self, buf: bytes, off: int) -> int:
        return self.uint(buf, off, self.word)

    def read_uint(self, vaddr: int, size: int) -> int:
        return self.uint(self.read(vaddr, size), 0, size)

    def level_bits(self, byte: int) -> int:
        """``level:3`` of the byte holding ``u8 flags:5, level:3`` (bit fields are laid out
        from the low bit on little-endian ABIs, from the high bit on big-endian ones)."""
        return byte >> 5 if self.endian == "<" else byte & 7

    def opt_offset(self, name: str) -> int | None:
        return self.vi.offset(name) if self.vi.has(f"OFFSET({name})") else None


def read_log(reader: Any, read: ReadFn | None = None, *, partial: bool = False) -> KernelLog:
    """The kernel log of the dump, as the records (or plain text) makedumpfile would print.

    :param reader: an open dump (anything with ``info.vmcoreinfo``; ``info.endian`` and
        ``info.word_size`` default to ``"<"`` and 8)
    :param read: ``read(reader, vaddr, size) -> bytes``; default
        :func:`kdumptool.vtop.read_virtual`
    :param partial: only the records since the last ``dmesg -c`` (makedumpfile
        ``--partial-dmesg``: ``clear_seq`` / ``clear_idx``)
    :raises KdumpToolError: no VMCOREINFO, missing keys, or memory that cannot be read
    """
    mem = _Mem(reader, read)
    layout = log_layout(mem.vi)
    if layout == "lockless":
        try:
            return KernelLog(layout, _lockless(mem, partial))
        except IndexError:
            raise DmesgError("printk_ringbuffer member outside its structure "
                             "(VMCOREINFO offsets and sizes disagree)", path=mem.path) from None
    if layout == "plain":
        return KernelLog(layout, [], plain=_plain(mem))
    records, error = _printk_log(mem, partial)
    return KernelLog(layout, records, error=error)


def _lockless(mem: _Mem, partial: bool) -> list[LogRecord]:
    """``dump_lockless_dmesg`` of makedumpfile's printk.c."""
    vi = mem.vi
    o = vi.offset
    counter = mem.opt_offset("atomic_long_t.counter") or 0
    prb_addr = mem.read_uint(vi.symbol("prb"), mem.word)
    prb = mem.read(prb_addr, vi.size("printk_ringbuffer"))

    dr = o("printk_ringbuffer.desc_ring")
    tr = o("printk_ringbuffer.text_data_ring")
    count_bits = mem.uint(prb, dr + o("prb_desc_ring.count_bits"), 4)
    size_bits = mem.uint(prb, tr + o("prb_data_ring.size_bits"), 4)
    if count_bits > MAX_RING_BITS or size_bits > MAX_RING_BITS:
        raise DmesgError(f"printk ring of 2**{max(count_bits, size_bits)} entries or bytes "
                         f"(at most 2**{MAX_RING_BITS})", path=mem.path)
    count = 1 << count_bits
    desc_size = vi.size("prb_desc")
    info_size = vi.size("printk_info")
    descs = mem.read(mem.ulong(prb, dr + o("prb_desc_ring.descs")), desc_size * count)
    infos = mem.read(mem.ulong(prb, dr + o("prb_desc_ring.infos")), info_size * count)

    ring_size = 1 << size_bits
    text_data = mem.read(mem.ulong(prb, tr + o("prb_data_ring.data")), ring_size)

    bits = mem.word * 8
    id_mask = (1 << (bits - 2)) - 1
    tail_id = mem.ulong(prb, dr + o("prb_desc_ring.tail_id") + counter)
    head_id = mem.ulong(prb, dr + o("prb_desc_ring.head_id") + counter)
    if partial and vi.has("SYMBOL(clear_seq)"):
        clear_seq = mem.read_uint(vi.symbol("clear_seq"), 8)
        if vi.has("SIZE(latched_seq)"):  # Linux 5.13+: struct latched_seq {seqcount; val[2]}
            addr = vi.symbol("clear_seq") + o("latched_seq.val") + (clear_seq & 1) * 8
            clear_seq = mem.read_uint(addr, 8)
        tail_id = head_id - head_id % count + clear_seq % count

    state_off = o("prb_desc.state_var") + counter
    lpos = o("prb_desc.text_blk_lpos")
    begin_off = lpos + o("prb_data_blk_lpos.begin")
    next_off = lpos + o("prb_data_blk_lpos.next")
    seq_off = mem.opt_offset("printk_info.seq")
    ts_off = o("printk_info.ts_nsec")
    len_off = o("printk_info.text_len")
    caller_off = mem.opt_offset("printk_info.caller_id")
    ulong_mask = (1 << bits) - 1

    records: list[LogRecord] = []

    def one(rid: int) -> None:
        desc = (rid % count) * desc_size
        sv = mem.ulong(descs, desc + state_off)
        if rid != sv & id_mask or (sv >> (bits - 2)) & 3 not in (DESC_COMMITTED, DESC_FINALIZED):
            return  # not committed (or the id was reused)
        begin = mem.ulong(descs, desc + begin_off) % ring_size
        nxt = mem.ulong(descs, desc + next_off) % ring_size
        if begin == nxt:
            return  # a data-less block
        inf = (rid % count) * info_size
        text_len = mem.uint(infos, inf + len_off, 2)
        if begin > nxt:
            begin = 0  # the block wrapped: its data is at the start of the ring
        begin += mem.word  # skip the descriptor id that opens the block
        text_len = min(text_len, (nxt - begin) & ulong_mask)
        records.append(
            LogRecord(
                seq=mem.uint(infos, inf + seq_off, 8) if seq_off is not None else None,
                ts_nsec=mem.uint(infos, inf + ts_off, 8),
                level=mem.level_bits(infos[inf + len_off + 3]),
                facility=infos[inf + len_off + 2],
                caller_id=mem.uint(infos, inf + caller_off, 4) if caller_off is not None else None,
                text=text_data[begin : begin + text_len],
            )
        )

    rid = tail_id
    while rid != head_id:
        one(rid)
        rid = (rid + 1) & id_mask
    one(rid)  # makedumpfile prints the head record too
    return records


def _printk_log(mem: _Mem, partial: bool) -> tuple[list[LogRecord], str | None]:
    """The printk_log walk of makedumpfile's ``dump_dmesg``: records from ``log_first_idx``
    (``clear_idx`` when partial) up to ``log_next_idx``; a cycle or an index outside the
    buffer ends the walk with an error, after the records read so far."""
    vi = mem.vi
    first_sym = vi.symbol("log_first_idx")
    if partial and vi.has("SYMBOL(clear_idx)"):
        first_sym = vi.symbol("clear_idx")
    first_idx = mem.read_uint(first_sym, 4)
    next_idx = mem.read_uint(vi.symbol("log_next_idx"), 4)
    log_buf = mem.read_uint(vi.symbol("log_buf"), mem.word)
    buf_len = struct.unpack(mem.endian + "i", mem.read(vi.symbol("log_buf_len"), 4))[0]
    for key in ("SIZE(printk_log)", "OFFSET(printk_log.len)", "OFFSET(printk_log.text_len)",
                "OFFSET(printk_log.ts_nsec)"):
        if not vi.has(key):
            raise KdumpToolError(f"VMCOREINFO has no {key}, needed to read the kernel log")
    if buf_len <= 0:
        raise DmesgError(f"log_buf_len is {buf_len}", path=mem.path)
    buf = mem.read(log_buf, buf_len)
    rec_size = vi.size("printk_log")
    len_off = vi.offset("printk_log.len")
    text_len_off = vi.offset("printk_log.text_len")
    ts_off = vi.offset("printk_log.ts_nsec")
    caller_off = mem.opt_offset("printk_log.caller_id")
    # u16 dict_len; u8 facility; u8 flags:5, level:3 follow text_len (kernel 3.5+)
    fac_off = text_len_off + 4 if text_len_off + 6 <= rec_size else None

    def msglen(ptr: int) -> int:
        return mem.uint(buf, ptr + len_off, 2)

    records: list[LogRecord] = []
    seen: set[int] = set()
    ptr = first_idx
    try:
        while ptr != next_idx:
            seen.add(ptr)
            rec = ptr if msglen(ptr) else 0  # len 0 marks the wrap: the record is at 0
            text_len = mem.uint(buf, rec + text_len_off, 2)
            text = buf[rec + rec_size : rec + rec_size + text_len]
            records.append(
                LogRecord(
                    seq=None,
                    ts_nsec=mem.uint(buf, rec + ts_off, 8),
                    level=mem.level_bits(buf[rec + fac_off + 1]) if fac_off is not None else None,
                    facility=buf[rec + fac_off] if fac_off is not None else None,
                    caller_id=mem.uint(buf, rec + caller_off, 4) if caller_off is not None else None,
                    text=text,
                )
            )
            ptr = ptr + msglen(ptr) if msglen(ptr) else msglen(0)
            if ptr in seen:
                return records, f"cycle in the printk log_buf at index {ptr:#x}"
            if ptr < 0 or ptr > buf_len - rec_size:
                return records, f"index {ptr:#x} outside the printk log_buf"
    except IndexError:
        return records, f"record at index {ptr:#x} outside the printk log_buf"
    return records, None


_KVER = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def _plain(mem: _Mem) -> bytes:
    """The plain ``log_buf`` ring of kernels before 3.5, oldest byte first."""
    vi = mem.vi
    # log_end: "unsigned long" up to 2.6.24, "unsigned" from 2.6.25 (makedumpfile dump_dmesg)
    end_size = 4
    m = _KVER.match(vi.osrelease or "")
    if m and (int(m[1]), int(m[2]), int(m[3] or 0)) < (2, 6, 25):
        end_size = mem.word
    log_end = mem.read_uint(vi.symbol("log_end"), end_size)
    log_buf = mem.read_uint(vi.symbol("log_buf"), mem.word)
    buf_len = struct.unpack(mem.endian + "i", mem.read(vi.symbol("log_buf_len"), 4))[0]
    if buf_len <= 0:
        raise DmesgError(f"log_buf_len is {buf_len}", path=mem.path)
    if log_end < buf_len:
        return mem.read(log_buf, log_end)
    index = log_end & (buf_len - 1)
    return mem.read(log_buf + index, buf_len - index) + mem.read(log_buf, index)


# --------------------------------------------------------------------------------------------
# formatting


def _escape_table(signed_char: bool) -> list[bytes]:
    table = []
    for b in range(256):
        if 0x20 <= b <= 0x7E or 0x09 <= b <= 0x0D:  # isprint() || isspace(), C locale
            table.append(bytes([b]))
        else:
            value = b | 0xFFFFFF00 if signed_char and b >= 0x80 else b
            table.append(b"\\x%02x" % value)
    return table


_ESCAPES = {True: _escape_table(True), False: _escape_table(False)}


def format_record(rec: LogRecord, *, caller: bool = False, signed_char: bool = True) -> bytes:
    """One record as makedumpfile's ``dump_record`` / ``dump_log_entry`` writes it.

    :param caller: add the ``[%8s] `` caller id field (makedumpfile after 1.7.2)
    :param signed_char: escape bytes >= 0x80 as the sign-extended C ``char`` (x86_64 build)
    """
    secs, nsec = divmod(rec.ts_nsec, 1_000_000_000)
    prefix = b"[%5d.%06d] " % (secs, nsec // 1000)
    if caller and rec.caller_id is not None:
        cid = rec.caller_id
        name = b"%c%d" % (b"C" if cid & _CALLER_CPU else b"T", cid & ~_CALLER_CPU)
        prefix += b"[%*s] " % (PID_CHARS_DEFAULT, name)
    table = _ESCAPES[signed_char]
    table_nl = b"\n" + b" " * len(prefix)
    out = [prefix]
    for line_no, line in enumerate(rec.text.split(b"\n")):
        if line_no:
            out.append(table_nl)
        if line.isascii() and all(0x20 <= b <= 0x7E or 0x09 <= b <= 0x0D for b in line):
            out.append(line)
        else:
            out.extend(table[b] for b in line)
    out.append(b"\n")
    return b"".join(out)


def dmesg_text(
    reader: Any,
    read: ReadFn | None = None,
    *,
    partial: bool = False,
    caller: bool = False,
    signed_char: bool = True,
) -> bytes:
    """The kernel log of the dump, byte for byte as ``makedumpfile --dump-dmesg`` (1.7.2)
    writes it.

    :param reader: an open dump (:func:`kdumptool.open.open_dumps`)
    :param read: ``read(reader, vaddr, size) -> bytes``; default
        :func:`kdumptool.vtop.read_virtual`
    :param partial: ``--partial-dmesg``: only what was logged since the last ``dmesg -c``
    :param caller: add the caller id field of makedumpfile after 1.7.2
    :param signed_char: see :func:`format_record`
    :return: the text (for pre-3.5 kernels: the ``log_buf`` bytes unchanged)
    :raises DmesgError: a corrupt printk_log chain; ``partial`` holds the text before it
    :raises KdumpToolError: no VMCOREINFO, missing keys, or unreadable memory
    """
    log = read_log(reader, read, partial=partial)
    if log.layout == "plain":
        return log.plain
    text = b"".join(
        format_record(r, caller=caller, signed_char=signed_char) for r in log.records
    )
    if log.error is not None:
        raise DmesgError(log.error, path=getattr(reader.info, "path", None), partial=text)
    return text


def dmesg_records(reader: Any, read: ReadFn | None = None, *, partial: bool = False) -> list[dict]:
    """The records of the kernel log, for ``--json``.

    Each is ``{"seq", "ts_nsec", "level", "facility", "caller_id", "text"}`` (``seq`` is
    None for printk_log kernels, which do not store it; ``caller_id`` is None when the
    kernel does not record it; ``text`` is decoded as UTF-8 with replacement).  A pre-3.5
    plain log gives one record per line, with the ``<N>`` prefix (facility * 8 + level)
    decoded when present and ``ts_nsec`` None.

    :raises DmesgError: a corrupt printk_log chain
    :raises KdumpToolError: as :func:`dmesg_text`
    """
    log = read_log(reader, read, partial=partial)
    if log.error is not None:
        raise DmesgError(log.error, path=getattr(reader.info, "path", None))
    if log.layout != "plain":
        return [r.as_dict() for r in log.records]
    out: list[dict] = []
    for line in log.plain.split(b"\n"):
        if not line:
            continue
        level = facility = None
        m = re.match(rb"<(\d{1,4})>", line)
        if m:
            prio = int(m[1])
            level, facility = prio & 7, prio >> 3
            line = line[m.end() :]
        out.append(
            {
                "seq": None,
                "ts_nsec": None,
                "level": level,
                "facility": facility,
                "caller_id": None,
                "text": line.decode("utf-8", errors="replace"),
            }
        )
    return out
