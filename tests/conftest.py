"""Test-session settings.

``KDUMPTOOL_ZLIB=zlib``: ``-c`` compresses with the standard library in every test (and in
the command lines the tests run), so that outputs are makedumpfile's bytes where tests compare
them with its files, and a developer's ``KDUMPTOOL_ZLIB=isal`` cannot leak in: ISA-L's output,
while a valid zlib stream, is not reproducible (see ``test_codecs.py``). ``test_interop.py``
tests the other deflates explicitly, ``test_codecs.py``, ``test_deflate.py`` and
``test_pagezip.py`` the default (kdumptool's own page encoder, ``kdumptool/_pagezip.c``).

Hypothesis: no per-example deadline and no "too slow" health check anywhere (both count
wall-clock time, which a machine busy with other jobs stretches); a test's own ``@settings``
still choose the number of examples.
"""

import os

from hypothesis import HealthCheck, settings

os.environ["KDUMPTOOL_ZLIB"] = "zlib"

settings.register_profile("kdumptool", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("kdumptool")
