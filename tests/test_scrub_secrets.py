"""Secrets planted in a real guest before its crash are in the source dump and in no byte of
the scrubbed one.

The guest (Debian 6.1.0-56, 320 MiB, kdump as the corpus's ``x86_64-kdump-320m``) was made by
the corpus tools with one change to its ``/init``: before the crash it set a random hostname
and domain name, added a ``user`` and a ``logon`` key (``add_key(2)``), started a process
with ``--password=...`` on its command line and wrote a line to ``/dev/kmsg``; the values,
random, were written only to the output disk (``guest-info/crash/secrets.txt``). The dump is
not part of the shared corpus: point ``KDUMPTOOL_SCRUB_GUEST`` at its directory (the test is
skipped without it, failed in CI).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ours import kdumptool

from corpus import in_ci

GUEST = Path(os.environ.get("KDUMPTOOL_SCRUB_GUEST", "/tmp/scrub-guest/out/x86_64-kdump-320m-secrets"))

pytestmark = pytest.mark.corpus


def _secrets() -> dict[str, bytes]:
    path = GUEST / "guest-info" / "crash" / "secrets.txt"
    if not path.is_file() or not (GUEST / "vmcore.elf").is_file():
        if in_ci():
            pytest.fail(f"the planted-secrets dump is missing: {GUEST}")
        pytest.skip(f"no planted-secrets dump at {GUEST} (set KDUMPTOOL_SCRUB_GUEST)")
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k: v.encode() for k, v in pairs if not k.endswith("_id")}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The source, and uncompressed -d 31 outputs without and with ``--scrub all``."""
    _secrets()
    d = tmp_path_factory.mktemp("secrets")
    src = GUEST / "vmcore.elf"
    out = {"source": src.read_bytes()}
    for name, args in (("plain", ["convert"]), ("scrubbed", ["scrub", "--scrub", "all"])):
        r = kdumptool(*args, "-d", "31", src, d / f"{name}.kdump")
        assert r.returncode == 0, r.stderr.decode()
        out[name] = (d / f"{name}.kdump").read_bytes()
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
    assert b"erase init_uts_ns.name.nodename size 65" in outputs["scrubbed"]
