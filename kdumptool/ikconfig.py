"""The kernel's own configuration, embedded in its image (``CONFIG_IKCONFIG``), found in memory.

Linux ``kernel/configs.c`` and ``kernel/Makefile`` place the gzip'ed ``.config`` between the
markers ``IKCFG_ST`` and ``IKCFG_ED`` (``scripts/extract-ikconfig`` finds it the same way in
a kernel file). It is in memory when the option is ``=y`` (in the kernel's data) or ``=m``
with the ``configs`` module loaded. The first comment lines name the architecture and the
kernel version (``# Linux/x86 6.1.192 Kernel Configuration``); the options give the
architecture (``CONFIG_X86_64``, ``CONFIG_ARM64``...) and what a dump reader needs to know
(paging levels, page size, VA bits, KASLR).

The scan is streaming: :class:`ConfigScanner` is fed the dump's memory window by window and
decompresses at most :data:`MAX_CONFIG` bytes of text.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

START, END = b"IKCFG_ST", b"IKCFG_ED"
#: Largest decompressed configuration accepted (a full distribution .config is ~250 KiB).
MAX_CONFIG = 2 << 20
#: Largest compressed blob followed across windows.
MAX_COMPRESSED = 1 << 20

#: ``(option, value) -> uname -m``, the first match wins (64-bit options before 32-bit ones).
ARCH_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("CONFIG_X86_64", "y", "x86_64"),
    ("CONFIG_ARM64", "y", "aarch64"),
    ("CONFIG_S390", "y", "s390x"),
    ("CONFIG_LOONGARCH", "y", "loongarch64"),
    ("CONFIG_X86_32", "y", "i686"),
    ("CONFIG_ARM", "y", "armv7l"),
)
#: Options shown by ``info`` (when set).
KEY_OPTIONS = (
    "CONFIG_LOCALVERSION", "CONFIG_PGTABLE_LEVELS", "CONFIG_X86_5LEVEL", "CONFIG_ARM64_VA_BITS",
    "CONFIG_ARM64_PA_BITS", "CONFIG_ARM64_PAGE_SHIFT", "CONFIG_PAGE_SIZE_4KB", "CONFIG_RANDOMIZE_BASE",
    "CONFIG_SPARSEMEM_VMEMMAP", "CONFIG_SPARSEMEM_EXTREME", "CONFIG_FLATMEM", "CONFIG_PRINTK",
    "CONFIG_NR_CPUS", "CONFIG_PAGE_TABLE_ISOLATION", "CONFIG_CC_VERSION_TEXT",
)
_HEADER = re.compile(r"^# Linux/(\S+) (\S+) Kernel Configuration$", re.M)
_OPTION = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$", re.M)


@dataclass
class KernelConfig:
    """A kernel configuration found in memory."""

    paddr: int  # physical address of the IKCFG_ST marker
    text: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, paddr: int, text: str) -> KernelConfig:
        """A configuration from the text of ``.config`` found at ``paddr`` (``CONFIG_X=value``
        lines; ``# CONFIG_X is not set`` lines are not options).
        """
        opts = {m.group(1): m.group(2).strip('"') for m in _OPTION.finditer(text)}
        return cls(paddr, text, opts)

    @property
    def header(self) -> tuple[str, str] | None:
        """``(arch, version)`` from the ``# Linux/ARCH VERSION Kernel Configuration`` line."""
        m = _HEADER.search(self.text[:1024])
        return (m.group(1), m.group(2)) if m else None

    @property
    def machine(self) -> str | None:
        """The architecture the options select (``uname -m`` spelling), None if none does."""
        for name, value, machine in ARCH_OPTIONS:
            if self.options.get(name) == value:
                return machine
        if self.options.get("CONFIG_PPC64") == "y":
            return "ppc64le" if self.options.get("CONFIG_CPU_LITTLE_ENDIAN") == "y" else "ppc64"
        if self.options.get("CONFIG_RISCV") == "y":
            return "riscv64" if self.options.get("CONFIG_64BIT") == "y" else "riscv32"
        return None

    def key_options(self) -> dict[str, str]:
        """The options ``info`` shows (:data:`KEY_OPTIONS`) that the configuration sets."""
        return {k: self.options[k] for k in KEY_OPTIONS if k in self.options}


class ConfigScanner:
    """Feed memory in PFN order with :meth:`feed`; :attr:`found` is set once a blob decodes."""

    def __init__(self) -> None:
        self.found: KernelConfig | None = None
        self._dec: zlib._Decompress | None = None  # type: ignore[name-defined]
        self._out = bytearray()
        self._fed = 0
        self._at = 0
        self._expect = -1  # physical address the next piece must start at (a contiguous blob)

    def feed(self, blob: bytes, paddr: int) -> None:
        """Scan ``blob``, the memory at ``paddr`` (contiguous); may be called repeatedly."""
        if self.found is not None:
            return
        pos = 0
        if self._dec is not None:
            if paddr != self._expect:
                self._reset()
            else:
                pos = self._continue(blob)
                if self.found is not None or self._dec is not None:
                    return
        while self.found is None:
            hit = blob.find(START, pos)
            if hit < 0:
                return
            self._dec = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip
            self._out.clear()
            self._fed = 0
            self._at = paddr + hit
            start = hit + len(START)
            used = self._continue(blob[start:])
            if self._dec is not None:  # needs the next window
                self._expect = paddr + len(blob)
                return
            pos = start + max(used, 1)

    def _continue(self, data: bytes) -> int:
        """Decompress ``data``; returns bytes used. Ends (found or reset) or waits for more."""
        dec = self._dec
        assert dec is not None
        take = data[:MAX_COMPRESSED - self._fed]
        try:
            out = dec.decompress(take, MAX_CONFIG + 1 - len(self._out))
        except zlib.error:
            self._reset()
            return 1
        self._out += out
        self._fed += len(take)
        if dec.eof:
            used = len(take) - len(dec.unused_data)
            text = bytes(self._out)
            self._reset()
            if len(text) <= MAX_CONFIG and b"CONFIG_" in text:
                self.found = KernelConfig.parse(self._at, text.decode("utf-8", "replace"))
            return used
        if len(self._out) > MAX_CONFIG or self._fed >= MAX_COMPRESSED or dec.unconsumed_tail:
            self._reset()
            return len(take)
        return len(take)

    def _reset(self) -> None:
        self._dec = None
        self._out = bytearray()
