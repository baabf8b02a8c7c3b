"""Read effect sizes from a user's CSV: ``--r COL --n COL`` or ``--yi COL --vi COL``.

Every problem names the file, the row (as numbered in a spreadsheet: header = row 1) and the
column. Rows with an empty cell in a used column are omitted, counted and warned about; a
cell that is present but unusable (text, inf, r outside (-1, 1), n <= 3, vi <= 0) is an error,
because silently dropping it would change the answer.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from metaalliance.errors import DataError, MetaAllianceWarning, OptionError
from metaalliance.options import VI_MAX, VI_MIN, YI_MAX

#: a CSV larger than this is refused before reading
MAX_CSV_BYTES = 200_000_000
#: cells that mean "no value" (compared in upper case, spaces stripped), in every column as
#: R's read.csv treats NA: a subgroup or moderator value "NA" is missing, not a level "NA"
MISSING = ("", "NA", "NAN", "NULL", ".")


def read_csv(path):
    """Read a CSV as text cells (no type guessing), with clear errors."""
    import pandas as pd

    from metaalliance.dataset.fileio import display_path

    path = Path(path)
    name = display_path(path)
    if not path.is_file():
        raise DataError(f"{name}: file not found")
    if path.stat().st_size > MAX_CSV_BYTES:
        raise DataError(f"{name}: file is larger than {MAX_CSV_BYTES} bytes")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True,
                         encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{name}: cannot read as CSV: {first}") from None
    df.columns = [str(c).strip() for c in df.columns]
    # pandas renames a repeated name ("r", "r" -> "r", "r.1"), so look at the header itself
    header = _header_cells(path)
    names = header if len(header) == len(df.columns) else list(df.columns)
    dupes = sorted({c for c in names if c and names.count(c) > 1})
    if dupes:
        raise DataError(f"{name}: duplicate column name(s): {', '.join(dupes)}")
    return df


def _header_cells(path) -> list[str]:
    """The first non-blank record of a CSV file, as the csv module reads it (stripped)."""
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for row in csv.reader(fh, skipinitialspace=True):
                if row:
                    return [c.strip() for c in row]
    except (csv.Error, UnicodeDecodeError):   # pandas read it; fall back to its names
        pass
    return []


def numeric_column(df, col: str, name: str):
    """Column ``col`` as floats; empty cells become NaN; text raises DataError naming the row."""
    import numpy as np

    cells = df[col].to_numpy(dtype=object)
    out = np.full(len(cells), np.nan)
    for i, cell in enumerate(cells):
        if not isinstance(cell, str) or cell.strip().upper() in MISSING:   # NaN: missing
            continue
        cell = cell.strip()
        try:
            out[i] = float(cell)
        except ValueError:
            raise DataError(f"{name}: row {i + 2}: {col}: {cell[:40]!r} is not a number") from None
        if not np.isfinite(out[i]):
            raise DataError(f"{name}: row {i + 2}: {col}: {cell!r} is not a finite number")
    return out


def read_effects(path, *, r=None, n=None, yi=None, vi=None, label=None, where=(),
                 required_columns=()):
    """Effect sizes from a CSV; returns the fields of ``cli.Selection``."""
    import numpy as np

    from metaalliance.dataset.fileio import display_path
    from metaalliance.dataset.selection import apply_where

    name = display_path(path)
    if (r is None) != (n is None) or (yi is None) != (vi is None) or \
            (r is None) == (yi is None):
        raise OptionError("--data needs either --r COL --n COL or --yi COL --vi COL")
    df = read_csv(path)
    used = [c for c in (r, n, yi, vi) if c] + list(required_columns)
    missing = [c for c in used + ([label] if label else []) if c not in df.columns]
    if missing:
        raise DataError(f"{name}: no column {', '.join(map(repr, missing))} "
                        f"(columns: {', '.join(df.columns)})")
    if df.empty:
        raise DataError(f"{name}: no data rows")
    df = df.copy()
    df["_row"] = np.arange(2, len(df) + 2)
    df = apply_where(df, list(where), name)
    for c in df.columns:
        if c != "_row":
            cells = df[c].astype(str).str.strip().str.upper()
            df[c] = df[c].where(~cells.isin(MISSING).to_numpy(), np.nan)
    values = {c: numeric_column(df, c, name) for c in (r, n, yi, vi) if c}
    for c in required_columns:
        if c not in values:
            values[c] = df[c].to_numpy(dtype=object)
    keep = np.ones(len(df), dtype=bool)
    for col_values in values.values():
        keep &= ~(col_values != col_values) if col_values.dtype.kind == "f" else \
            np.array([x == x for x in col_values], dtype=bool)
    omitted = int((~keep).sum())
    if omitted:
        rows = ", ".join(str(x) for x in df["_row"].to_numpy()[~keep][:10])
        more = " ..." if omitted > 10 else ""
        warnings.warn(f"{name}: omitted {omitted} row(s) with a missing value in "
                      f"{', '.join(c for c in values)} (rows {rows}{more})", MetaAllianceWarning)
    df = df[keep].reset_index(drop=True)
    values = {c: v[keep] for c, v in values.items()}
    rows = df["_row"].to_numpy()
    if len(df) == 0:
        raise DataError(f"{name}: no usable rows (all {omitted} had missing values)"
                        if omitted else f"{name}: no rows left after the selection")
    if r:
        rr, nn = values[r], values[n]
        bad = np.flatnonzero(~((rr > -1) & (rr < 1)))
        if bad.size:
            i = bad[0]
            raise DataError(f"{name}: row {rows[i]}: {r}: {rr[i]:g} must lie strictly between "
                            "-1 and 1 (Fisher's z is infinite at +-1)")
        bad = np.flatnonzero(~(nn > 3))
        if bad.size:
            i = bad[0]
            raise DataError(f"{name}: row {rows[i]}: {n}: {nn[i]:g} must be > 3 "
                            "(the variance 1/(n-3) needs n >= 4)")
        y, v, measure = np.arctanh(rr), 1.0 / (nn - 3.0), "ZCOR"
        bad = np.flatnonzero(v < VI_MIN)
        if bad.size:
            i = bad[0]
            raise DataError(f"{name}: row {rows[i]}: {n}: {nn[i]:g} is too large to be a sample "
                            f"size (the variance 1/(n-3) would be below {VI_MIN:g})")
    else:
        y, v, measure = values[yi], values[vi], "generic"
        bad = np.flatnonzero(~(v > 0))
        if bad.size:
            i = bad[0]
            raise DataError(f"{name}: row {rows[i]}: {vi}: {v[i]:g} must be > 0 "
                            "(a sampling variance)")
        bad = np.flatnonzero((v < VI_MIN) | (v > VI_MAX))
        if bad.size:
            i = bad[0]
            raise DataError(f"{name}: row {rows[i]}: {vi}: {v[i]:g} must lie between "
                            f"{VI_MIN:g} and {VI_MAX:g} (beyond, the weights 1/vi overflow)")
        bad = np.flatnonzero(np.abs(y) > YI_MAX)
        if bad.size:
            i = bad[0]
            raise DataError(f"{name}: row {rows[i]}: {yi}: {y[i]:g} must lie within "
                            f"+-{YI_MAX:g} (beyond, the weighted sums overflow)")
    label_col = label or next((c for c in ("label", "study", "author", "citekey")
                               if c in df.columns), None)
    if label_col:
        labels = unique_labels(["" if x != x else str(x).strip() for x in df[label_col]], rows,
                               name, label_col)
    else:
        labels = [f"row {x}" for x in rows]
    df = df.drop(columns="_row")
    for c, col_values in values.items():
        if c in (r, n, yi, vi):
            df[c] = col_values
    df["yi"], df["vi"] = y, v
    return dict(frame=df, yi=np.asarray(y, dtype=float), vi=np.asarray(v, dtype=float),
                labels=labels, measure=measure, omitted=omitted, source=name,
                rows=[int(x) for x in rows])


def _printable(text: str) -> str:
    """A label for display: control characters (tabs, form feeds, line breaks ...) become
    spaces, so that a label is one line on a plot, in a table and in a message."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def unique_labels(labels, rows, name: str, col: str) -> list[str]:
    """Labels made unique as metafor makes ``slab`` unique: a label used by several rows
    becomes label.1, label.2, ... (in row order), with one warning naming them; an empty
    label becomes "row N"; control characters become spaces."""
    from collections import Counter

    labels = [_printable(lab) or f"row {r}" for lab, r in zip(labels, rows)]
    counts = Counter(labels)
    dups = [lab for lab, c in counts.items() if c > 1]
    if not dups:
        return labels
    seen: Counter = Counter()
    out = []
    for lab in labels:
        if counts[lab] > 1:
            seen[lab] += 1
            out.append(f"{lab}.{seen[lab]}")
        else:
            out.append(lab)
    first = dups[0]
    where = ", ".join(str(r) for lab, r in zip(labels, rows) if lab == first)
    more = f" and {len(dups) - 1} more label(s)" if len(dups) > 1 else ""
    warnings.warn(f"{name}: {col}: {first!r} labels rows {where}{more}; numbered "
                  f"{first}.1, {first}.2 ... as metafor does (several findings of one study? "
                  f"--cluster {col} models them as dependent)", MetaAllianceWarning)
    return out
