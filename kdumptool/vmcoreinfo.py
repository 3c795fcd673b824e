"""VMCOREINFO: parse, query and emit the kernel's ``KEY=VALUE`` text.

Spec: SPEC.md "VMCOREINFO"; upstream Linux ``kernel/crash_core.c``
(``VMCOREINFO_*`` macros) and ``Documentation/admin-guide/kdump/vmcoreinfo.rst``.

Keys come in kinds: plain (``OSRELEASE``, ``BUILD-ID``, ``PAGESIZE``,
``KERNELOFFSET`` (hex), ``CRASHTIME``, ``CONFIG_*``), and parameterised
(``SYMBOL(name)`` hex address, ``SIZE(type)``, ``OFFSET(type.member)``,
``LENGTH(name)``, ``NUMBER(name)`` decimal, possibly negative, or ``0x`` hex: arm64's
``kernel/crash_core.c`` prints ``NUMBER(kimage_voffset)``, ``NUMBER(PHYS_OFFSET)`` and
``NUMBER(TCR_EL1_T1SZ)`` with ``0x%llx``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kdumptool.errors import KdumpToolError, VmcoreInfoKeyError

#: VMCOREINFO text larger than this is refused (the kernel reserves one page).
MAX_VMCOREINFO = 1 << 20


@dataclass
class VmcoreInfo:
    """Parsed VMCOREINFO. ``raw`` is the exact text; ``lines`` maps key to value string."""

    raw: bytes
    lines: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: bytes) -> VmcoreInfo:
        """Parse the text; lines without ``=`` are ignored, the last duplicate wins."""
        raw = raw.split(b"\0", 1)[0]
        lines: dict[str, str] = {}
        for line in raw.decode("latin-1").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                lines[key.strip()] = value.strip()
        return cls(raw, lines)

    def get(self, key: str) -> str | None:
        """The value of ``key`` as text, None if absent."""
        return self.lines.get(key)

    def require(self, key: str) -> str:
        """The value of ``key``. :raises VmcoreInfoKeyError: if absent."""
        value = self.lines.get(key)
        if value is None:
            raise VmcoreInfoKeyError(key)
        return value

    def _int(self, key: str, base: int) -> int:
        text = self.require(key)
        try:
            return int(text, base)
        except ValueError:
            raise KdumpToolError(f"VMCOREINFO {key}={text!r} is not a number") from None

    def symbol(self, name: str) -> int:
        """``SYMBOL(name)``: a kernel virtual address (hexadecimal in the text).

        :raises VmcoreInfoKeyError: the key is absent
        :raises KdumpToolError: the value is not a number
        """
        return self._int(f"SYMBOL({name})", 16)

    def number(self, name: str) -> int:
        """``NUMBER(name)``: decimal, or hex with a ``0x`` prefix (arm64 prints
        ``kimage_voffset``, ``PHYS_OFFSET`` and ``TCR_EL1_T1SZ`` with ``0x%llx``).

        :raises VmcoreInfoKeyError: the key is absent
        :raises KdumpToolError: the value is not a number
        """
        key = f"NUMBER({name})"
        text = self.require(key)
        return self._int(key, 16 if text.lower().startswith(("0x", "-0x")) else 10)

    def size(self, name: str) -> int:
        """``SIZE(name)``: ``sizeof`` of a kernel type, in bytes.

        :raises VmcoreInfoKeyError: the key is absent
        :raises KdumpToolError: the value is not a number
        """
        return self._int(f"SIZE({name})", 10)

    def offset(self, name: str) -> int:
        """``OFFSET(type.member)``: ``offsetof`` of a member, in bytes.

        :raises VmcoreInfoKeyError: the key is absent
        :raises KdumpToolError: the value is not a number
        """
        return self._int(f"OFFSET({name})", 10)

    def length(self, name: str) -> int:
        """``LENGTH(name)``: the number of elements of a kernel array.

        :raises VmcoreInfoKeyError: the key is absent
        :raises KdumpToolError: the value is not a number
        """
        return self._int(f"LENGTH({name})", 10)

    def has(self, key: str) -> bool:
        """True if the text has a line for ``key`` (e.g. ``"SYMBOL(init_uts_ns)"``)."""
        return key in self.lines

    @property
    def machine(self) -> str:
        """The architecture the keys name, for a dump that does not say (LiME, a raw image):
        ``"x86_64"`` (``SYMBOL(init_top_pgt)``, ``init_level4_pgt`` before 4.13), ``"aarch64"``
        (``NUMBER(kimage_voffset)``), else ``""``."""
        if self.has("SYMBOL(init_top_pgt)") or self.has("SYMBOL(init_level4_pgt)"):
            return "x86_64"
        if self.has("NUMBER(kimage_voffset)"):
            return "aarch64"
        return ""

    @property
    def osrelease(self) -> str | None:
        """``OSRELEASE``: the kernel release (``uname -r``), None if absent."""
        return self.lines.get("OSRELEASE")

    @property
    def page_size(self) -> int | None:
        """``PAGESIZE`` in bytes, None if absent or not a number."""
        return _decimal(self.lines.get("PAGESIZE"))

    @property
    def kernel_offset(self) -> int | None:
        """``KERNELOFFSET`` (the KASLR offset of the kernel image, hexadecimal in the text),
        None if absent or not a number.
        """
        value = self.lines.get("KERNELOFFSET")
        try:
            return int(value, 16) if value else None
        except ValueError:
            return None

    @property
    def crash_time(self) -> int | None:
        """``CRASHTIME`` (seconds since the epoch, Linux 3.11+), None if absent or not a number."""
        return _decimal(self.lines.get("CRASHTIME"))

    @property
    def build_id(self) -> str | None:
        """``BUILD-ID`` (hexadecimal text, Linux 5.9+), None if absent."""
        return self.lines.get("BUILD-ID")


def _decimal(value: str | None) -> int | None:
    """A plain ASCII decimal number, else None (``str.isdigit`` accepts other digits)."""
    if value and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    return None


#: Stable kernels whose VMCOREINFO BUILD-ID is known to be garbage (drgn
#: ``ignore_broken_vmcoreinfo_build_id``): (major, minor, first patch, last patch or None)
BROKEN_BUILD_ID = [(6, 11, 3, 9), (6, 10, 14, None), (6, 6, 55, 62), (6, 1, 113, 118), (5, 15, 168, None)]


def known_broken_build_id(release: str) -> bool:
    """True for a kernel release whose VMCOREINFO BUILD-ID is known to be wrong."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", release)
    if not m:
        return False
    major, minor, patch = map(int, m.groups())
    return any(major == a and minor == b and patch >= lo and (hi is None or patch <= hi)
               for a, b, lo, hi in BROKEN_BUILD_ID)
