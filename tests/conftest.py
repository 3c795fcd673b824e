"""Test-session settings.

``KDUMPTOOL_ZLIB=zlib``: ``-c`` compresses with the standard library in every test (and in
the command lines the tests run), because ISA-L's output, while a valid zlib stream, is not
bit-reproducible from run to run (its hash tables keep stale entries between calls), and many
tests compare two outputs byte for byte. ``test_interop.py`` tests ISA-L explicitly.
"""

import os

os.environ["KDUMPTOOL_ZLIB"] = "zlib"
