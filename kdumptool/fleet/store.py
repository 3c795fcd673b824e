"""``triage.jsonl``: one JSON record per line, appended as results arrive.

Each line is written whole and flushed, so an interrupted run leaves complete lines and
at most one cut last line; :func:`load_records` drops such a line and
:meth:`ResultsFile.open` truncates it away before appending (``--resume``).  Lines are
JSON with sorted keys, so a file's lines sorted are equal for equal results whatever
engine wrote them and in which order.
"""

from __future__ import annotations

import json
import os
from typing import IO, Any

from kdumptool.errors import OutputError, UsageError

RESULTS_NAME = "triage.jsonl"


def dumps_line(record: dict[str, Any]) -> str:
    """The record as one line (sorted keys, no trailing newline)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def _good_prefix(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Records of the complete, valid lines at the start of ``data`` and their length."""
    records: list[dict[str, Any]] = []
    end = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            rec = json.loads(line)
        except ValueError:
            break
        if not isinstance(rec, dict) or "dump" not in rec:
            break
        records.append(rec)
        end += len(line)
    return records, end


def load_records(path: str) -> list[dict[str, Any]]:
    """The records in a results file (a cut or invalid tail is left out); ``[]`` if none.

    :raises OutputError: the file exists but cannot be read
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise OutputError(f"{path}: cannot read: {exc.strerror}") from None
    return _good_prefix(data)[0]


class ResultsFile:
    """The results file of a run, open for appending.

    :param out_dir: the run's directory (created if missing)
    :param resume: keep the records already there (else the file must not exist)
    :raises UsageError: the file exists and ``resume`` is false
    :raises OutputError: the directory or file cannot be written
    """

    def __init__(self, out_dir: str, *, resume: bool) -> None:
        self.path = os.path.join(out_dir, RESULTS_NAME)
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{out_dir}: cannot create the directory: {exc.strerror}") from None
        if os.path.exists(self.path) and not resume:
            raise UsageError(f"{self.path} exists: add --resume to continue that run, or remove it")
        self.records = load_records(self.path)
        self.done = {r["dump"] for r in self.records}
        self._f: IO[str] | None = None

    def open(self) -> None:
        """Open for appending, cutting a partial last line off first."""
        try:
            if os.path.exists(self.path):
                _truncate_to_good(self.path)
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write: {exc.strerror}") from None

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as a line and flush it."""
        if self._f is None:
            self.open()
        assert self._f is not None
        try:
            self._f.write(dumps_line(record) + "\n")
            self._f.flush()
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write: {exc.strerror}") from None
        self.records.append(record)
        self.done.add(record["dump"])

    def close(self) -> None:
        """Close the file (records stay in :attr:`records`)."""
        if self._f is not None:
            self._f.close()
            self._f = None


def _truncate_to_good(path: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    end = _good_prefix(data)[1]
    with open(path, "r+b") as f:
        f.truncate(end)
