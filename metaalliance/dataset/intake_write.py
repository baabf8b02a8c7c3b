"""Writing team sheets: the empty template and the export of the curated dataset.

``write_template(path)`` writes an .xlsx with our headers (sheet ``findings``), a data-validation
list on every vocabulary column (the levels on a hidden sheet ``levels``, since Excel limits an
inline list to 255 characters), and a sheet ``columns`` explaining each column. The explanations
come from the codebook (data/README.md's field tables) and the level meanings from
``options.VOCABULARIES``: nothing is copied by hand, so a field or level added there appears here.

``export_sheet(path)`` writes every curated finding as a row of the same sheet (.xlsx, .csv or
.ods); importing it into an empty folder gives the same study files (tested).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from metaalliance.dataset import fileio
from metaalliance.dataset import findings as F
from metaalliance.dataset.intake import columns, flat_records
from metaalliance.dataset.sheets import SHEET_NAME, column_letter
from metaalliance.errors import DataError, OptionError
from metaalliance.options import STATISTICS, VOCABULARIES

CODEBOOK = F.REPO_ROOT / "data" / "README.md"
#: the rows of the template that carry validation lists
TEMPLATE_ROWS = 2000


def codebook_fields(path=CODEBOOK) -> dict[str, tuple[str, str]]:
    """{field: (type, meaning)} from the codebook's field tables (study fields first; a finding
    field of the same name, an override, is kept under ``finding.<field>``)."""
    out: dict[str, tuple[str, str]] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return out
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line
        m = re.match(r"^\| `([a-z_]+)` \| ([^|]*) \| ([^|]*) \| (.*) \|$", line)
        if not m or "Format" not in section:
            continue
        key = m.group(1)
        if "finding" in section and key in out:
            key = f"finding.{key}"
        out.setdefault(key, (m.group(2).strip(), m.group(4).strip()))
    return out


def column_help() -> list[tuple[str, str, str, str, str]]:
    """(column, codebook field, required, type, meaning) for every sheet column."""
    book = codebook_fields()
    rows = []
    for col in columns():
        where, key = col.path[0], col.path[1]
        if col.name.endswith("_override"):
            kind, meaning = book.get(f"finding.{key}", ("", ""))
        elif len(col.path) == 3:
            kind, meaning = book.get(key, ("", ""))
            meaning = f"{col.field} of the finding's `{key}` ({meaning})" if meaning else col.field
            kind = "vocabulary" if col.levels else ("number" if col.kind == "number" else
                                                    "integer" if col.kind == "int" else "text")
        else:
            kind, meaning = book.get(key, ("", ""))
        if col.path[0] == "finding" and col.path[-1] == "type":
            need = "; ".join(f"{t} needs {', '.join(v)}" for t, v in STATISTICS.items() if v)
            meaning += f". Extra columns a type needs: {need}"
        if where == "study":
            req = "new studies" if col.required else "no"
        elif col.name in ("id", "sample"):
            req = "no (default: next f<number>)" if col.name == "id" else "no (default: citekey)"
        else:
            req = "yes" if col.required else "no"
        if col.levels:
            if col.path[-1] == "type":
                vocab = {t: "" for t in STATISTICS}
            else:
                vocab = VOCABULARIES.get("outcome_domain" if col.path[-1] == "domain"
                                         else col.path[-1], {})
            levels = "; ".join(f"{k} = {v}" if v else k for k, v in vocab.items())
            meaning = f"{meaning}. Levels: {levels}"
        rows.append((col.name, col.field, req, kind or col.kind, meaning))
    return rows


def _workbook(records: list[dict]):
    import openpyxl
    from openpyxl.styles import Alignment, Font
    from openpyxl.worksheet.datavalidation import DataValidation

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = SHEET_NAME
    cols = columns()
    ws.append([c.name for c in cols])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    ws.freeze_panes = "B2"
    for rec in records:
        ws.append([rec.get(c.name) for c in cols])
    lists = wb.create_sheet("levels")
    last = max(TEMPLATE_ROWS, len(records) + 1)
    j = 0
    for i, col in enumerate(cols):
        levels = list(col.levels) or (["true", "false"] if col.kind == "bool" else [])
        if not levels:
            continue
        letter = column_letter(j)
        lists.cell(row=1, column=j + 1, value=col.name)
        for r, level in enumerate(levels, start=2):
            lists.cell(row=r, column=j + 1, value=level)
        ref = f"levels!${letter}$2:${letter}${len(levels) + 1}"
        if col.kind == "bool":
            dv = DataValidation(type="list", formula1='"TRUE,FALSE"', allow_blank=True)
        else:
            dv = DataValidation(type="list", formula1=ref, allow_blank=True)
        dv.error = f"{col.name}: choose one of the levels (see the sheet 'columns')"
        dv.errorTitle = "Not a level"
        dv.showErrorMessage = True
        target = column_letter(i)
        dv.add(f"{target}2:{target}{last}")
        ws.add_data_validation(dv)
        j += 1
    lists.sheet_state = "hidden"
    info = wb.create_sheet("columns")
    info.append(["column", "codebook field", "required", "type", "meaning (from data/README.md "
                 "and metaalliance/options.py)"])
    for cell in info[1]:
        cell.font = Font(bold=True)
    for row in column_help():
        info.append(list(row))
    info.column_dimensions["A"].width = 22
    info.column_dimensions["B"].width = 22
    info.column_dimensions["C"].width = 18
    info.column_dimensions["E"].width = 120
    for row in info.iter_rows(min_row=2):
        row[4].alignment = Alignment(wrap_text=True, vertical="top")
    return wb


def _refuse_data_folder(path, what: str) -> None:
    if F.is_inside(path, F.DEFAULT_FINDINGS.parent) or F.is_inside(path, F.DEFAULT_BIB):
        raise OptionError(f"{what} {path}: inside the curated data; write elsewhere")


def write_template(path) -> None:
    """An empty .xlsx sheet with our headers, validation lists and the ``columns`` sheet."""
    path = Path(path)
    _refuse_data_folder(path, "--template")
    if path.suffix.lower() != ".xlsx":
        raise OptionError(f"--template {path}: the template is an .xlsx workbook")
    buf = io.BytesIO()
    _workbook([]).save(buf)
    fileio.atomic_write(path, buf.getvalue())


def export_sheet(path, findings_dir=None, bib=None) -> int:
    """Write every curated finding as a row (.xlsx with validation, .csv or .ods); returns k."""
    path = Path(path)
    _refuse_data_folder(path, "--sheet")
    suffix = path.suffix.lower()
    if suffix not in (".xlsx", ".csv", ".ods"):
        raise OptionError(f"--sheet {path}: the sheet must end in .xlsx, .csv or .ods")
    ds = F.read_dataset(findings_dir, bib)
    if ds.problems:
        from metaalliance.errors import ValidationError
        raise ValidationError(ds.problems)
    records = flat_records(ds)
    if not records:
        raise DataError("no findings to export")
    buf = io.BytesIO()
    if suffix == ".xlsx":
        _workbook(records).save(buf)
    else:
        import pandas as pd
        frame = pd.DataFrame([[r.get(c.name) for c in columns()] for r in records],
                             columns=[c.name for c in columns()], dtype=object)
        if suffix == ".csv":
            text = frame.to_csv(index=False, lineterminator="\n",
                                float_format=None).encode("utf-8")
            buf.write(text)
        else:
            frame.to_excel(buf, sheet_name=SHEET_NAME, index=False, engine="odf")
    fileio.atomic_write(path, buf.getvalue())
    return len(records)
