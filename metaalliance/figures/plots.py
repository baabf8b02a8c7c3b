"""Journal-ready figures: forest, cumulative and leave-one-out forest, funnel and bubble plots.

With ``plots_bias.py`` this is the only module that imports matplotlib. Every public plotting
function follows scikit-learn's convention: with ``ax=None`` it creates a figure sized for its
content (width from a journal preset, height from the number of rows), with a given ``ax`` it draws
into it; it returns the axes and never calls ``plt.show()``. Figures are created with
``matplotlib.figure.Figure`` (not pyplot), so nothing accumulates in pyplot's global state.

Models are fitted on Fisher's z. When a result's measure is ``"ZCOR"`` the effect axis is shown in
r: ticks sit at atanh(r) and are labelled with r; the text columns show r as well.

Artists carry gids (``forest-square``, ``forest-ci``, ``forest-ci-arrow``, ``forest-diamond``,
``forest-pi``, ``forest-row-label``...), so tests and SVG post-processing can find them.

Example
-------
>>> import numpy as np
>>> from metaalliance.figures import plots
>>> rows = plots.IntervalTable(labels=["A", "B"], estimate=[0.2, 0.3],
...                            ci_lower=[0.0, 0.1], ci_upper=[0.4, 0.5])
>>> ax = plots.interval_plot(rows)
>>> len(ax.figure.axes)
1
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from metaalliance.errors import DataError, MetaAllianceWarning, OptionError
from metaalliance.options import check_option
from metaalliance.formatting import distinct_labels, fmt_ci, fmt_est_ci, fmt_int, fmt_num, fmt_p, fmt_pct, fmt_r

from metaalliance.figures.style import (  # noqa: F401
    JOURNAL_WIDTHS_MM, FORMATS, SORTS, COLUMN_TITLES, RIGHT_COLUMNS, NUMERIC_COLUMNS, DEFAULT_COLUMNS, MM_PER_INCH, PT_PER_INCH, FONT_SIZE, MIN_FONT_SIZE, ROW_PITCH_EM, PAGE_HEIGHT_MM, TEXT_WIDTH_SAFETY, R_AXIS_LIMIT, MIN_PANEL_SHARE, _GREY, _BAND, font_family, journal_rc, width_inches, _new_figure, save_figure, _renderer, MEASURE_DPI, _text_width_pt, _clean, _truncate)

from metaalliance.figures.rows import (  # noqa: F401
    _Row, _Column, _Geometry, _ci_title, _make_columns, _place_columns, _spanning, _KEEP_TAIL, _shorten, _layout, _wrap_notes, _nice_r_ticks, _fmt_tick_r, _axis_range, _set_effect_axis, _decimals_for, _draw_rows, _frame_pt, _figure_for_rows, _page_chunks, _render)

from metaalliance.figures.forest import (  # noqa: F401
    _is_r_scale, _crit, _display, _est_text, _model_weights, _iv_weights, _as_frame, _DESCRIPTOR_FIELDS, _descriptors, _finding_rows, _summary_values, model_name, heterogeneity_text, _summary_rows, CLUSTER_NOUNS, _k_text, _subgroup_parts, _columns_for, forest_rows, forest_plot, forest_figures, _xlabel)

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


# --- funnel plot ---------------------------------------------------------------------------------

def funnel_plot(result, ax=None, *, trimfill=None, contours=True, width="single",
                height_mm=None, font_size=FONT_SIZE, title=None, level=None):
    """Journal-style funnel plot: effect (x; r axis for correlations) against standard error
    (y, 0 at the top), the pseudo confidence region around the model's estimate and, with
    ``contours=True``, the contour-enhanced regions of significance around zero (Peters et al.,
    2008). ``trimfill`` (a ``bias.TrimFillResult``) adds the filled studies as open circles and
    the adjusted estimate as a dashed line. The geometry is ``plots_bias.funnel_data``'s (one
    implementation); this function draws it at print size. Returns the axes.
    """
    import matplotlib
    from matplotlib.patches import Polygon

    from metaalliance.figures.bias_plots import CONTOUR_SHADES, funnel_data

    d = funnel_data(result, trimfill=trimfill, level=level)
    r_scale = _is_r_scale(result, "auto")
    top = d["se_top"]
    with matplotlib.rc_context(journal_rc(font_size)):
        if ax is None:
            w = width_inches(width)
            h = (height_mm / MM_PER_INCH) if height_mm else w * 0.8
            fig = _new_figure(w, h)
            ax = fig.add_axes([0.14, 0.30, 0.82, 0.64 if not title else 0.58])
        xs = np.concatenate([d["yi"], d["filled_yi"], d["pseudo_ci"]["lower"],
                             d["pseudo_ci"]["upper"], [0.0]])
        if contours:
            z = max(c["z"] for c in d["contours"])
            xs = np.concatenate([xs, [-z * top, z * top]])
        pad = 0.04 * float(xs.max() - xs.min() or 1.0)
        lo, hi = float(xs.min()) - pad, float(xs.max()) + pad
        if r_scale:  # the r axis ends at +-R_AXIS_LIMIT; points beyond sit on the edge
            lo = max(lo, -math.atanh(R_AXIS_LIMIT))
            hi = min(hi, math.atanh(R_AXIS_LIMIT))
        if contours:
            p_levels = [c["p"] for c in d["contours"]]
            for reg in d["regions"]:
                i = p_levels.index(reg["p_upper"])
                label = None
                if reg["side"] > 0:
                    upper, lower = fmt_r(reg["p_upper"]), fmt_r(reg["p_lower"])
                    label = f"p < {upper}" if reg["p_lower"] == 0 else f"{lower} < p < {upper}"
                ax.add_patch(Polygon(reg["polygon"], closed=True,
                                     facecolor=CONTOUR_SHADES[min(i, len(CONTOUR_SHADES) - 1)],
                                     edgecolor="none", zorder=0, gid="funnel-contour",
                                     label=label))
        ci = d["pseudo_ci"]
        ax.plot([ci["lower"][1], d["estimate"], ci["upper"][1]], [top, 0, top], color="black",
                lw=0.6, ls=(0, (3, 2)), zorder=1, gid="funnel-pseudo-ci",
                label=f"{d['level']:g}% pseudo CI")
        ax.plot([d["estimate"]] * 2, [0, top], color="black", lw=0.7, zorder=1,
                gid="funnel-estimate", label="model estimate")
        if trimfill is not None and trimfill.k0 > 0:
            ax.plot([d["adjusted_estimate"]] * 2, [0, top], color="black", lw=0.7,
                    ls=(0, (1, 1.5)), zorder=1, gid="funnel-adjusted",
                    label="trim-and-fill estimate")
        # smaller points for many findings; a thin white rim keeps overlapping points apart
        size = 14 if d["yi"].size < 100 else 8
        ax.scatter(np.clip(d["yi"], lo, hi), d["se"], s=size, color="black", edgecolors="white",
                   linewidths=0.3, zorder=3, gid="funnel-points", label="findings", clip_on=False)
        if d["filled_yi"].size:
            ax.scatter(np.clip(d["filled_yi"], lo, hi), d["filled_se"], s=size,
                       facecolors="white", edgecolors="black", lw=0.6, zorder=3,
                       gid="funnel-filled", label="filled (trim and fill)", clip_on=False)
        ax.set_ylim(top, 0)
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "0" if v == 0 else fmt_r(v)))
        ax.set_ylabel("Standard error")
        panel_pt = ax.get_position().width * ax.figure.get_figwidth() * PT_PER_INCH
        _set_effect_axis(ax, lo, hi, r_scale, panel_pt, font_size, fixed=True)
        ax.set_xlabel(_xlabel(r_scale))
        for side in ("right", "top"):
            ax.spines[side].set_visible(False)
        # the legend sits below the axis label, never on the points
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False,
                  fontsize=font_size - 0.5, handlelength=1.6, columnspacing=1.5,
                  borderaxespad=0.0)
        if title:
            ax.set_title(title, loc="left", fontweight="bold")
    return ax


# --- bubble plot (meta-regression on one continuous moderator) ------------------------------------

def bubble_plot(x, yi, vi, ax=None, *, fit=None, tau2=0.0, measure="ZCOR", xlabel="Moderator",
                width="single", font_size=FONT_SIZE, title=None, level=95.0):
    """Effects against a continuous moderator, circle area proportional to the weight
    1/(vi + tau2); with ``fit`` (intercept, slope[, vcov 2x2]) the regression line and its CI band."""
    import matplotlib

    x = np.asarray(x, dtype=float)
    yi = np.asarray(yi, dtype=float)
    vi = np.asarray(vi, dtype=float)
    if not (x.shape == yi.shape == vi.shape) or x.size == 0:
        raise DataError("bubble plot: x, yi and vi need the same, non-zero length")
    if np.any(~np.isfinite(x)) or np.any(~np.isfinite(yi)) or np.any(vi <= 0):
        raise DataError("bubble plot: x and yi must be finite and vi positive")
    r_scale = measure == "ZCOR"
    w = 1.0 / (vi + float(tau2))
    # circle area proportional to the weight; smaller circles when there are many
    sizes = 4 + 80 * min(1.0, math.sqrt(40.0 / x.size)) * w / w.max()
    with matplotlib.rc_context(journal_rc(font_size)):
        if ax is None:
            wi = width_inches(width)
            fig = _new_figure(wi, wi * 0.75)
            ax = fig.add_axes([0.16, 0.15, 0.80, 0.78 if not title else 0.72])
        ax.scatter(x, yi, s=sizes, facecolors="0.75", edgecolors="black", lw=0.5, zorder=2,
                   gid="bubble-points")
        if fit is not None:
            b0, b1 = float(fit[0]), float(fit[1])
            grid = np.linspace(x.min(), x.max(), 101)
            pred = b0 + b1 * grid
            if len(fit) > 2 and fit[2] is not None:
                v = np.asarray(fit[2], dtype=float)
                se = np.sqrt(v[0, 0] + 2 * grid * v[0, 1] + grid ** 2 * v[1, 1])
                crit = _crit(level)
                ax.fill_between(grid, pred - crit * se, pred + crit * se, color="0.88", lw=0,
                                zorder=1, gid="bubble-band")
            ax.plot(grid, pred, color="black", lw=0.9, zorder=3, gid="bubble-line")
        lo = float(min(yi.min(), 0.0))
        hi = float(yi.max())
        pad = 0.08 * (hi - lo or 1.0)
        panel_pt = ax.get_position().height * ax.figure.get_figheight() * PT_PER_INCH
        _set_effect_axis(ax, lo - pad, hi + pad, r_scale, panel_pt, font_size, fixed=True, axis="y")
        ax.axhline(0, color=_GREY, lw=0.5, zorder=0)
        if np.all(x == np.round(x)):  # years and counts: whole-number ticks, no separators
            from matplotlib.ticker import FormatStrFormatter, MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
            ax.xaxis.set_major_formatter(FormatStrFormatter("%d"))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Correlation r (Fisher z axis)" if r_scale else "Effect size")
        for side in ("right", "top"):
            ax.spines[side].set_visible(False)
        if title:
            ax.set_title(title, loc="left", fontweight="bold")
    return ax


__all__ = [
    "FORMATS", "JOURNAL_WIDTHS_MM", "SORTS", "IntervalTable", "bubble_plot",
    "cumulative_forest_plot", "forest_figures", "forest_plot", "forest_rows", "funnel_plot",
    "heterogeneity_text", "interval_plot", "journal_rc", "leave_one_out_plot", "model_name",
    "save_figure", "width_inches",
]
