"""The bubble plot: a meta-regression on one continuous moderator (points sized by weight,
the fitted line and its confidence band).
"""

from __future__ import annotations

import math

import numpy as np

from metaalliance.errors import DataError
from metaalliance.figures.style import (FONT_SIZE, PT_PER_INCH, _GREY, _new_figure, journal_rc,
                                        width_inches)
from metaalliance.figures.rows import _set_effect_axis
from metaalliance.figures.forest import _crit


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

