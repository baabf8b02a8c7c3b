"""Reading a review team's spreadsheet (.csv, .xlsx, .ods) into plain cells, with clear errors.

``read_sheet(path)`` returns the header and the data rows as Python values (text, numbers,
booleans, dates, ``Formula`` for a formula cell), each row with its number as a spreadsheet
shows it (header = row 1). What cannot be read ends in one ``DataError`` line naming the file
(and row): a corrupt or password-protected workbook, a CSV that is not UTF-8, more than
``MAX_ROWS`` rows. Merged cells are reported as problems (``Sheet.problems``), so that every
problem of a sheet is listed in one run. Conversion to findings lives in ``intake``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

from metaalliance.dataset.findings import display_path, letters
from metaalliance.errors import DataError

#: a sheet larger than this (bytes) is refused before reading
MAX_SHEET_BYTES = 50_000_000
#: at most this many data rows (a review team's extraction has hundreds; a sheet with many
#: thousands is usually a mistake such as an export of another table)
MAX_ROWS = 5_000
#: the sheet read from a workbook: the one named so, else the first
SHEET_NAME = "findings"
SUFFIXES = (".csv", ".xlsx", ".ods")


class Formula(str):
    """A formula cell's text (``=B2/2``): never evaluated, reported as a problem."""


@dataclass
class Sheet:
    name: str                        # the file as the user typed it
    header: list                     # row 1 cells
    rows: list = field(default_factory=list)   # [(row number, [cells])]
    problems: list = field(default_factory=list)  # merged cells: "name: row R: columns ...: ..."


