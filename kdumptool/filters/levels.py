"""makedumpfile dump levels (makedumpfile ``makedumpfile.h`` ``DL_EXCLUDE_*``; ``makedumpfile.8``)."""

from __future__ import annotations

DL_EXCLUDE_ZERO = 0x01  # pages filled with zero
DL_EXCLUDE_CACHE = 0x02  # page cache without private data
DL_EXCLUDE_CACHE_PRI = 0x04  # page cache, private or not
DL_EXCLUDE_USER_DATA = 0x08  # user process data (anonymous and hugetlbfs pages)
DL_EXCLUDE_FREE = 0x10  # free pages
MAX_DUMP_LEVEL = 31

#: bits whose decision needs ``struct page`` (mem_map)
MEM_MAP_LEVELS = DL_EXCLUDE_CACHE | DL_EXCLUDE_CACHE_PRI | DL_EXCLUDE_USER_DATA | DL_EXCLUDE_FREE
