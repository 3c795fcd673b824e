"""libvirt's save-image wrapper around a QEMU migration stream (``virsh save``, managed save).

Spec: SPEC.md "QEMU savevm / migration streams", libvirt wrapper part; upstream libvirt
``src/qemu/qemu_saveimage.h`` (``struct _virQEMUSaveHeader``, ``QEMU_SAVE_MAGIC``,
``QEMU_SAVE_PARTIAL``, ``QEMU_SAVE_VERSION``), ``src/qemu/qemu_saveimage_format.h``
(``virQEMUSaveFormat``) and ``src/qemu/qemu_saveimage.c`` (``virQEMUSaveDataWrite``: the
domain XML, an optional cookie and zero padding fill ``data_len`` bytes after the header;
``qemuSaveImageReadHeader``: the header is in the host's byte order and is byte-swapped when
``version`` reads larger than the current version).

The QEMU stream (magic ``QEVM``) starts right after those ``data_len`` bytes. Only an
uncompressed image (``format`` 0, or a version-1 header, which has no compression) wraps a
stream kdumptool can read; a compressed one is rejected with the command that unpacks it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import construct as cs

from kdumptool.errors import CorruptDumpError, TruncatedDumpError, UnknownFormatError
from kdumptool.schema import ints, parse_at
from kdumptool.transport.source import ByteSource

MAGIC_SAVE = b"LibvirtQemudSave"
#: written first; replaced by :data:`MAGIC_SAVE` once the save completed (libvirt refuses it)
MAGIC_PARTIAL = b"LibvirtQemudPart"
MAX_VERSION = 2
#: ``virQEMUSaveFormat`` (the header field was called ``compressed`` before libvirt 8.x)
FORMATS = {0: "raw", 1: "gzip", 2: "bzip2", 3: "xz", 4: "lzop", 5: "zstd", 6: "sparse"}
#: how to unpack each compressed format (the programs libvirt runs with ``-dc``)
_UNPACK = {1: "gzip -dc", 2: "bzip2 -dc", 3: "xz -dc", 4: "lzop -dc", 5: "zstd -dc"}
#: the domain XML is read for ``info`` up to this many bytes
MAX_XML = 1 << 20


@functools.cache
def header_struct(endian: str) -> cs.Struct:
    """``struct _virQEMUSaveHeader``: 92 bytes, host byte order."""
    i = ints(endian)
    return cs.Struct(
        "magic" / cs.Bytes(16),
        "version" / i.u32,
        "data_len" / i.u32,  # domain XML + cookie + padding
        "was_running" / i.u32,
        "format" / i.u32,  # "compressed" in older libvirt; meaningful in version 2 only
        "cookieOffset" / i.u32,  # offset of the cookie inside the data (0: none)
        "unused" / cs.Array(14, i.u32),
    )


HEADER_SIZE = 92


def probe(head: bytes) -> bool:
    """True if ``head`` starts a libvirt save image (complete or partial)."""
    return head[:16] in (MAGIC_SAVE, MAGIC_PARTIAL)


@dataclass(frozen=True)
class LibvirtHeader:
    """What the wrapper says, and where the QEMU stream starts."""

    partial: bool
    version: int
    endian: str
    data_len: int
    was_running: bool
    format: int
    stream_offset: int
    domain_name: str | None


def parse_header(source: ByteSource) -> LibvirtHeader:
    """Read the wrapper of ``source``.

    :raises UnknownFormatError: not a libvirt image, or a compressed / sparse one
    :raises TruncatedDumpError: the file ends inside the header or the XML
    :raises CorruptDumpError: an impossible version or length
    """
    path = source.name
    raw = source.pread(0, HEADER_SIZE)
    if not probe(raw):
        raise UnknownFormatError("not a libvirt save image", path=path, offset=0,
                                 expected=MAGIC_SAVE, got=raw[:16])
    h = parse_at(header_struct("<"), raw, path=path, offset=0, what="libvirt save header")
    endian = "<"
    if h.version > MAX_VERSION:  # written on a big-endian host
        swapped = parse_at(header_struct(">"), raw, path=path, offset=0, what="libvirt save header")
        if swapped.version <= MAX_VERSION:
            h, endian = swapped, ">"
    if not 1 <= h.version <= MAX_VERSION:
        raise CorruptDumpError("unsupported libvirt save image version", path=path, offset=16,
                               expected=f"1..{MAX_VERSION}", got=h.version)
    stream = HEADER_SIZE + h.data_len
    if h.data_len == 0 or stream > source.size:
        raise TruncatedDumpError("libvirt save image ends inside its domain XML", path=path,
                                 offset=20, expected=f"data_len <= {source.size - HEADER_SIZE:#x}",
                                 got=f"data_len {h.data_len:#x}")
    fmt = h.format if h.version == 2 else 0
    if fmt != 0:
        name = FORMATS.get(fmt, f"format {fmt}")
        if fmt in _UNPACK:
            hint = (f"unpack it first: tail -c +{stream + 1} FILE | {_UNPACK[fmt]} > stream.qevm, "
                    "then read stream.qevm")
        elif fmt == 6:
            hint = "QEMU's mapped-ram layout is not supported"
        else:
            hint = "unknown format"
        raise UnknownFormatError(f"libvirt save image is {name}-compressed; {hint}", path=path,
                                 offset=28, expected="format 0 (raw)", got=fmt)
    xml_len = h.cookieOffset if 0 < h.cookieOffset <= h.data_len else h.data_len
    xml = source.pread(HEADER_SIZE, min(xml_len, MAX_XML)).split(b"\0", 1)[0]
    return LibvirtHeader(
        partial=raw[:16] == MAGIC_PARTIAL, version=h.version, endian=endian, data_len=h.data_len,
        was_running=bool(h.was_running), format=fmt, stream_offset=stream,
        domain_name=_domain_name(xml),
    )


def _domain_name(xml: bytes) -> str | None:
    """The ``<name>`` of the domain XML (a plain search: no XML parser on untrusted input)."""
    start = xml.find(b"<name>")
    end = xml.find(b"</name>", start + 6)
    if start < 0 or end < 0 or end - start > 6 + 256:
        return None
    return xml[start + 6:end].decode("utf-8", "replace")
