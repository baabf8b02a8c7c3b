"""Interval plots: one row per estimate with its CI, from an ``IntervalTable`` (cumulative and
leave-one-out forest plots, subgroup summaries, published syntheses beside this dataset).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from metaalliance.errors import DataError
from metaalliance.formatting import fmt_int, fmt_num, fmt_pct
from metaalliance.figures.style import FONT_SIZE, PAGE_HEIGHT_MM, _clean, _truncate
from metaalliance.figures.rows import _Row, _make_columns, _render
from metaalliance.figures.forest import _est_text, model_name, _summary_rows, _xlabel


# --- interval tables: cumulative, leave-one-out, subgroup summaries --------------------------------

@dataclass
class IntervalTable:
    """Rows of estimates with CIs on the model scale, for interval_plot().

    ``extra`` maps a column key to one text per row (e.g. {"k": [...], "tau2": [...]}).
    """

    labels: list
    estimate: list
    ci_lower: list
    ci_upper: list
    extra: dict = field(default_factory=dict)
    extra_titles: dict = field(default_factory=dict)
    measure: str = "ZCOR"
    level: float = 95.0


def _table_from(records, *, label_key="label", measure="ZCOR", level=95.0, extra=()):
    """An IntervalTable from a sensitivity result (``to_frame()``), a DataFrame or a list of
    dicts with label, estimate, ci_lower, ci_upper on the model scale."""
    import pandas as pd

    if isinstance(records, IntervalTable):
        return records
    level = float(getattr(records, "level", level))
    frame = records.to_frame() if hasattr(records, "to_frame") else pd.DataFrame(records)
    need = [label_key, "estimate", "ci_lower", "ci_upper"]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise DataError(f"interval table: missing column(s) {', '.join(missing)}")
    ext = {key: frame[key].tolist() for key in extra if key in frame.columns}
    return IntervalTable([str(v) for v in frame[label_key]], frame["estimate"].astype(float).tolist(),
                         frame["ci_lower"].astype(float).tolist(),
                         frame["ci_upper"].astype(float).tolist(), ext, {}, measure, level)


def interval_plot(table: IntervalTable, ax=None, *, overall=None, overall_label=None, width="onehalf",
                  font_size=FONT_SIZE, xlim=None, xlabel=None, title=None, label_title="Study",
                  ci_title=None, show_pi=False, pages=False, max_rows=None):
    """Points with CIs, one per row (cumulative and leave-one-out analyses), and an optional
    overall diamond; returns the axes (or, with ``pages=True``, a list of figures)."""
    r_scale = table.measure == "ZCOR"
    n = len(table.labels)
    if not (len(table.estimate) == len(table.ci_lower) == len(table.ci_upper) == n) or n == 0:
        raise DataError("interval plot: labels, estimate, ci_lower and ci_upper need the same, "
                        "non-zero length")
    # extra["ci"], when given, replaces the estimate-and-CI text (e.g. a CI not reported)
    extra_keys = [k for k in table.extra if k != "ci"]
    rows = []
    for i in range(n):
        est, lo, hi = (float(table.estimate[i]), float(table.ci_lower[i]), float(table.ci_upper[i]))
        if not all(np.isfinite([est, lo, hi])):
            raise DataError(f"interval plot: row {i + 1} ({table.labels[i]}) has a missing value")
        cells = {"label": _truncate(_clean(table.labels[i]), 48), "ci": _est_text(est, lo, hi, r_scale)}
        for key in extra_keys:
            value = table.extra[key][i]
            cells[key] = value if isinstance(value, str) else _clean(value)
        if "ci" in table.extra:
            cells["ci"] = str(table.extra["ci"][i])
        rows.append(_Row("point", cells, est=est, lo=lo, hi=hi, keep=i, band=-1))
    ref = None
    if overall is not None:
        ref = float(overall.estimate)
        rows.append(_Row("blank", keep=10**6))
        rows += _summary_rows(overall, r_scale=r_scale, show_pi=show_pi, level=table.level,
                              keep=10**6, label=overall_label or model_name(overall),
                              note=False, weight_text="")
    titles = {"label": label_title, **table.extra_titles}
    if ci_title:
        titles["ci"] = ci_title
    columns = _make_columns(extra_keys + ["ci"], r_scale, table.level, titles)
    for col in columns:  # extra columns of an interval table hold numbers: right-align them
        if col.key in extra_keys:
            col.align = "right"
    xlabel = _xlabel(r_scale) if xlabel is None else xlabel
    axes = _render(rows, columns, ax=ax, width=width, font_size=font_size, r_scale=r_scale,
                   xlim=xlim, xlabel=xlabel, ref_line=ref, title=title, pages=pages,
                   page_height_mm=PAGE_HEIGHT_MM, max_rows=max_rows)
    return [a.figure for a in axes] if pages else axes[0]


def cumulative_forest_plot(cumulative, ax=None, *, overall=None, measure="ZCOR", level=95.0,
                           **kwargs):
    """Cumulative meta-analysis: row i pools the first i studies (in the order given, e.g. by year).

    ``cumulative`` is the sensitivity module's cumulative result: a DataFrame or list of dicts
    with label, estimate, ci_lower, ci_upper (model scale) and optionally k, tau2, i2.
    """
    table = _table_from(cumulative, measure=measure, level=level, extra=("k", "i2"))
    table.labels = [f"+ {lab}" if i else lab for i, lab in enumerate(table.labels)]
    if "k" in table.extra:
        table.extra["k"] = [fmt_int(v) for v in table.extra["k"]]
        table.extra_titles["k"] = "k"
    if "i2" in table.extra:
        table.extra["i2"] = [fmt_pct(v, 0) for v in table.extra["i2"]]
        table.extra_titles["i2"] = "I\u00b2"
    kwargs.setdefault("label_title", "Study added")
    return interval_plot(table, ax, overall=overall, **kwargs)


def leave_one_out_plot(loo, ax=None, *, overall=None, measure="ZCOR", level=95.0, **kwargs):
    """Leave-one-out analysis: row i pools all studies but study i."""
    table = _table_from(loo, measure=measure, level=level, extra=("tau2", "i2"))
    table.labels = [f"Omitting {lab}" for lab in table.labels]
    if "tau2" in table.extra:
        table.extra["tau2"] = [fmt_num(v, 3) for v in table.extra["tau2"]]
        table.extra_titles["tau2"] = "\u03c4\u00b2"
    if "i2" in table.extra:
        table.extra["i2"] = [fmt_pct(v, 0) for v in table.extra["i2"]]
        table.extra_titles["i2"] = "I\u00b2"
    kwargs.setdefault("label_title", "Analysis")
    return interval_plot(table, ax, overall=overall, **kwargs)
