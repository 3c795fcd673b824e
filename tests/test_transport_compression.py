"""Whole-file transport compression: reading .zst/.xz/.gz/.lz4 dumps, writing zstd/lz4 streams.

Inputs are real: the bundled makedumpfile dump (``corpus/x86_64-kdump-320m-c-d31.kdump``),
makedumpfile's flattened output from the shared corpus, and the corpus's own
``vmcore.elf.zst`` (made by ``zstd -19 --long=31``). They are compressed here with the
Python libraries and, where installed, the zstd/xz/gzip/lz4 programs.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import shutil
import subprocess
from pathlib import Path

import lz4.frame
import pytest
import zstandard
from ours import HANG_S, REPO, kdumptool, our_digests

from corpus import need_corpus, need_corpus_file
from kdumptool.errors import CorruptDumpError, TruncatedDumpError
from kdumptool.open import open_dump
from kdumptool.transport.compressed import DecompressingReader, detect

BUNDLED = REPO / "corpus" / "x86_64-kdump-320m-c-d31.kdump"
SKIP_FRAME = bytes.fromhex("512A4D18") + (5).to_bytes(4, "little") + b"hello"


@pytest.fixture(scope="module")
def plain() -> bytes:
    return BUNDLED.read_bytes()


@pytest.fixture(scope="module")
def digests() -> dict[int, str]:
    return our_digests(BUNDLED)


def _compress(kind: str, data: bytes) -> bytes:
    if kind == "zstd":
        return zstandard.ZstdCompressor(write_checksum=True).compress(data)
    if kind == "xz":
        return lzma.compress(data, preset=1)
    if kind == "gzip":
        return gzip.compress(data, compresslevel=1)
    return lz4.frame.compress(data, content_checksum=True)


# --- detection -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["zstd", "xz", "gzip", "lz4"])
def test_detect_by_magic(kind: str) -> None:
    assert detect(_compress(kind, b"x" * 100)[:64]) == kind


def test_detect_steps_over_skippable_frames() -> None:
    assert detect(SKIP_FRAME + _compress("lz4", b"abc")) == "lz4"
    assert detect(SKIP_FRAME + SKIP_FRAME + _compress("zstd", b"abc")) == "zstd"
    assert detect(SKIP_FRAME + b"\x7fELF") is None


def test_detect_ignores_dumps(plain: bytes) -> None:
    assert detect(plain[:4096]) is None  # kdump
    assert detect(b"\x7fELF\x02\x01\x01" + bytes(57)) is None
    assert detect(b"makedumpfile".ljust(4096, b"\0")) is None
    assert detect(b"") is None and detect(b"\x1f\x8b\x00") is None  # gzip needs method 8


# --- reading ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["zstd", "xz", "gzip", "lz4"])
def test_compressed_dump_reads_page_for_page(tmp_path: Path, plain: bytes, digests: dict[int, str],
                                             kind: str) -> None:
    path = tmp_path / "dump.bin"  # no telling suffix: detection is by content
    path.write_bytes(_compress(kind, plain))
    assert our_digests(path) == digests
    with open_dump(str(path)) as reader:
        assert reader.info.transport == f"{kind} stream"
        assert reader.info.format == "kdump"


@pytest.mark.parametrize("tool,kind", [("zstd", "zstd"), ("xz", "xz"), ("gzip", "gzip"), ("lz4", "lz4")])
def test_files_made_by_the_compression_programs(tmp_path: Path, digests: dict[int, str], tool: str,
                                                kind: str) -> None:
    exe = shutil.which(tool)
    if exe is None:
        pytest.skip(f"{tool} not installed")
    args = {"zstd": ["-q", "-c", "-T2"], "xz": ["-c", "-1", "-T2"], "gzip": ["-c", "-1"],
            "lz4": ["-q", "-c"]}[tool]
    out = tmp_path / f"dump.{tool}"
    with open(out, "wb") as f:
        subprocess.run([exe, *args, str(BUNDLED)], stdout=f, check=True, timeout=HANG_S)
    assert our_digests(out) == digests
    proc = kdumptool("info", "--json", out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["transport"] == f"{kind} stream"


def test_multi_frame_and_skippable_frames(tmp_path: Path, plain: bytes, digests: dict[int, str]) -> None:
    cut = [0, 4096, 1 << 20, 5 << 20, len(plain)]
    parts = [plain[a:b] for a, b in zip(cut, cut[1:], strict=False)]
    cases = {
        "zstd": SKIP_FRAME + b"".join(_compress("zstd", p) + SKIP_FRAME for p in parts),
        "lz4": b"".join(_compress("lz4", p) + SKIP_FRAME for p in parts),
        "gzip": b"".join(_compress("gzip", p) for p in parts) + bytes(512),  # tape padding
        "xz": b"".join(_compress("xz", p) + bytes(4) for p in parts),  # stream padding
    }
    for kind, blob in cases.items():
        path = tmp_path / kind
        path.write_bytes(blob)
        assert our_digests(path) == digests, kind


def test_flattened_inside_zstd_is_rearranged(tmp_path: Path) -> None:
    flat = need_corpus_file("x86_64-kdump-320m/derived/F-c-d31.flat")  # makedumpfile -F -c -d 31
    reference = need_corpus_file("x86_64-kdump-320m/derived/c-d31.kdump")
    path = tmp_path / "flat.zst"
    path.write_bytes(_compress("zstd", flat.read_bytes()))
    with open_dump(str(path)) as reader:
        assert reader.info.transport == "zstd stream, flattened"
    assert our_digests(path) == our_digests(reference)


def test_standard_input(plain: bytes) -> None:
    for kind in ("zstd", "gzip"):
        proc = kdumptool("info", "--json", "-", stdin=_compress(kind, plain))
        assert proc.returncode == 0, proc.stderr.decode()
        s = json.loads(proc.stdout)
        assert s["transport"] == f"{kind} stream" and s["pages"]["present"] == 21097


def test_commands_on_a_compressed_dump(tmp_path: Path, plain: bytes, digests: dict[int, str]) -> None:
    src = tmp_path / "in.xz"
    src.write_bytes(_compress("xz", plain))
    proc = kdumptool("dmesg", src)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == (REPO / "corpus" / "x86_64-kdump-320m-dmesg.txt").read_bytes()
    out = tmp_path / "out.kdump"
    proc = kdumptool("convert", "-q", "-c", src, out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert our_digests(out) == digests
    filtered = tmp_path / "f.elf"
    assert kdumptool("filter", "-q", "-E", "-d", "31", src, filtered).returncode == 0
    assert set(our_digests(filtered)) <= set(digests)
    proc = kdumptool("fsck", src)
    assert proc.returncode == 0 and b"clean" in proc.stdout


def test_real_corpus_zstd_file_with_a_long_window() -> None:
    """The corpus's vmcore.elf.zst (zstd -19 --long=31): its window is the whole 289 MB."""
    root = need_corpus()
    stored = root / "x86_64-kdump-320m" / "vmcore.elf.zst"
    if not stored.is_file():
        pytest.skip("vmcore.elf.zst not in the corpus")
    elf = need_corpus_file("x86_64-kdump-320m/vmcore.elf")
    with open_dump(str(stored)) as ours, open_dump(str(elf)) as ref:
        assert ours.info.transport == "zstd stream" and ours.info.format == "elf64"
        assert ours.source.size == ref.source.size
        for pfn in (0x100, 0x1000, 0x9000, 0x13000):
            assert ours.read(pfn * 4096, 4096) == ref.read(pfn * 4096, 4096)


