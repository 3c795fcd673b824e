"""Page filters: makedumpfile's dump levels.

* :mod:`kdumptool.filters.levels` — the level bits and their names;
* :mod:`kdumptool.filters.mem_map` — where the kernel's ``struct page`` array lives
  (SPARSEMEM / SPARSEMEM_EXTREME / FLATMEM), found from VMCOREINFO;
* :mod:`kdumptool.filters.page_classes` — makedumpfile 1.7's rules deciding, per
  ``struct page``, which pages levels 2, 4, 8 and 16 exclude (and the pages always
  excluded), vectorised with NumPy;
* :mod:`kdumptool.filters.exclusion` — one sweep over mem_map for a whole dump, through the
  page tables of :mod:`kdumptool.vtop`: the excluded pages as one bit per page.

Zero pages (level 1) need page contents, not ``struct page``; the writers apply them.
"""
