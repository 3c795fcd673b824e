"""Matching page descriptors to their pages when part of a kdump file's 2nd bitmap was zeroed.

Spec: SPEC.md §8 ("Checking and repairing", the 2nd bitmap). The page descriptors are in PFN
order and the page data starts right after the table, so the table's real length is known;
the 2nd bitmap declares fewer pages when some of its bytes were zeroed. The 1st bitmap (RAM)
is intact, and the damage is one zeroed span, so:

* the lost bits lie in one run of zero bytes of the 2nd bitmap that holds at least that many
  RAM pages (a *candidate run*); before the first candidate run every descriptor is its
  page's by rank, after the last one by rank plus the number lost;
* in between (the *uncertain range*: one run, or several and the pages between them), the
  descriptors go in order to the pages the 2nd bitmap declares (all of them) and to some of
  the RAM pages of the candidate runs. A descriptor is matched when every such assignment
  gives it the same page: when a stretch has as many descriptors as possible pages, or
  where page data proves it;
* the proof: an empty ``struct list_head`` points at itself (Linux ``INIT_LIST_HEAD``,
  ``include/linux/list.h``), so a page holding one names its own virtual address, and the
  linear maps of the kernel (direct map, kernel image, ...) turn that into its PFN. Their
  offsets are learned from pages matched for sure (and the kernel image's from VMCOREINFO);
  once the pages of the kernel's page tables are matched, they translate the other addresses;
* once the ``struct page`` array is readable too, the dump level's rules
  (:mod:`kdumptool.filters`) rule out the free, cache and user pages among the places, if
  they agree with every page the dump declares. Each step may match more: they repeat.

Whatever stays ambiguous is reported: descriptors not matched, the PFN ranges their pages
are among, and the declared pages whose descriptor cannot be told (read as lost).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from kdumptool.codecs import CODEC_FLAG_MASK
from kdumptool.errors import KdumpToolError
from kdumptool.filters.exclusion import PageClassExclusion, translator_for
from kdumptool.formats.kdump import PAGE_DESC_SIZE, KdumpReader, Remap
from kdumptool.repair.findings import ranges_of
from kdumptool.vtop.kernel_image import START_KERNEL_MAP_X86_64, kernel_image_to_phys

#: Pages read on each side of the uncertain range to learn the kernel's linear maps, from
#: the start of each of SAMPLE_PARTS parts of it.
SAMPLE_PAGES = 16384
SAMPLE_PARTS = 16
#: Pages that must agree on a map's offset before it is used.
MIN_MAP_PAGES = 4
#: Descriptors decoded at a time.
CHUNK = 4096
#: Most pages an uncertain range may hold (its arrays take about 40 bytes a page): 256 GiB
#: of 4 KiB pages. A larger one is refused, as before this matching existed.
MAX_PLACES = 1 << 26


@dataclass
class Rematch:
    """What :func:`rematch_bitmap2` found (and applied to the reader)."""

    missing: int  # set bits the 2nd bitmap lost
    span: tuple[int, int]  # [start, end) PFNs of the uncertain range
    offset: int  # file offset of its first 2nd-bitmap byte
    descriptors: int  # descriptors of the table that belong to it
    matched: int  # of those, matched to their page
    by_data: int  # of those, proven by page data
    lost: list[tuple[int, int]] = field(default_factory=list)  # declared pages, descriptor unknown
    ambiguous: list[tuple[int, int]] = field(default_factory=list)  # where unmatched ones may go

    @property
    def unmatched(self) -> int:
        """Descriptors of the uncertain range that could not be given a page."""
        return self.descriptors - self.matched

    def as_dict(self) -> dict[str, object]:
        """The rebuild's figures for ``fsck --json`` and ``repair --json``."""
        return {"missing_bits": self.missing, "pfn_range": list(self.span), "descriptors": self.descriptors,
                "matched": self.matched, "matched_by_page_data": self.by_data,
                "unmatched": self.unmatched, "lost_pfn_ranges": [list(r) for r in self.lost],
                "ambiguous_pfn_ranges": [list(r) for r in self.ambiguous]}


