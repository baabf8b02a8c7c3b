"""The specification curve and the multiverse histogram (Voracek et al. 2019).

``specification_curve(results, factors)`` draws, on top, the estimate of every specification
sorted from smallest to largest with its confidence interval (black: the CI excludes 0; grey:
it does not), the line at 0 and the median; below, the indicator panel: one row per factor
level, a tick where a specification uses that level. ``multiverse_histogram(results)`` is the
"GOSH-like" histogram of all estimates with the median. Both take the table of
``analyses.multiverse`` (``Multiverse.results``), draw on the r scale when it has an ``r``
column, use the journal style of ``figures.style`` (font, sizes, widths in mm) and follow
scikit-learn's convention (``ax=None`` makes a figure; axes are returned; no pyplot).
"""

from __future__ import annotations

import numpy as np

from metaalliance.errors import DataError
from metaalliance.figures.style import (FONT_SIZE, MM_PER_INCH, _new_figure, journal_rc,
                                        width_inches)

__all__ = ["specification_curve", "multiverse_histogram", "indicator_rows"]

#: height of the estimate panel and of one indicator row (mm)
CURVE_HEIGHT_MM = 55.0
ROW_HEIGHT_MM = 2.9
#: above this many specifications the CI lines and ticks are rasterised (small PDFs)
RASTER_ABOVE = 2000
_GREY = "0.62"
_BAND = "0.94"


def _columns(results, scale):
    if scale == "r" and "r" not in results.columns:
        scale = "z"
    if scale == "r":
        return scale, "r", "r_ci_lower", "r_ci_upper"
    return scale, "estimate", "ci_lower", "ci_upper"


def _median_text(med: float, scale: str) -> str:
    from metaalliance.formatting import fmt_num, fmt_r

    return f"median r = {fmt_r(med)}" if scale == "r" else f"median = {fmt_num(med, 3)}"


def indicator_rows(results, factors):
    """[(factor, level), ...]: the indicator panel's rows, factors in the given order (those
    with at least two levels among the specifications), "all" first, then levels sorted."""
    rows = []
    for f in factors:
        if f not in results.columns:
            continue
        levels = sorted({str(x) for x in results[f]}, key=lambda s: (s != "all", s.lower()))
        if len(levels) < 2:
            continue
        rows.extend((f, lev) for lev in levels)
    return rows


