"""Microsoft "Plain LZ77" (XPRESS) decompression, as Hyper-V uses for saved guest RAM.

Spec: [MS-XCA] "Xpress Compression Algorithm", section 2.4 "Plain LZ77 Decompression
Algorithm Details" (the format ``RtlDecompressBuffer`` calls ``COMPRESSION_FORMAT_XPRESS``,
value 3). Written from the published algorithm, not from any implementation.

The stream is a sequence of 32-bit little-endian flag words, each followed by the items it
governs, read from the flag's most significant bit down: a 0 bit is one literal byte, a 1
bit a 16-bit match word (``length - 3`` in the low 3 bits, ``distance - 1`` in the high 13).
Length 7 means "longer": the next length nibble (two matches share one byte, low nibble
first), then 15 means a further byte, then 255 a 16-bit length (0 meaning a 32-bit one)
that counts from 3 and holds the whole length. A 1 flag with no input left ends the stream.

Decoding is bounded: it stops after ``out_size`` bytes, and a match that reaches before the
start of the output, or input that ends inside an item, is an error.
"""

from __future__ import annotations

from kdumptool.errors import XpressError


def decompress(data: bytes, out_size: int) -> bytes:
    """Decode a Plain LZ77 stream into exactly ``out_size`` bytes.

    :raises XpressError: the stream is damaged or yields fewer than ``out_size`` bytes
    """
    out = bytearray()
    n = len(data)
    pos = 0
    flags = 0
    nflags = 0
    half_byte_at = -1  # position of the byte whose high nibble is still unused
    while len(out) < out_size:
        if nflags == 0:
            if pos + 4 > n:
                break
            flags = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
            nflags = 32
        nflags -= 1
        if not (flags >> nflags) & 1:
            if pos >= n:
                break
            out.append(data[pos])
            pos += 1
            continue
        if pos == n:
            break  # the end marker: a match flag with no input left
        if pos + 2 > n:
            raise XpressError(f"input ends inside a match word at byte {pos}")
        word = data[pos] | data[pos + 1] << 8
        pos += 2
        length = word & 7
        distance = (word >> 3) + 1
        if length == 7:
            if half_byte_at < 0:
                if pos >= n:
                    raise XpressError(f"input ends before a length nibble at byte {pos}")
                length = data[pos] & 15
                half_byte_at = pos
                pos += 1
            else:
                length = data[half_byte_at] >> 4
                half_byte_at = -1
            if length == 15:
                if pos >= n:
                    raise XpressError(f"input ends before a length byte at byte {pos}")
                length = data[pos]
                pos += 1
                if length == 255:
                    if pos + 2 > n:
                        raise XpressError(f"input ends before a 16-bit length at byte {pos}")
                    length = data[pos] | data[pos + 1] << 8
                    pos += 2
                    if length == 0:
                        if pos + 4 > n:
                            raise XpressError(f"input ends before a 32-bit length at byte {pos}")
                        length = int.from_bytes(data[pos:pos + 4], "little")
                        pos += 4
                    if length < 15 + 7:
                        raise XpressError(f"match length {length} below its minimum at byte {pos}")
                    length -= 15 + 7
                length += 15
            length += 7
        length += 3
        if distance > len(out):
            raise XpressError(f"match distance {distance} reaches before the start of the output "
                              f"(at output byte {len(out)})")
        length = min(length, out_size - len(out))
        start = len(out) - distance
        if distance >= length:
            out += out[start:start + length]
        else:  # overlapping copy: the last `distance` bytes repeat
            chunk = out[start:]
            reps, rest = divmod(length, distance)
            out += chunk * reps + chunk[:rest]
    if len(out) != out_size:
        raise XpressError(f"stream ends after {len(out)} bytes, {out_size} expected")
    return bytes(out)
