"""Build a fleet of dumps in a temporary directory from the shared real corpus.

Every dump of a fleet is a real one: hard links and renamed copies of corpus files,
conversions made here with kdumptool (ELF, zstd pages, flattened), a ``.zst`` copy,
makedumpfile split sets, and the damaged files of ``broken/`` (with their ``.json``
descriptions beside them, which are text and must not be taken for dumps).
:func:`build_fleet` returns what each path is, so tests know what to expect.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import zstandard
from ours import kdumptool

from corpus import corpus_path, need_corpus_file

REPO = Path(__file__).resolve().parent.parent
K61 = "x86_64-kdump-320m"
K612 = "x86_64-kdump-320m-6.12"


@dataclass
class Fleet:
    """A fleet directory and what is in it: ``same_crash[set]`` are the dumps (keys as
    :class:`~kdumptool.fleet.discover.DumpItem` names them) of that set's crash in any
    format; ``damaged`` the damaged dumps; ``texts`` files that are not dumps."""

    root: Path
    same_crash: dict[str, list[str]] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    split_sets: list[tuple[str, ...]] = field(default_factory=list)
    other_boot: list[str] = field(default_factory=list)  # the same crash on another boot

    @property
    def dumps(self) -> list[str]:
        """Every dump key of the fleet."""
        return sorted([k for keys in self.same_crash.values() for k in keys] + self.damaged
                      + self.other_boot)


def _link(src: Path, dst: Path) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return str(dst)


def _copy(src: Path, dst: Path) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return str(dst)


def _zst(src: Path, dst: Path) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        zstandard.ZstdCompressor(level=1).copy_stream(fin, fout)
    return str(dst)


def _convert(src: Path, dst: Path, *opts: str) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    proc = kdumptool("convert", "-q", "--threads", "1", *opts, src, dst)
    assert proc.returncode == 0, proc.stderr.decode()
    return str(dst)


def _split(root: Path, rel_dir: str, set_: str) -> tuple[str, ...]:
    parts = tuple(_link(need_corpus_file(f"{set_}/derived/split2-c-d31.{i}"),
                        root / rel_dir / f"split2-c-d31.{i}") for i in (1, 2))
    return parts


def _broken(root: Path, set_: str, names: list[str], fleet: Fleet) -> None:
    for name in names:
        fleet.damaged.append(_link(need_corpus_file(f"{set_}/broken/{name}"), root / "broken" / set_ / name))
        desc = corpus_path(f"{set_}/broken/{name}.json")
        fleet.texts.append(_copy(desc, root / "broken" / set_ / f"{name}.json"))


def build_fleet(root: Path, *, big: bool = False) -> Fleet:
    """A small fleet (about 16 dumps) under ``root``; ``big``: also every derived and
    capture-kernel file and every damaged file of both kdump sets, several copies each."""
    fleet = Fleet(root)
    c61 = need_corpus_file(f"{K61}/derived/c-d31.kdump")
    c612 = need_corpus_file(f"{K612}/derived/c-d31.kdump")
    s61 = _split(root, "split/6.1", K61)
    s612 = _split(root, "split/6.12", K612)
    fleet.split_sets = [s61, s612]
    fleet.same_crash[K61] = [
        _link(c61, root / "hosts/a/c-d31.kdump"),
        _copy(c61, root / "hosts/b/vmcore-2026-11-22"),
        f"{s61[0]} (+1 parts)",
    ]
    fleet.same_crash[K612] = [
        _link(c612, root / "hosts/c/c-d31.kdump"),
        _convert(c612, root / "converted/c-d31.elf", "-E", "-d", "31"),
        _convert(c612, root / "converted/z-d31.kdump", "-z", "-d", "31"),
        _convert(c612, root / "converted/F-c-d31.flat", "-F", "-c", "-d", "31"),
        _zst(c612, root / "compressed/c-d31.kdump.zst"),
        f"{s612[0]} (+1 parts)",
    ]
    _broken(root, K61, ["c-d31-trunc30.kdump", "c-d31-bad-signature.kdump", "E-d31-headers-only.elf"], fleet)
    _broken(root, K612, ["l-d31-trunc50.kdump", "c-d31-bad-pd-offset.kdump"], fleet)
    boot2 = REPO / "corpus" / "x86_64-kdump-384m-6.12-boot2" / "capture-E-d31.elf.zst"
    if boot2.is_file():  # another boot of 6.12 (384 MiB, other KASLR), crashed the same way
        fleet.other_boot.append(_link(boot2, root / "boot2" / "capture-E-d31.elf.zst"))
    (root / "notes.txt").write_text("crash notes: not a dump\n")
    fleet.texts.append(str(root / "notes.txt"))
    if big:
        _add_big(root, fleet)
    for keys in fleet.same_crash.values():
        keys.sort()
    fleet.damaged.sort()
    return fleet


def _add_big(root: Path, fleet: Fleet) -> None:
    """Every derived and capture-kernel dump and every damaged file, twice (a link and a
    renamed copy of each kdump file)."""
    from corpus import dump_rels

    for set_ in (K61, K612):
        for rel in sorted(r for r in dump_rels() if r.startswith(f"{set_}/")):
            sub = rel[len(set_) + 1:]
            if sub.startswith(("derived/split2", "derived/reassembled")):
                continue  # split sets are in the small fleet; reassembled = c-d31
            if not sub.startswith(("derived/", "capture-kernel/", "broken/")):
                continue
            src = need_corpus_file(rel)
            if sub.startswith("broken/"):
                key = _link(src, root / "big" / set_ / sub)
                if key not in fleet.damaged:
                    fleet.damaged.append(key)
                continue
            fleet.same_crash[set_].append(_link(src, root / "big" / set_ / sub))
            fleet.same_crash[set_].append(_link(src, root / "big-copy" / set_ / sub.replace("/", "-")))
