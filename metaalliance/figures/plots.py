"""Journal-ready figures: forest, cumulative and leave-one-out forest, funnel and bubble plots.

This module is the figures' facade: it re-exports the names of the modules that draw them
(``style``: presets, rc, ``save_figure``; ``rows``: the row model shared by forest-like plots;
``forest``; ``intervals``; ``funnel``; ``bubble``), so ``from metaalliance.figures import plots``
and ``plots.forest_plot(...)`` keep working. matplotlib is imported only inside the
``metaalliance.figures`` package, and there only inside functions. Every public plotting
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

# every name the single-module plots.py had (its private helpers and the formatting functions it
# imported too), so code written against it keeps working; new code imports from the modules
from metaalliance.figures.bubble import bubble_plot  # noqa: F401
from metaalliance.figures.forest import (_DESCRIPTOR_FIELDS, CLUSTER_NOUNS, _as_frame,  # noqa: F401
                                         _columns_for, _crit, _descriptors, _display, _est_text,
                                         _finding_rows, _is_r_scale, _iv_weights, _k_text,
                                         _model_weights, _subgroup_parts, _summary_rows,
                                         _summary_values, _xlabel, forest_figures, forest_plot,
                                         forest_rows, heterogeneity_text, model_name)
from metaalliance.figures.funnel import funnel_plot  # noqa: F401
from metaalliance.figures.specification_curve import (multiverse_histogram,  # noqa: F401
                                                      specification_curve)
from metaalliance.figures.intervals import (IntervalTable, _table_from,  # noqa: F401
                                            cumulative_forest_plot, interval_plot,
                                            leave_one_out_plot)
from metaalliance.figures.rows import (_KEEP_TAIL, _Column, _Geometry, _Row,  # noqa: F401
                                       _axis_range, _ci_title, _decimals_for, _draw_rows,
                                       _figure_for_rows, _fmt_tick_r, _frame_pt, _layout,
                                       _make_columns, _nice_r_ticks, _page_chunks, _place_columns,
                                       _render, _set_effect_axis, _shorten, _spanning, _wrap_notes)
from metaalliance.figures.style import (_BAND, _GREY, COLUMN_TITLES, DEFAULT_COLUMNS,  # noqa: F401
                                        FONT_SIZE, FORMATS, JOURNAL_WIDTHS_MM, MEASURE_DPI,
                                        MIN_FONT_SIZE, MIN_PANEL_SHARE, MM_PER_INCH,
                                        NUMERIC_COLUMNS, PAGE_HEIGHT_MM, PT_PER_INCH,
                                        R_AXIS_LIMIT, RIGHT_COLUMNS, ROW_PITCH_EM, SORTS,
                                        TEXT_WIDTH_SAFETY, _clean, _new_figure, _renderer,
                                        _text_width_pt, _truncate, font_family, journal_rc,
                                        save_figure, width_inches)
from metaalliance.formatting import (distinct_labels, fmt_ci, fmt_est_ci, fmt_int,  # noqa: F401
                                     fmt_num, fmt_p, fmt_pct, fmt_r)

__all__ = [
    "FORMATS", "JOURNAL_WIDTHS_MM", "SORTS", "IntervalTable", "bubble_plot",
    "cumulative_forest_plot", "forest_figures", "forest_plot", "forest_rows", "funnel_plot",
    "heterogeneity_text", "interval_plot", "journal_rc", "leave_one_out_plot", "model_name",
    "save_figure", "width_inches",
]
