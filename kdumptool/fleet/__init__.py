"""Fleets: many dumps triaged at once, locally or on a Dask cluster, and one report.

* :mod:`~kdumptool.fleet.discover` — files and directories walked, dumps recognised by
  their bytes (compressed ones decompressed first), split sets grouped;
* :mod:`~kdumptool.fleet.task` — one dump's record (a pure task, never raises);
* :mod:`~kdumptool.fleet.engine` — a local process pool or a Dask ``distributed`` cluster,
  records yielded as they finish, no dump ending the run;
* :mod:`~kdumptool.fleet.store` — ``triage.jsonl``, appended line by line, resumable;
* :mod:`~kdumptool.fleet.groups` — signature groups, damaged dumps, keep one per signature;
* :mod:`~kdumptool.fleet.report` and :mod:`~kdumptool.fleet.charts` — ``report.html``;
* :mod:`~kdumptool.fleet.run` — all of it as :func:`run_fleet`;
* :mod:`~kdumptool.fleet.convert` — one dump's split parts written as cluster tasks.

This package sits above :mod:`kdumptool.kernel` and the readers and imports them; nothing
below imports it.
"""

from kdumptool.fleet.discover import DumpItem, discover
from kdumptool.fleet.run import FleetResult, run_fleet

__all__ = ["DumpItem", "FleetResult", "discover", "run_fleet"]
