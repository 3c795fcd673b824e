"""Finding the dumps of a fleet: files and directories walked, split sets grouped.

A file is a dump candidate when its first bytes (decompressed first, for a ``.zst``,
``.xz``, ``.gz`` or ``.lz4`` file: recognised by magic, never by name) are a format
kdumptool reads, or are binary data at all: a dump whose signature was damaged is
still a dump of the fleet, and its triage says "unreadable".  Empty files and text
(no NUL byte, valid UTF-8: logs, JSON, VMCOREINFO notes) are not candidates.

Parts of a ``makedumpfile --split`` set (kdump-compressed, sub-header ``split`` set;
SPEC.md 3.10) are grouped into one :class:`DumpItem` by what the parts share: the
utsname, the crash timestamp, ``max_mapnr``, the block size, ``phys_base``, the
dump level and the directory; inside a set, parts are ordered by their first PFN.  A set with a part
missing is still one item (its triage reads the missing range as lost).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kdumptool.errors import KdumpToolError, UsageError
from kdumptool.formats import find_reader
from kdumptool.formats.kdump import KDUMP_SIGNATURE, detect_layout, kdump_structs
from kdumptool.transport import compressed, flattened

#: Bytes of a file (decompressed) looked at to classify it: the kdump header and sub-header.
HEAD_BYTES = 1 << 16
#: File names the fleet run itself writes (never triaged).
OUTPUT_NAMES = frozenset({"triage.jsonl", "report.html"})


@dataclass(frozen=True)
class DumpItem:
    """One dump of the fleet: one file, or the parts of a split set (PFN order).

    ``key`` names it in ``triage.jsonl`` (the first part's path, ``+N parts`` for a set).
    """

    paths: tuple[str, ...]

    @property
    def key(self) -> str:
        """The dump's name in the results: its path, or its first part's path for a set."""
        if len(self.paths) == 1:
            return self.paths[0]
        return f"{self.paths[0]} (+{len(self.paths) - 1} parts)"


@dataclass(frozen=True)
class _Candidate:
    path: str
    split_key: tuple[object, ...] | None  # set identity, for split parts
    first_pfn: int = 0


def _read_head(path: str) -> bytes:
    """The first :data:`HEAD_BYTES` of the file, decompressed when it is compressed
    (as much as decompresses, for a damaged stream)."""
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
        kind = compressed.detect(head[:4096])
        if kind is None:
            return head
        f.seek(0)
        dec = compressed.DecompressingReader(f, kind, path)
        out = bytearray()
        try:
            while len(out) < HEAD_BYTES:
                piece = dec.read(HEAD_BYTES - len(out))
                if not piece:
                    break
                out += piece
        except KdumpToolError:
            if not out:
                return head  # not even the start decompresses: judge the raw bytes
        return bytes(out)


def _is_text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end is still text
        return exc.start >= len(head) - 3
    return True


def split_identity(head: bytes) -> tuple[tuple[object, ...], int] | None:
    """``(set identity, first PFN)`` of a split part's header, or None when ``head`` is not
    the start of a kdump-compressed split part (or its header cannot be parsed)."""
    if head[:8] != KDUMP_SIGNATURE:
        return None
    try:
        structs, hdr = detect_layout(head)
    except KdumpToolError:
        return None
    s = kdump_structs(structs.layout, structs.endian)
    bs = hdr.block_size
    if hdr.header_version < 2 or hdr.sub_hdr_size <= 0 or len(head) < bs + s.KdumpSubHeader.sizeof():
        return None
    sub = s.KdumpSubHeader.parse(head[bs:bs + s.KdumpSubHeader.sizeof()])
    if not sub.split:
        return None
    v6 = hdr.header_version >= 6
    max_mapnr = sub.max_mapnr_64 if v6 and sub.max_mapnr_64 else hdr.max_mapnr
    first = sub.start_pfn_64 if v6 else sub.start_pfn
    uts = bytes(head[12:12 + 6 * 65])
    ident = (uts, hdr.timestamp.tv_sec, hdr.timestamp.tv_usec, max_mapnr, bs, sub.phys_base,
             sub.dump_level)
    return ident, first


def classify(path: str) -> _Candidate | None:
    """The file as a dump candidate, or None (empty, text, unreadable as a file)."""
    try:
        if os.path.getsize(path) == 0:
            return None
        head = _read_head(path)
    except OSError:
        return None
    if not head:
        return None
    known = find_reader(head[:4096]) is not None or flattened.probe(head[:64])
    if not known and _is_text(head[:4096]):
        return None
    found = split_identity(head)
    if found is None:
        return _Candidate(path, None)
    return _Candidate(path, found[0], found[1])


def walk(paths: Iterable[str], *, exclude: Iterable[str] = ()) -> Iterator[str]:
    """Every regular file under ``paths`` (files as given, directories recursively, sorted;
    symbolic links to files followed, to directories not), leaving out the fleet run's
    own output files and everything under the ``exclude`` directories.

    :raises UsageError: a path does not exist
    """
    skip = {os.path.realpath(e) for e in exclude}
    for top in paths:
        if not os.path.lexists(top):
            raise UsageError(f"{top}: no such file or directory")
        if not os.path.isdir(top):
            yield top
            continue
        for root, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(root, d)) not in skip)
            for name in sorted(files):
                full = os.path.join(root, name)
                if name in OUTPUT_NAMES or not os.path.isfile(full):
                    continue
                yield full


def discover(paths: Iterable[str], *, exclude: Iterable[str] = ()) -> list[DumpItem]:
    """The dumps under ``paths``: single files and grouped split sets, in path order.

    :param exclude: directories not to walk (the run's output directory)
    """
    items: list[tuple[str, DumpItem]] = []
    sets: dict[tuple[object, ...], list[_Candidate]] = {}
    seen: set[str] = set()
    for path in walk(paths, exclude=exclude):
        norm = os.path.normpath(path)
        if norm in seen:
            continue
        seen.add(norm)
        cand = classify(norm)
        if cand is None:
            continue
        if cand.split_key is None:
            items.append((norm, DumpItem((norm,))))
        else:  # parts of one set lie in one directory
            sets.setdefault((os.path.dirname(norm), *cand.split_key), []).append(cand)
    for parts in sets.values():
        ordered = sorted(parts, key=lambda c: (c.first_pfn, c.path))
        # two copies of one part (same range) are two sets, not one set with overlapping parts
        groups: list[list[_Candidate]] = []
        for c in ordered:
            target = next((g for g in groups if all(p.first_pfn != c.first_pfn for p in g)), None)
            if target is None:
                groups.append([c])
            else:
                target.append(c)
        for g in groups:
            item = DumpItem(tuple(c.path for c in g))
            items.append((item.paths[0], item))
    return [item for _, item in sorted(items, key=lambda t: t[0])]
