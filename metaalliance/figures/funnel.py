"""The funnel plot (metafor's ``funnel()``), contour-enhanced, with trim-and-fill studies.

Its geometry and contour shades are ``bias_plots.funnel_data`` / ``CONTOUR_SHADES``.
"""

from __future__ import annotations

import math

import numpy as np

from metaalliance.formatting import fmt_r
from metaalliance.figures.style import (MM_PER_INCH, PT_PER_INCH, FONT_SIZE, R_AXIS_LIMIT,
                                        journal_rc, width_inches, _new_figure)
from metaalliance.figures.rows import _set_effect_axis
from metaalliance.figures.forest import _is_r_scale, _xlabel


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