def rematch_bitmap2(r: KdumpReader) -> Rematch | None:
    """Rebuild the 2nd bitmap of ``r`` over its zeroed part and match descriptors to pages.

    On success the reader reads through the rebuilt bitmap (:class:`Remap`): matched pages
    have their data, declared pages whose descriptor cannot be told are lost, and the
    ambiguous ones are not declared.

    :return: what was found, or None when the file does not fit (not an unsplit file with two
        bitmaps, no bits lost, no run that can hold them, or page data that contradicts it)
    """
    if r.remap is not None or r.part != (0, r._max_mapnr) or not r.two_bitmaps:
        return None
    total = true_descriptor_count(r)
    if total is None or total <= r.num_descs:
        return None
    missing = total - r.num_descs
    runs = candidate_runs(r, missing)
    if not runs:
        return None
    a, b = runs[0][0] * 8, min(runs[-1][1] * 8, r._max_mapnr)
    if b - a > MAX_PLACES:
        return None
    first = r.rank(a)
    count = r.rank(b) - first + missing  # descriptors of [a, b)
    pfns, must = _places(r, a, b, runs)
    maps = _linear_maps(r, a, b, missing)
    if maps is None:
        return None  # the pages on both sides disagree: not one zeroed span
    hits = _hits(r, first, count)
    table = np.zeros(0, np.uint64), np.zeros(0, np.int64)
    plan = _plan(_pins(hits, maps, table, pfns, r._max_mapnr), pfns, must, count)
    if plan is None:
        return None
    _apply(r, (a, b), first, count, plan, total)
    for _ in range(8):  # what is matched now may show more maps, map more pages or exclude places
        excluded = _excluded_places(r, pfns, must, (a, b))
        more = sorted(set(maps) | _learned(hits, plan))
        unmatched = np.isin(hits[0], np.flatnonzero(plan.lowest != plan.highest))
        mapped = _translated(r, hits[1][unmatched])
        if not excluded.any() and more == maps and np.isin(mapped[0], table[0]).all():
            break
        pfns, must, maps = pfns[~excluded], must[~excluded], more
        table = _merge(table, mapped)
        better = _plan(_pins(hits, maps, table, pfns, r._max_mapnr), pfns, must, count)
        if better is None:
            break
        plan = better
        _apply(r, (a, b), first, count, plan, total)
    return Rematch(missing, (a, b), r.bitmap2_offset + a // 8, count, len(plan.matched), plan.by_data,
                   ranges_of(plan.lost), plan.ambiguous)


@dataclass
class _Plan:
    """Which descriptor goes to which page (``descs`` counted from the range's first)."""

    matched: np.ndarray  # PFNs
    descs: np.ndarray
    lost: np.ndarray  # declared PFNs whose descriptor cannot be told
    ambiguous: list[tuple[int, int]]
    by_data: int
    lowest: np.ndarray  # per descriptor, the lowest and the highest PFN it can have
    highest: np.ndarray


def _plan(pins: tuple[np.ndarray, np.ndarray], pfns: np.ndarray, must: np.ndarray,
          count: int) -> _Plan | None:
    """Match ``count`` descriptors to the places ``pfns`` (``must``: declared), given the pins
    ``(descriptor, PFN)``; None when the pins do not fit."""
    if not int(must.sum()) <= count <= len(pfns):
        return None
    at = np.searchsorted(pfns, pins[1])
    there = (at < len(pfns)) & (pfns[np.minimum(at, len(pfns) - 1)] == pins[1])
    kept = _consistent((pins[0][there], at[there]), must, count, dropped=int((~there).sum()))
    if kept is None:
        return None
    left, right = _bounds(kept, must, count)
    exact = left == right
    taken = np.zeros(len(pfns), dtype=bool)
    taken[left[exact]] = True
    return _Plan(pfns[left[exact]], np.flatnonzero(exact), pfns[must & ~taken],
                 _ambiguous(pfns, left, right, exact), int(np.isin(np.flatnonzero(exact), kept[0]).sum()),
                 pfns[left], pfns[right])


