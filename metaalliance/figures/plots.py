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

from metaalliance.figures.intervals import (  # noqa: F401
    IntervalTable, _table_from, interval_plot, cumulative_forest_plot, leave_one_out_plot)

from metaalliance.figures.funnel import (  # noqa: F401
    funnel_plot)

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