def specification_curve(results, factors, *, scale: str = "r", width="double",
                        level: float = 95, title: str | None = None, fig=None):
    """The specification-curve figure; returns the matplotlib Figure."""
    import matplotlib

    if results is None or len(results) == 0:
        raise DataError("specification curve: no specifications to draw")
    scale, est_c, lo_c, hi_c = _columns(results, scale)
    order = np.argsort(results[est_c].to_numpy(dtype=float), kind="stable")
    res = results.iloc[order].reset_index(drop=True)
    est = res[est_c].to_numpy(dtype=float)
    lo = res[lo_c].to_numpy(dtype=float)
    hi = res[hi_c].to_numpy(dtype=float)
    n = est.size
    x = np.arange(1, n + 1)
    rows = indicator_rows(res, factors)
    w_in = width_inches(width)
    curve_in = CURVE_HEIGHT_MM / MM_PER_INCH
    rows_in = max(1, len(rows)) * ROW_HEIGHT_MM / MM_PER_INCH
    h_in = curve_in + rows_in + 0.55
    raster = n > RASTER_ABOVE
    with matplotlib.rc_context(journal_rc(FONT_SIZE)):
        if fig is None:
            fig = _new_figure(w_in, h_in)
        gs = fig.add_gridspec(2, 1, height_ratios=[curve_in, rows_in], hspace=0.06,
                              left=0.2, right=0.98, top=1 - 0.12 / h_in, bottom=0.4 / h_in)
        ax = fig.add_subplot(gs[0])
        ax2 = fig.add_subplot(gs[1], sharex=ax)
        excl = (lo > 0) | (hi < 0)
        lw = 0.6 if n <= 200 else (0.3 if n <= 2000 else 0.15)
        ms = 6 if n <= 200 else (2 if n <= 2000 else 0.6)
        for mask, colour in ((~excl, _GREY), (excl, "0.0")):
            if mask.any():
                ax.vlines(x[mask], lo[mask], hi[mask], colors=colour, linewidth=lw,
                          rasterized=raster, alpha=0.55)
                ax.scatter(x[mask], est[mask], s=ms, c=colour, linewidths=0, zorder=3,
                           rasterized=raster)
        ax.axhline(0.0, color="0.3", linewidth=0.6, linestyle=(0, (3, 2)))
        med = float(np.median(est))
        ax.axhline(med, color="0.0", linewidth=0.6)
        ax.annotate(_median_text(med, scale),
                    xy=(0.01, med), xycoords=("axes fraction", "data"), xytext=(0, 2),
                    textcoords="offset points", va="bottom", ha="left")
        # the axis spans the estimates, 0 and the CIs of 96% of the specifications: a few
        # very wide CIs (PET-PEESE on small subsets) would squeeze the curve otherwise;
        # their lines run off the panel
        ylo = min(0.0, float(est.min()), float(np.percentile(lo, 2)))
        yhi = max(0.0, float(est.max()), float(np.percentile(hi, 98)))
        pad = 0.05 * (yhi - ylo or 1.0)
        ax.set_ylim(ylo - pad, yhi + pad)
        ax.set_ylabel(("r" if scale == "r" else "estimate") + f" with {level:g}% CI")
        ax.set_xlim(0.5 - n * 0.005, n + 0.5 + n * 0.005)
        ax.tick_params(labelbottom=False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        if title:
            ax.set_title(title, loc="left")
        # indicator panel
        ypos = {}
        for i, key in enumerate(rows):
            ypos[key] = len(rows) - 1 - i
        prev = None
        for i, (f, lev) in enumerate(rows):
            if f != prev and i > 0:
                ax2.axhline(len(rows) - i - 0.5, color="0.75", linewidth=0.4)
            prev = f
        for f in dict.fromkeys(f for f, _ in rows):
            vals = res[f].astype(str).to_numpy()
            for lev in {lev for ff, lev in rows if ff == f}:
                m = vals == lev
                if m.any():
                    ax2.scatter(x[m], np.full(m.sum(), ypos[(f, lev)]), marker="|",
                                s=(8 if n <= 500 else 4), linewidths=(0.6 if n <= 500 else 0.3),
                                c="0.0", rasterized=raster)
        ax2.set_yticks([ypos[r] for r in rows])
        ax2.set_yticklabels([f"{f.replace('_', ' ')}: {lev}" for f, lev in rows],
                            fontsize=max(5.0, FONT_SIZE - 1.5))
        ax2.set_ylim(-0.6, len(rows) - 0.4)
        ax2.set_xlabel(f"specification (sorted by estimate; n = {n})")
        ax2.tick_params(axis="y", length=0)
        for side in ("top", "right"):
            ax2.spines[side].set_visible(False)
    return fig


def multiverse_histogram(results, *, scale: str = "r", width="single", bins=None, ax=None):
    """The histogram of all specification estimates with the median; returns the axes."""
    import matplotlib

    if results is None or len(results) == 0:
        raise DataError("multiverse histogram: no specifications to draw")
    scale, est_c, _, _ = _columns(results, scale)
    est = results[est_c].to_numpy(dtype=float)
    with matplotlib.rc_context(journal_rc(FONT_SIZE)):
        if ax is None:
            w = width_inches(width)
            fig = _new_figure(w, w * 0.62)
            ax = fig.add_axes([0.16, 0.2, 0.8, 0.74])
        if bins is None:
            bins = int(np.clip(np.sqrt(est.size) * 2, 10, 60))
        ax.hist(est, bins=bins, color="0.55", edgecolor="white", linewidth=0.3)
        med = float(np.median(est))
        ax.axvline(med, color="0.0", linewidth=0.8)
        ax.axvline(0.0, color="0.3", linewidth=0.6, linestyle=(0, (3, 2)))
        ax.set_xlabel("r" if scale == "r" else "estimate")
        ax.set_ylabel("specifications")
        ax.annotate(_median_text(med, scale), xy=(med, 1), xycoords=("data", "axes fraction"),
                    xytext=(2, -2), textcoords="offset points", va="top", ha="left")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return ax