def _excluded_places(r: KdumpReader, pfns: np.ndarray, must: np.ndarray,
                     span: tuple[int, int]) -> np.ndarray:
    """The places the dump level excludes by their ``struct page`` (free, cache, user pages:
    makedumpfile's rules, :mod:`kdumptool.filters`), read through what is matched so far.
    None excluded when the rules exclude a page the dump holds (they are not its producer's)."""
    none = np.zeros(len(pfns), dtype=bool)
    level = r.info.dump_level or 0
    if not level & 0b11110:
        return none
    try:
        ex = PageClassExclusion(r, level)
    except KdumpToolError:
        return none
    for start, count in r.data_windows():
        _, present = r.bitmaps(start, count)
        if (present & ex.excluded(start, count)).any():
            return none
    excluded = ex.excluded(span[0], span[1] - span[0])[pfns - span[0]]
    return excluded & ~must


def true_descriptor_count(r: KdumpReader) -> int | None:
    """How many descriptors the table holds: the page data starts right after it (makedumpfile,
    QEMU), or one page later when the shared zero page comes first and no page uses it. As a
    page size is never a multiple of 24, at most one of the two is a whole table."""
    head = r._table(0, min(max(r.num_descs, 1), 4096))["offset"].astype(np.int64)
    head = head[head > 0]
    if not head.size:
        return None
    for skip in (0, r.block_size):
        n, rest = divmod(int(head.min()) - skip - r.desc_offset, PAGE_DESC_SIZE)
        if rest == 0 and n > 0 and r.desc_offset + n * PAGE_DESC_SIZE <= r.source.size:
            return n
    return None