# --- damage ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["zstd", "xz", "gzip", "lz4"])
def test_truncated_stream_is_refused_with_the_compressed_offset(tmp_path: Path, plain: bytes,
                                                               kind: str) -> None:
    blob = _compress(kind, plain)
    path = tmp_path / "cut"
    path.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(TruncatedDumpError) as exc:
        open_dump(str(path))
    assert exc.value.offset == len(blob) // 2 and exc.value.path == str(path)
    assert f"{kind} stream is truncated" in str(exc.value)
    proc = kdumptool("convert", "-q", path, tmp_path / "o")
    assert proc.returncode == 4
    line = proc.stderr.decode().strip()
    assert "\n" not in line and line.startswith(f"kdumptool: error: {path}: offset {len(blob) // 2:#x}: ")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["zstd", "xz", "gzip"])  # (lz4 blocks carry no checksum)
def test_corrupt_stream_is_refused_near_the_damage(tmp_path: Path, plain: bytes, kind: str) -> None:
    blob = bytearray(_compress(kind, plain))
    at = len(blob) // 3
    blob[at:at + 8] = bytes(b ^ 0x5A for b in blob[at:at + 8])
    path = tmp_path / "bad"
    path.write_bytes(bytes(blob))
    with pytest.raises(CorruptDumpError) as exc:
        open_dump(str(path))
    assert exc.value.path == str(path)
    assert exc.value.offset is not None and exc.value.offset <= len(blob)
    assert f"{kind} data is corrupt" in str(exc.value)


def test_trailing_garbage_is_refused(tmp_path: Path, plain: bytes) -> None:
    blob = _compress("zstd", plain)
    path = tmp_path / "junk"
    path.write_bytes(blob + b"not a frame")
    with pytest.raises(CorruptDumpError, match="trailing bytes are not the start of a frame") as exc:
        open_dump(str(path))
    assert exc.value.offset == len(blob)