def column_letter(i: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA (a column as a spreadsheet names it)."""
    return letters(i).upper()


def read_sheet(path) -> Sheet:
    """The header and data rows of a .csv, .xlsx or .ods file (blank rows dropped)."""
    path = Path(path)
    name = display_path(path)
    if not path.is_file():
        raise DataError(f"{name}: file not found")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{name}: expected a .csv, .xlsx or .ods sheet (or a .yaml study file)")
    if path.stat().st_size > MAX_SHEET_BYTES:
        raise DataError(f"{name}: file is larger than {MAX_SHEET_BYTES} bytes")
    if path.stat().st_size == 0:
        raise DataError(f"{name}: the file is empty")
    reader = {".csv": _read_csv, ".xlsx": _read_xlsx, ".ods": _read_ods}[suffix]
    sheet = reader(path, name)
    sheet.rows = [(r, cells) for r, cells in sheet.rows if any(not _blank(c) for c in cells)]
    if not sheet.header or all(_blank(c) for c in sheet.header):
        raise DataError(f"{name}: row 1: the header row is empty (row 1 names the columns)")
    if not sheet.rows:
        raise DataError(f"{name}: no data rows below the header")
    if len(sheet.rows) > MAX_ROWS:
        raise DataError(f"{name}: row {sheet.rows[MAX_ROWS][0]}: more than {MAX_ROWS} data rows; "
                        "split the sheet (is it the right table?)")
    return sheet


def _blank(cell) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _read_csv(path: Path, name: str) -> Sheet:
    import csv
    import io

    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        row = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{name}: row {row}: not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                        f"offset {exc.start}); save the sheet as 'CSV UTF-8'") from None
    rows = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        for cells in reader:
            rows.append((reader.line_num, [c if c.strip() else None for c in cells]))
            if len(rows) > MAX_ROWS + 1:
                break
    except csv.Error as exc:
        raise DataError(f"{name}: row {reader.line_num}: cannot read as CSV: {exc}") from None
    if not rows:
        raise DataError(f"{name}: the file is empty")
    # csv's line_num counts physical lines; a spreadsheet counts records: number them 1, 2, ...
    header = rows[0][1]
    return Sheet(name, header, [(i, cells) for i, (_, cells) in enumerate(rows[1:], start=2)])


def _cell_value(cell):
    if cell.data_type == "f":
        return Formula(str(getattr(cell.value, "text", None) or cell.value))
    value = cell.value
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _read_xlsx(path: Path, name: str) -> Sheet:
    import warnings
    import zipfile

    import openpyxl

    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic.startswith(b"\xd0\xcf\x11\xe0"):
        raise DataError(f"{name}: the workbook is password-protected (encrypted) or an old .xls "
                        "file; save it without a password as .xlsx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # openpyxl warns about styles it does not know
            wb = openpyxl.load_workbook(path, data_only=False)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, TypeError, EOFError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise DataError(f"{name}: cannot open as an .xlsx workbook (corrupt?): {first}") from None
    except Exception as exc:  # openpyxl raises its own InvalidFileException and others
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise DataError(f"{name}: cannot open as an .xlsx workbook (corrupt?): {first}") from None
    ws = wb[SHEET_NAME] if SHEET_NAME in wb.sheetnames else wb.worksheets[0]
    # the rows that hold a value: a sheet formatted down to row 1,048,576 has only empty cells
    # there (ws._cells holds the cells that exist; iterating max_row would create them all)
    used = sorted({r for (r, _c), cell in ws._cells.items() if cell.value is not None})
    if not used:
        raise DataError(f"{name}: the sheet {ws.title!r} is empty")
    if len(used) > MAX_ROWS + 1:
        raise DataError(f"{name}: row {used[MAX_ROWS + 1]}: more than {MAX_ROWS} data rows; "
                        "split the sheet (is it the right table?)")
    width = max(c for (_r, c), cell in ws._cells.items() if cell.value is not None)
    grid = {}
    for (r, c), cell in ws._cells.items():
        if c <= width:
            grid[(r, c)] = _cell_value(cell)
    header = [grid.get((1, c)) for c in range(1, width + 1)]
    rows = [(r, [grid.get((r, c)) for c in range(1, width + 1)]) for r in used if r > 1]
    problems = []
    for rng in sorted(ws.merged_cells.ranges, key=lambda m: (m.min_row, m.min_col)):
        cols = (column_letter(rng.min_col - 1) if rng.min_col == rng.max_col else
                f"{column_letter(rng.min_col - 1)}-{column_letter(rng.max_col - 1)}")
        rows_text = (f"row {rng.min_row}" if rng.min_row == rng.max_row
                     else f"rows {rng.min_row}-{rng.max_row}")
        what = ("a merged header cell (give each column its own name)" if rng.min_row == 1
                else "merged cells (unmerge them and fill every cell)")
        problems.append(f"{name}: {rows_text}: columns {cols}: {what}")
    return Sheet(name, header, rows, problems)


def _read_ods(path: Path, name: str) -> Sheet:
    import pandas as pd

    try:
        df = pd.read_excel(path, engine="odf", header=None, dtype=object)
        extras = _ods_formulas_and_merges(path)
    except ImportError:
        raise DataError(f"{name}: reading .ods needs odfpy (pip install odfpy)") from None
    except Exception as exc:  # odfpy / zipfile raise many types on a damaged file
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise DataError(f"{name}: cannot open as an .ods workbook (corrupt or "
                        f"password-protected?): {first}") from None
    if df.empty:
        raise DataError(f"{name}: the sheet is empty")

    def plain(v):
        if v is None or (isinstance(v, float) and v != v):
            return None
        if isinstance(v, pd.Timestamp):
            return v.to_pydatetime()
        if isinstance(v, str) and not v.strip():
            return None
        return v

    cells = [[plain(v) for v in row] for row in df.itertuples(index=False)]
    formulas, merged = extras
    for (r, c), text in formulas.items():
        if r < len(cells):
            row = cells[r]
            row.extend([None] * (c + 1 - len(row)))
            row[c] = Formula(text)
    problems = []
    for r0, c0, r1, c1 in merged:
        cols = column_letter(c0) if c0 == c1 else f"{column_letter(c0)}-{column_letter(c1)}"
        rows_text = f"row {r0 + 1}" if r0 == r1 else f"rows {r0 + 1}-{r1 + 1}"
        what = ("a merged header cell (give each column its own name)" if r0 == 0
                else "merged cells (unmerge them and fill every cell)")
        problems.append(f"{name}: {rows_text}: columns {cols}: {what}")
    return Sheet(name, cells[0], [(i, row) for i, row in enumerate(cells[1:], start=2)],
                 problems)


def _ods_formulas_and_merges(path: Path):
    """{(row, col): formula} and merged ranges [(r0, c0, r1, c1)] of an .ods file's first
    table (0-based), which pandas' reader does not expose (it reads computed values)."""
    from odf.opendocument import load
    from odf.table import Table, TableRow

    formulas, merged = {}, []
    tables = load(str(path)).spreadsheet.getElementsByType(Table)
    if not tables:
        return formulas, merged
    r = 0
    for row in tables[0].getElementsByType(TableRow):
        rep = int(row.getAttribute("numberrowsrepeated") or 1)
        c = 0
        for cell in row.childNodes:
            kind = getattr(cell, "qname", (None, None))[1]
            if kind not in ("table-cell", "covered-table-cell"):
                continue
            crep = int(cell.getAttribute("numbercolumnsrepeated") or 1)
            if kind == "table-cell":
                formula = cell.getAttribute("formula")
                if formula:
                    text = formula.split(":", 1)[1] if formula.startswith("of:") else formula
                    for k in range(min(crep, 1000)):
                        formulas[(r, c + k)] = text
                cs = int(cell.getAttribute("numbercolumnsspanned") or 1)
                rs = int(cell.getAttribute("numberrowsspanned") or 1)
                if cs > 1 or rs > 1:
                    merged.append((r, c, r + rs - 1, c + cs - 1))
            c += crep
        r += rep
    return formulas, merged


def is_date(value) -> bool:
    return isinstance(value, (_dt.date, _dt.datetime, _dt.time))
