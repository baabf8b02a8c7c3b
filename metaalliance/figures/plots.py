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

from metaalliance.figures.bubble import bubble_plot  # noqa: F401
from metaalliance.figures.forest import (CLUSTER_NOUNS, forest_figures, forest_plot,  # noqa: F401
                                         forest_rows, heterogeneity_text, model_name)
from metaalliance.figures.funnel import funnel_plot  # noqa: F401
from metaalliance.figures.intervals import (IntervalTable, cumulative_forest_plot,  # noqa: F401
                                            interval_plot, leave_one_out_plot)
from metaalliance.figures.style import (COLUMN_TITLES, DEFAULT_COLUMNS, FONT_SIZE,  # noqa: F401
                                        FORMATS, JOURNAL_WIDTHS_MM, MIN_FONT_SIZE,
                                        PAGE_HEIGHT_MM, SORTS, font_family, journal_rc,
                                        save_figure, width_inches)

__all__ = [
    "FORMATS", "JOURNAL_WIDTHS_MM", "SORTS", "IntervalTable", "bubble_plot",
    "cumulative_forest_plot", "forest_figures", "forest_plot", "forest_rows", "funnel_plot",
    "heterogeneity_text", "interval_plot", "journal_rc", "leave_one_out_plot", "model_name",
    "save_figure", "width_inches",
]
