"""Checking and repairing dumps: ``kdumptool fsck`` and ``kdumptool repair``.

* :mod:`kdumptool.repair.findings` — a finding (severity, offset, message, lost PFN
  ranges) and the report with its documented exit code;
* :mod:`kdumptool.repair.checks` — ``validate_*`` checks per format and for VMCOREINFO;
* :mod:`kdumptool.repair.descriptors` — emptied page descriptors rebuilt from the page data;
* :mod:`kdumptool.repair.bitmap2` — descriptors matched to their pages again when part of
  the 2nd bitmap was zeroed;
* :mod:`kdumptool.repair.salvage` — the repair policy: read tolerantly, keep every page
  that decodes, mark or zero-fill the rest, write a valid dump of the same kind.
"""
