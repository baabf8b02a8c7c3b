"""``--where FIELD=VALUE`` filters: parsed as plain comparisons, never evaluated as code.

Used by the command line (``cli.select``), CSV input (``tabular``) and the report. What a
condition matches is defined once, in ``matcher()``; ``apply_where`` applies it to a DataFrame
and ``where_keep`` to plain rows (the curated dataset's lean path, without pandas).
"""

from __future__ import annotations

#: column kinds: a boolean column compares true/false as typed, a numeric column also
#: compares numbers (``year=2010.0`` keeps 2010), every column compares text
KINDS = ("text", "numeric", "boolean")


def parse_where(items):
    from metaalliance.errors import OptionError
    out = []
    for item in items:
        if "=" not in item:
            raise OptionError(f"--where {item!r}: expected FIELD=VALUE (e.g. rater=client)")
        field_name, value = item.split("=", 1)
        field_name = field_name.strip()
        values = [v.strip() for v in value.split(",")]
        if not field_name or not all(values):
            raise OptionError(f"--where {item!r}: expected FIELD=VALUE (e.g. rater=client)")
        out.append((field_name, values))
    return out


def number(text: str) -> float | None:
    """A ``--where`` value as a number, or None: what ``float()`` reads, in ASCII, without
    Python's ``_`` digit grouping, and not NaN (as ``pandas.to_numeric`` reads text:
    "2010", "1e3", ".5", "inf"; not "1_000", "nan", "0x10")."""
    if not text.isascii() or "_" in text:
        return None
    try:
        x = float(text)
    except ValueError:
        return None
    return None if x != x else x


def matcher(values, kind: str):
    """The test of one condition FIELD=v1,v2,... on a cell of a column of ``kind``:
    ``match(cell) -> bool`` for a present cell (a missing cell matches nothing).

    A cell matches when its text is one of the values (a boolean as "true"/"false", any case
    of the value), or, in a numeric column when every value is a number, when it equals one
    of them as a number.
    """
    if kind == "boolean":
        wanted = {v.lower() for v in values}
        return lambda cell: ("true" if cell else "false") in wanted
    wanted = set(values)
    numbers = [number(v) for v in values]
    if kind != "numeric" or any(x is None for x in numbers):
        return lambda cell: str(cell) in wanted
    return lambda cell: str(cell) in wanted or any(cell == x for x in numbers)


def _no_column(field_name: str, columns, source: str):
    from metaalliance.errors import OptionError

    return OptionError(f"--where {field_name}=...: {source} has no column {field_name!r} "
                       f"(columns: {', '.join(map(str, columns))})")


def apply_where(df, where, source: str):
    """Filter a DataFrame by FIELD=VALUE conditions (``matcher`` on each cell; the column's
    kind from its dtype)."""
    import numpy as np
    import pandas as pd

    for field_name, values in where:
        if field_name not in df.columns:
            raise _no_column(field_name, df.columns, source)
        col = df[field_name]
        kind = ("boolean" if pd.api.types.is_bool_dtype(col) else
                "numeric" if pd.api.types.is_numeric_dtype(col) else "text")
        match = matcher(values, kind)
        missing = col.isna().to_numpy()
        mask = np.array([not m and match(c) for c, m in zip(col.tolist(), missing)], dtype=bool)
        df = df[mask]
    return df


def is_missing(cell) -> bool:
    """A plain row's cell without a value: None or NaN."""
    return cell is None or (isinstance(cell, float) and cell != cell)


def where_keep(rows, columns, kinds: dict, where, source: str) -> list[bool]:
    """Which of ``rows`` (dicts with keys ``columns``) pass every condition: ``apply_where``
    on plain rows (``matcher`` on each cell; a cell is missing when None or NaN).
    ``kinds`` maps a column to its kind (default "text")."""
    keep = [True] * len(rows)
    for field_name, values in where:
        if field_name not in columns:
            raise _no_column(field_name, columns, source)
        match = matcher(values, kinds.get(field_name, "text"))
        keep = [k and not is_missing(row[field_name]) and match(row[field_name])
                for k, row in zip(keep, rows)]
    return keep
