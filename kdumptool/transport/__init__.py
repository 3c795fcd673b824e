"""Transports: how the bytes of a dump image reach a format reader or leave a writer.

A format reader sees a :class:`~kdumptool.transport.source.ByteSource` (random
access by offset) no matter whether the image is a plain file, a flattened
stream indexed in place, or standard input or a whole-file compressed dump
(``.zst``, ``.xz``, ``.gz``, ``.lz4``: :mod:`~kdumptool.transport.compressed`)
spooled to a temporary file.
Writers emit positional writes into a :class:`~kdumptool.transport.sink.ByteSink`,
which is a plain file (written atomically) or a flattened stream (the only way
to write to a pipe), optionally through a zstd or lz4 frame, optionally under a
size limit (``-L``).
"""