def test_window_above_the_limit_is_refused(tmp_path: Path) -> None:
    # frame header: descriptor 0 (no single segment), window descriptor 2^(10+22) = 4 GiB
    path = tmp_path / "huge-window"
    path.write_bytes(b"\x28\xb5\x2f\xfd\x00" + bytes([22 << 3]) + b"\x01\x00\x00" * 4)
    with pytest.raises(CorruptDumpError) as exc:
        open_dump(str(path))
    assert exc.value.offset == 0 and "2048 MiB" in str(exc.value)


def test_tolerant_reading_keeps_the_image_up_to_the_damage(tmp_path: Path, plain: bytes) -> None:
    blob = _compress("zstd", plain)
    path = tmp_path / "cut.zst"
    path.write_bytes(blob[:len(blob) * 2 // 3])
    with open_dump(str(path), strict=False) as reader:
        assert isinstance(reader.source.damage, TruncatedDumpError)
        assert 0 < reader.source.size < len(plain)
    s = json.loads(kdumptool("info", "--json", path).stdout)
    assert s["transport"] == "zstd stream" and s["pages"]["lost"] > 0
    proc = kdumptool("fsck", path)
    assert proc.returncode == 2
    assert b"data-loss" in proc.stdout and b"zstd stream is truncated" in proc.stdout


def test_decoder_output_per_step_is_bounded() -> None:
    """A zstd bomb (4 GiB of zeros in RLE blocks) never yields more than a step's worth at once."""
    blob = zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20))
    reader = DecompressingReader(io.BytesIO(blob), "zstd", "bomb")
    got = reader.read(1 << 20)
    assert len(got) == 1 << 20 and len(reader._out) < 64 << 20
    total = len(got)
    while chunk := reader.read(8 << 20):
        total += len(chunk)
    assert total == 64 << 20


# --- writing ---------------------------------------------------------------------------------

def _makedumpfile_R(stream: bytes, out: Path) -> None:
    from peers import require_tool, run_makedumpfile

    require_tool("makedumpfile")
    proc = run_makedumpfile(["-R", out], stdin=stream, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr.decode()


@pytest.mark.parametrize("kind", ["zstd", "lz4"])
def test_stream_compress_roundtrip_through_makedumpfile(tmp_path: Path, digests: dict[int, str],
                                                       kind: str) -> None:
    plain_out = tmp_path / "plain.kdump"
    assert kdumptool("convert", "-q", "-c", BUNDLED, plain_out).returncode == 0
    out = tmp_path / f"out.{kind}"
    proc = kdumptool("convert", "-q", "-c", "-F", "--stream-compress", kind, BUNDLED, out)
    assert proc.returncode == 0, proc.stderr.decode()
    raw = out.read_bytes()
    assert detect(raw[:64]) == kind
    tool = shutil.which(kind)
    if tool is not None:  # the real decompressor, as a user would run it
        stream = subprocess.run([tool, "-dc", str(out)], capture_output=True, check=True,
                                timeout=HANG_S).stdout
    else:
        stream = (zstandard.ZstdDecompressor().decompressobj().decompress(raw) if kind == "zstd"
                  else lz4.frame.decompress(raw))
    assert stream.startswith(b"makedumpfile")
    rearranged = tmp_path / "R.kdump"
    _makedumpfile_R(stream, rearranged)
    assert rearranged.read_bytes() == plain_out.read_bytes()
    assert our_digests(out) == digests  # and kdumptool reads the compressed stream directly
    s = json.loads(kdumptool("info", "--json", out).stdout)
    assert s["transport"] == f"{kind} stream, flattened"


def test_stream_compress_to_standard_output(tmp_path: Path, digests: dict[int, str]) -> None:
    proc = kdumptool("convert", "-q", "-F", "--stream-compress", "zstd", BUNDLED)
    assert proc.returncode == 0, proc.stderr.decode()
    assert detect(proc.stdout[:8]) == "zstd"
    path = tmp_path / "piped"
    path.write_bytes(proc.stdout)
    assert our_digests(path) == digests


def test_stream_compress_needs_flattened(tmp_path: Path) -> None:
    for extra in ([], ["-E"]):
        proc = kdumptool("convert", *extra, "--stream-compress", "zstd", BUNDLED, tmp_path / "o")
        assert proc.returncode == 2 and b"--stream-compress needs -F" in proc.stderr
        assert not (tmp_path / "o").exists()
    proc = kdumptool("convert", "-F", "--stream-compress", "xz", BUNDLED, tmp_path / "o")
    assert proc.returncode == 2  # click: not a choice
