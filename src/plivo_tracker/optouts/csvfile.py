"""The CSV of `plivo-tracker optout import`, pure: rows to import, or every bad line.

The format (docs/operations.md, "Opt-outs"):

- one number a row, E.164 or digits with the country code ("+14155550101", "14155550101");
- optionally a header: a first row with a column named `number` (also `phone`,
  `phone_number`, `msisdn`, `e164`; any case). With a header, the columns `note` and
  `opted_out_at` (ISO 8601 with a time zone: when the number opted out in the system it comes
  from) are read too, and other columns are ignored. Without one, the first column is the
  number and the others are ignored;
- blank lines are skipped; a UTF-8 byte-order mark is fine.

All or nothing: any bad row and nothing is imported, and every bad row is reported with its
line number, so a file can be fixed in one go. Importing a file twice changes nothing the
second time.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime

from plivo_tracker.messages import phone
from plivo_tracker.optouts.repository import ImportRow

NUMBER_HEADERS = frozenset({"number", "phone", "phone_number", "msisdn", "e164"})
MAX_NOTE = 500


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


def _header(cells: list[str]) -> dict[str, int] | None:
    """Column positions when `cells` is a header row (it names a number column), else None."""
    names = [c.strip().lower() for c in cells]
    number = next((i for i, n in enumerate(names) if n in NUMBER_HEADERS), None)
    if number is None:
        return None
    columns = {"number": number}
    for name in ("note", "opted_out_at"):
        if name in names:
            columns[name] = names.index(name)
    return columns


def _cell(cells: list[str], columns: dict[str, int], name: str) -> str:
    index = columns.get(name)
    return cells[index].strip() if index is not None and index < len(cells) else ""


def parse(text: str) -> tuple[list[ImportRow], list[BadLine]]:
    """The rows of a CSV file's text, and its bad lines (import only when there are none)."""
    rows: list[ImportRow] = []
    bad: list[BadLine] = []
    columns: dict[str, int] | None = None
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if columns is None:
                columns = _header(cells)
                if columns is not None:
                    continue
                columns = {"number": 0}
            row, problem = _row(cells, columns)
            if problem is not None:
                bad.append(BadLine(line, problem))
            elif row is not None:
                rows.append(row)
    except csv.Error as exc:
        bad.append(BadLine(reader.line_num, f"not CSV ({exc})"))
    return rows, bad


def _row(cells: list[str], columns: dict[str, int]) -> tuple[ImportRow | None, str | None]:
    raw = _cell(cells, columns, "number")
    if not raw:
        return None, "no number"
    try:
        number = phone.to_e164(raw)
    except phone.InvalidNumber as exc:
        return None, f"{raw!r} is not a phone number ({exc})"
    note = _cell(cells, columns, "note") or None
    if note is not None:
        problem = phone.text_problem(note, multiline=False)
        if problem:
            return None, f"note {problem}"
        if len(note) > MAX_NOTE:
            return None, f"note longer than {MAX_NOTE} characters"
    when_raw = _cell(cells, columns, "opted_out_at")
    when = None
    if when_raw:
        try:
            when = datetime.fromisoformat(when_raw)
        except ValueError:
            return None, f"opted_out_at {when_raw!r} is not an ISO 8601 time"
        if when.tzinfo is None:
            return None, f"opted_out_at {when_raw!r} needs a time zone (e.g. Z or +00:00)"
        try:
            when = when.astimezone(UTC)
        except OverflowError:
            return None, f"opted_out_at {when_raw!r} is out of range"
    return ImportRow(number, note, when), None
