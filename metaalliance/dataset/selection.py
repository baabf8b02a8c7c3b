"""``--where FIELD=VALUE`` filters: parsed as plain comparisons, never evaluated as code.

Used by the command line (``cli.select``), CSV input (``tabular``) and the report.
"""

from __future__ import annotations


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


def apply_where(df, where, source: str):
    """Filter a DataFrame by FIELD=VALUE conditions (string comparison, or numeric when both parse)."""
    from metaalliance.errors import OptionError
    import pandas as pd

    for field_name, values in where:
        if field_name not in df.columns:
            raise OptionError(f"--where {field_name}=...: {source} has no column {field_name!r} "
                              f"(columns: {', '.join(map(str, df.columns))})")
        col = df[field_name]
        if pd.api.types.is_bool_dtype(col):  # true/false as typed (read_in_review=false)
            col = col.map({True: "true", False: "false"})
            values = [v.lower() for v in values]
        mask = col.astype(str).isin(values)
        numeric = pd.to_numeric(pd.Series(values), errors="coerce")
        if pd.api.types.is_numeric_dtype(col) and numeric.notna().all():
            mask |= col.isin(list(numeric))
        df = df[mask]
    return df
