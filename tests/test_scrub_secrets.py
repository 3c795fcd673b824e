"""Secrets planted in a real guest before its crash are in the source dump and in no byte of
the scrubbed one.

The dump is ``corpus/x86_64-kdump-320m-secrets`` (its MANIFEST.md): the corpus's 6.1 kdump
guest, whose ``/init`` set a random hostname and domain name, added a ``user`` and a ``logon``
key, started a process with ``--password=...`` on its command line and wrote a line to
``/dev/kmsg`` just before the crash; ``secrets.txt`` holds the values. The source is
makedumpfile's own ``-E -d 31`` file of that crash: its pages are stored raw, so a byte search
of the file is a search of memory, and so is one of kdumptool's uncompressed outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ours import kdumptool

from corpus import REPO_ROOT

BUNDLE = REPO_ROOT / "corpus" / "x86_64-kdump-320m-secrets"
SOURCE = BUNDLE / "capture-E-d31.elf.zst"


def _secrets() -> dict[str, bytes]:
    pairs = (line.split("=", 1) for line in (BUNDLE / "secrets.txt").read_text().splitlines() if "=" in line)
    return {k: v.encode() for k, v in pairs if not k.endswith("_id")}


def _unzstd(path: Path) -> bytes:
    import zstandard

    with open(path, "rb") as f:
        return zstandard.ZstdDecompressor(max_window_size=1 << 31).stream_reader(f).read()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The source's bytes, and uncompressed outputs (kdump, and ELF) with and without scrubbing."""
    d = tmp_path_factory.mktemp("secrets")
    out = {"source": _unzstd(SOURCE)}
    for name, args in (("plain", ["convert"]), ("scrubbed", ["scrub", "--scrub", "all"]),
                       ("plain_elf", ["convert", "-E"]), ("scrubbed_elf", ["scrub", "--scrub", "all", "-E"]),
                       ("no_free", ["scrub", "--scrub", "hostname,dmesg,keys,files,user"])):
        r = kdumptool(*args, "-d", "31", SOURCE, d / f"{name}.out")
        assert r.returncode == 0, r.stderr.decode()
        out[name] = (d / f"{name}.out").read_bytes()
    return out


def test_every_secret_is_in_the_source(outputs: dict[str, bytes]) -> None:
    secrets = _secrets()
    assert set(secrets) == {"user_key", "logon_key", "hostname", "domainname", "password", "dmesg"}
    for name, value in secrets.items():
        assert value in outputs["source"], name


def test_dump_level_31_alone_keeps_the_kernel_s_copies(outputs: dict[str, bytes]) -> None:
    """The control: filtering by page class leaves the hostname, the keys and the log line."""
    secrets = _secrets()
    for name in ("user_key", "logon_key", "hostname", "domainname", "dmesg"):
        assert secrets[name] in outputs["plain"], name


def test_no_secret_is_left_in_any_byte_of_the_scrubbed_dump(outputs: dict[str, bytes]) -> None:
    for name, value in _secrets().items():
        assert value not in outputs["scrubbed"], name
    assert b"erase init_uts_ns.name.nodename size 64" in outputs["scrubbed"]
    # the keys' payloads in the record: "SCRUB-USER-KEY-" and "SCRUB-LOGON-KEY-" + 32 hex digits
    assert outputs["scrubbed"].count(b".payload.data size 47\n") == 1
    assert outputs["scrubbed"].count(b".payload.data size 48\n") == 1


def test_elf_output_holds_no_excluded_page_s_contents(outputs: dict[str, bytes]) -> None:
    """An ELF file written as makedumpfile -E writes it keeps the contents of excluded pages
    inside short gaps of a segment (here: the password in user pages, at -d 31); scrubbed, those
    pages are zeros and no secret is left."""
    secrets = _secrets()
    assert secrets["password"] in outputs["plain_elf"]
    for name, value in secrets.items():
        assert value not in outputs["scrubbed_elf"], name


def test_the_per_cpu_free_lists_held_a_copy(outputs: dict[str, bytes]) -> None:
    """Without the free profile one copy of the secrets written to a file is left, in a page on
    a per-CPU free list (dump level 16 keeps those); with it, none."""
    secrets = _secrets()
    assert secrets["password"] in outputs["no_free"] and secrets["password"] not in outputs["scrubbed"]