def candidate_runs(r: KdumpReader, missing: int) -> list[tuple[int, int]]:
    """``[first byte, end byte)`` of each run of zero bytes of the 2nd bitmap that covers at
    least ``missing`` RAM pages (set bits of the 1st bitmap)."""
    out: list[tuple[int, int]] = []
    open_start, open_ram = -1, 0  # a run reaching the end of the last chunk
    nbytes = -(-r._max_mapnr // 8)
    step = r.COUNT_CHUNK // 8
    for lo in range(0, nbytes, step):
        n = min(step, nbytes - lo)
        zero = r._bitmap_bytes(2, lo, n) == 0
        sums = np.concatenate(([0], np.cumsum(np.bitwise_count(r._bitmap_bytes(1, lo, n)), dtype=np.int64)))
        if open_start >= 0 and not zero[0]:
            if open_ram >= missing:
                out.append((open_start, lo))
            open_start = -1
        edges = np.flatnonzero(np.diff(np.concatenate(([0], zero.view(np.int8), [0]))))
        for s, e in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
            start, ram = lo + s, int(sums[e] - sums[s])
            if s == 0 and open_start >= 0:  # the run goes on from the last chunk
                start, ram = open_start, open_ram + ram
            open_start = -1
            if e == n:
                open_start, open_ram = start, ram
            elif ram >= missing:
                out.append((start, lo + e))
    if open_start >= 0 and open_ram >= missing:
        out.append((open_start, nbytes))
    return out


def _places(r: KdumpReader, a: int, b: int, runs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """The PFNs of ``[a, b)`` a descriptor may belong to (declared by the 2nd bitmap, or RAM in
    a candidate run), and which of them the 2nd bitmap declares (those must get one)."""
    declared, ram = r._bits(2, a, b - a), r._bits(1, a, b - a)
    in_run = np.zeros(b - a, dtype=bool)
    for s, e in runs:
        in_run[s * 8 - a:e * 8 - a] = True
    place = declared | (ram & in_run)
    return np.flatnonzero(place) + a, declared[place]


def _pages(r: KdumpReader, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors ``[first, first + count)`` of the table whose page decodes: their indexes
    (from ``first``) and the pages."""
    descs = r._table(first, count)
    offs, sizes = descs["offset"].astype(np.int64), descs["size"].astype(np.int64)
    flags = descs["flags"].astype(np.int64)
    bits = flags & CODEC_FLAG_MASK
    ok = ((offs > 0) & (sizes > 0) & (sizes <= r.block_size) & ((flags & ~CODEC_FLAG_MASK) == 0)
          & ((bits & (bits - 1)) == 0) & ((bits != 0) | (sizes == r.block_size)))
    rows, pages = [], []
    for j in np.flatnonzero(ok).tolist():
        try:
            page = r._decode(first + j, int(offs[j]), int(sizes[j]), int(flags[j]), {})
        except KdumpToolError:  # (a strict reader)
            page = None
        if page is not None:
            rows.append(j)
            pages.append(page)
    data = np.frombuffer(b"".join(pages), dtype=np.uint8).reshape(len(pages), r.block_size)
    return np.array(rows, dtype=np.int64), data


def _self_pointers(r: KdumpReader, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empty list heads (two words, each the address of the first) in each page: the row of
    the page and that address's page number (address >> page shift), per list head."""
    word, ps = r.info.word_size, r.block_size
    dtype = np.dtype(f"{r.structs.endian}u{word}")
    w = data.view(dtype).reshape(len(data), ps // word)
    head = w[:, :-1]
    at = (np.arange(ps // word - 1) * word).astype(dtype)
    hit = (head == w[:, 1:]) & ((head & dtype.type(ps - 1)) == at) & (head >= dtype.type(ps))
    rows, cols = np.nonzero(hit)
    return rows, (head[rows, cols] >> dtype.type(ps.bit_length() - 1)).astype(np.uint64)


def _offsets(r: KdumpReader, lo: int, hi: int, shift: int) -> collections.Counter[int]:
    """How many pages give each linear-map offset (virtual page number minus PFN of an empty
    list head), among pages of ``[lo, hi)`` whose descriptor is their rank plus ``shift``:
    the first declared pages of each of :data:`SAMPLE_PARTS` parts of the range."""
    seen: collections.Counter[int] = collections.Counter()
    step = -(-(hi - lo) // SAMPLE_PARTS) if hi > lo else 1
    for start in range(lo, hi, step):
        span = min(step, hi - start, 1 << 20)
        pfns = (np.flatnonzero(r._bits(2, start, span)) + start)[:SAMPLE_PAGES // SAMPLE_PARTS]
        if not len(pfns):
            continue
        rows, data = _pages(r, r.rank(start) + shift, len(pfns))
        hit_rows, vpn = _self_pointers(r, data)
        owner = pfns[rows[hit_rows]].astype(np.uint64)
        pairs = np.unique(np.stack((hit_rows.astype(np.uint64), vpn - owner)), axis=1)
        seen.update(pairs[1].tolist())
    return seen


def _linear_maps(r: KdumpReader, a: int, b: int, missing: int) -> list[int] | None:
    """Offsets (virtual page number minus PFN) of the kernel's linear maps, learned from the
    pages matched for sure on each side of ``[a, b)``, plus the kernel image's from VMCOREINFO.
    None when the two sides have no offset in common although each has plenty: one of them is
    not where the counts put it."""
    sides = [_offsets(r, 0, a, 0), _offsets(r, b, r._max_mapnr, missing)]
    found = [{k for k, n in side.items() if n >= MIN_MAP_PAGES} for side in sides]
    if all(sum(side.values()) >= 8 * MIN_MAP_PAGES for side in sides) and not found[0] & found[1]:
        return None
    image = _image_map(r)
    return sorted(found[0] | found[1] | ({image} if image is not None else set()))


def _image_map(r: KdumpReader) -> int | None:
    """The kernel image's offset (virtual page number minus PFN), from VMCOREINFO."""
    vmci, machine = r.info.vmcoreinfo, r.info.machine
    if vmci is None:
        return None
    try:
        vaddr = START_KERNEL_MAP_X86_64 if machine == "x86_64" else vmci.symbol("_stext")
        delta = (vaddr - kernel_image_to_phys(vmci, machine, vaddr, r.info.phys_base)) % (1 << 64)
    except (KdumpToolError, KeyError, ValueError):
        return None
    return delta // r.block_size if delta % r.block_size == 0 else None


def _hits(r: KdumpReader, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The empty list heads in the pages of descriptors ``first + j``: ``(j, virtual page
    number)`` pairs, each once."""
    js: list[np.ndarray] = []
    vpns: list[np.ndarray] = []
    for lo in range(0, count, CHUNK):
        rows, data = _pages(r, first + lo, min(CHUNK, count - lo))
        hit_rows, vpn = _self_pointers(r, data)
        pairs = np.unique(np.stack(((rows[hit_rows] + lo).astype(np.uint64), vpn)), axis=1)
        js.append(pairs[0].astype(np.int64))
        vpns.append(pairs[1])
    if not js:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    return np.concatenate(js), np.concatenate(vpns)


def _pins(hits: tuple[np.ndarray, np.ndarray], maps: list[int], table: tuple[np.ndarray, np.ndarray],
          pfns: np.ndarray, max_pfn: int) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors whose page names exactly one of the places ``pfns``, through the linear maps
    or the page tables (``table``: virtual page numbers and their PFNs), a place no other
    descriptor's page names (copies of a page name the original): ``(descriptor, PFN)``."""
    offsets = np.array(maps, dtype=np.uint64)
    implied = (hits[1][:, None] - offsets[None, :]).ravel()  # (wraps around: compared below)
    owner = np.repeat(hits[0], len(offsets))
    at = np.minimum(np.searchsorted(table[0], hits[1]), max(len(table[0]) - 1, 0))
    mapped = table[0][at] == hits[1] if len(table[0]) else np.zeros(len(hits[0]), dtype=bool)
    implied = np.concatenate((implied, table[1][at[mapped]].astype(np.uint64)))
    owner = np.concatenate((owner, hits[0][mapped]))
    q = np.minimum(np.searchsorted(pfns, implied.astype(np.int64)), len(pfns) - 1)
    ok = (implied < np.uint64(max_pfn)) & (pfns[q] == implied.astype(np.int64))
    js, qs = np.unique(np.stack((owner[ok], q[ok])), axis=1)
    one_place = np.bincount(js)[js] == 1
    one_owner = np.bincount(qs, minlength=len(pfns))[qs] == 1
    keep = one_place & one_owner
    return js[keep], pfns[qs[keep]]


def _translated(r: KdumpReader, vpns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The virtual page numbers ``vpns`` the kernel's page tables map (read through what is
    matched so far), and their PFNs, sorted."""
    try:
        xlat = translator_for(r)
    except KdumpToolError:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    shift = r.block_size.bit_length() - 1
    out_v, out_p = [], []
    for vpn in np.unique(vpns).tolist():
        if not xlat.is_kernel_address(vpn << shift):
            continue
        try:
            out_p.append(xlat.translate(vpn << shift) >> shift)
        except KdumpToolError:
            continue
        out_v.append(vpn)
    return np.array(out_v, dtype=np.uint64), np.array(out_p, dtype=np.int64)


def _learned(hits: tuple[np.ndarray, np.ndarray], plan: _Plan) -> set[int]:
    """Linear-map offsets that pages matched so far show (at least MIN_MAP_PAGES of them)."""
    if not len(plan.descs):
        return set()
    at = np.searchsorted(plan.descs, hits[0])
    ok = (at < len(plan.descs)) & (plan.descs[np.minimum(at, len(plan.descs) - 1)] == hits[0])
    offsets = hits[1][ok] - plan.matched[at[ok]].astype(np.uint64)
    pairs = np.unique(np.stack((hits[0][ok].astype(np.uint64), offsets)), axis=1)
    values, pages = np.unique(pairs[1], return_counts=True)
    return set(values[pages >= MIN_MAP_PAGES].tolist())


def _consistent(pins: tuple[np.ndarray, np.ndarray], must: np.ndarray, count: int, *,
                dropped: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """The pins ``(descriptor, index of the place)`` that fit in order and in number (between
    two of them, at least as many descriptors as declared places and at most as many as
    places). None when too many do not, ``dropped`` ones included (page data that disagrees
    with one zeroed span, or with the places left)."""
    before = np.concatenate(([0], np.cumsum(must, dtype=np.int64)))

    def fits(j1: int, q1: int, j2: int, q2: int) -> bool:
        k = j2 - j1 - 1
        return q2 > q1 and int(before[q2] - before[q1 + 1]) <= k <= q2 - q1 - 1

    kept_j, kept_q = [], []
    last = (-1, -1)
    for j, q in zip(pins[0].tolist(), pins[1].tolist(), strict=True):
        if fits(*last, j, q) and fits(j, q, count, len(must)):
            kept_j.append(j)
            kept_q.append(q)
            last = (j, q)
    if len(pins[0]) + dropped - len(kept_j) > max(3, (len(pins[0]) + dropped) // 20):
        return None
    return np.array(kept_j, dtype=np.int64), np.array(kept_q, dtype=np.int64)


def _bounds(pins: tuple[np.ndarray, np.ndarray], must: np.ndarray,
            count: int) -> tuple[np.ndarray, np.ndarray]:
    """For each descriptor, the first and the last place it can have: between two pins, the
    declared places and the first (or last) of the others, as many as descriptors remain."""
    left = np.empty(count, dtype=np.int64)
    right = np.empty(count, dtype=np.int64)
    anchors = [(-1, -1), *zip(pins[0].tolist(), pins[1].tolist(), strict=True), (count, len(must))]
    for (j1, q1), (j2, q2) in zip(anchors, anchors[1:], strict=False):
        if j1 >= 0:
            left[j1] = right[j1] = q1
        if j2 - j1 <= 1:
            continue
        seg = must[q1 + 1:q2]
        free = np.flatnonzero(~seg)
        need = j2 - j1 - 1 - int(seg.sum())
        for out, chosen in ((left, free[:need]), (right, free[len(free) - need:])):
            take = seg.copy()
            take[chosen] = True
            out[j1 + 1:j2] = np.flatnonzero(take) + q1 + 1
    return left, right


def _ambiguous(pfns: np.ndarray, left: np.ndarray, right: np.ndarray,
               exact: np.ndarray) -> list[tuple[int, int]]:
    """PFN ranges of the places an unmatched descriptor may take."""
    if exact.all():
        return []
    edges = np.zeros(len(pfns) + 1, dtype=np.int64)
    np.add.at(edges, left[~exact], 1)
    np.add.at(edges, right[~exact] + 1, -1)
    cover = np.cumsum(edges[:-1]) > 0
    cover[left[exact]] = False
    return ranges_of(pfns[cover])


def _merge(a: tuple[np.ndarray, np.ndarray],
           b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted (virtual page number, PFN) tables as one."""
    v, first = np.unique(np.concatenate((a[0], b[0])), return_index=True)
    return v, np.concatenate((a[1], b[1]))[first]


def _apply(r: KdumpReader, span: tuple[int, int], first: int, count: int, plan: _Plan,
           total: int) -> None:
    """Make ``r`` read through the 2nd bitmap of ``span`` rebuilt by ``plan`` (its ``count``
    descriptors from ``first`` on; the table holds ``total``), instead of any earlier one."""
    if r.remap is not None:
        r.remap = None
        r._build_rank_index()
    a, b = span
    present = np.concatenate((plan.matched, plan.lost))
    index = np.concatenate((plan.descs + first, np.full(len(plan.lost), -1, dtype=np.int64)))
    order = np.argsort(present, kind="stable")
    bits = np.zeros((-(-b // 8) - a // 8) * 8, dtype=bool)
    bits[present - a // 8 * 8] = True
    r.remap = Remap(a // 8, np.packbits(bits, bitorder="little"), first, index[order],
                    count - len(present))
    r._build_rank_index()
    r.desc_end = r.data_offset = r.desc_offset + PAGE_DESC_SIZE * total
