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

    Nothing is drawn outside the panel: markers are clipped to it and kept whole inside it,
    and findings beyond the r axis (|r| > .95) sit at its edge as triangles pointing outwards
    (with a legend entry). The legend goes below the axis label; in a figure of its own
    (``ax=None``) the figure grows downwards until the legend fits, or, with ``height_mm``,
    keeps that height and gives the panel less.
    """
    import matplotlib
    from matplotlib.patches import Polygon

    from metaalliance.figures.bias_plots import CONTOUR_SHADES, funnel_data

    d = funnel_data(result, trimfill=trimfill, level=level)
    r_scale = _is_r_scale(result, "auto")
    top = d["se_top"]
    with matplotlib.rc_context(journal_rc(font_size)):
        own = ax is None
        if own:
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
        # smaller points for many findings; a thin white rim keeps overlapping points apart.
        # Points beyond the r axis are drawn at its edge as triangles pointing outwards; every
        # marker is clipped to the panel (positions are fitted inside by _markers_inside).
        size = 14 if d["yi"].size < 100 else 8
        styles = {"funnel-points": dict(color="black", edgecolors="white", linewidths=0.3),
                  "funnel-filled": dict(facecolors="white", edgecolors="black", lw=0.6)}
        beyond_label = f"r beyond \u00b1{fmt_r(R_AXIS_LIMIT)}" if r_scale else "beyond the axis"
        sets = [(gid, xv, sv) for gid, xv, sv in (("funnel-points", d["yi"], d["se"]),
                                                  ("funnel-filled", d["filled_yi"], d["filled_se"]))
                if xv.size]
        for gid, xv, sv in sets:
            inside = (xv >= lo) & (xv <= hi)
            ax.scatter(xv[inside], sv[inside], s=size, zorder=3, gid=gid, **styles[gid],
                       label="findings" if gid == "funnel-points" else "filled (trim and fill)")
        for gid, xv, sv in sets:
            for marker, side in (("<", xv < lo), (">", xv > hi)):
                if side.any():
                    ax.scatter(np.clip(xv[side], lo, hi), sv[side], s=size * 1.3, marker=marker,
                               zorder=3, gid=gid, label=beyond_label, **styles[gid])
                    beyond_label = None
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
        if title:
            ax.set_title(title, loc="left", fontweight="bold")
        # the legend sits below the axis label, never on the points; a figure of our own grows
        # (or, at a given height, its panel shrinks) until the legend fits inside it
        legend = _legend_below(ax, font_size)
        if own:
            _fit_figure(ax, legend, font_size, fixed_height=bool(height_mm))
        _markers_inside(ax)
    return ax


def _legend_below(ax, font_size, ncol=2):
    """The legend, centred under the x axis label (measured, so tick labels never collide)."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    axis_bottom = ax.xaxis.get_tightbbox(renderer).y0          # display units
    gap = 0.6 * font_size * fig.dpi / PT_PER_INCH
    y = ax.transAxes.inverted().transform((0.0, axis_bottom - gap))[1]
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, y), ncol=ncol, frameon=False,
                     fontsize=font_size - 0.5, handlelength=1.6, columnspacing=1.5,
                     borderaxespad=0.0)


def _fit_figure(ax, legend, font_size, fixed_height: bool):
    """Size our own figure so that the legend and the axis labels lie inside it.

    Default height: the panel keeps the height it was given and the figure grows below it.
    ``height_mm`` given: the figure keeps that height and the panel gives up the room. A legend
    that would stick out at the sides goes into one column.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    w, h = fig.get_size_inches()
    # axis labels and tick labels inside the figure too (narrow widths, large fonts): the panel
    # gives up width on the side that needs it
    pad = 2.0 * fig.dpi / PT_PER_INCH
    for _ in range(3):          # the centred x label moves with the panel: settle in a few steps
        left = max(0.0, pad - min(ax.yaxis.get_tightbbox(renderer).x0,
                                  ax.xaxis.get_tightbbox(renderer).x0)) / (w * fig.dpi)
        right = max(0.0, ax.xaxis.get_tightbbox(renderer).x1 - (fig.bbox.x1 - pad)) \
            / (w * fig.dpi)
        pos = ax.get_position()
        if not (left or right) or pos.width - left - right < 0.3:
            break
        ax.set_position([pos.x0 + left, pos.y0, pos.width - left - right, pos.height])
        legend.remove()
        legend = _legend_below(ax, font_size)
    ncol = 2
    box = legend.get_window_extent(renderer)
    if box.x0 < fig.bbox.x0 or box.x1 > fig.bbox.x1:
        legend.remove()
        ncol = 1
        legend = _legend_below(ax, font_size, ncol=ncol)
    pos = ax.get_position()
    top_in = (1.0 - pos.y1) * h
    panel_in = pos.height * h
    # from the panel's bottom edge to the legend's bottom edge, plus 3 pt of paper
    below = (ax.get_window_extent(renderer).y0 - legend.get_window_extent(renderer).y0) \
        / fig.dpi + 3.0 / PT_PER_INCH
    if fixed_height:
        panel_in = max(h - top_in - below, 0.25 * h)
    else:
        h = top_in + panel_in + below
        fig.set_size_inches(w, h)
    ax.set_position([pos.x0, (h - top_in - panel_in) / h, pos.width, panel_in / h])
    # the anchor is in axes units: place it again for the panel's new height
    legend.remove()
    _legend_below(ax, font_size, ncol=ncol)


def _markers_inside(ax):
    """Keep every marker of the funnel whole inside the panel: a point within half a marker
    of an edge (or pinned to it, beyond the r axis) is drawn touching the edge from inside."""
    fig = ax.figure
    to_px = ax.transData
    box = ax.get_window_extent(fig.canvas.get_renderer())
    for coll in ax.collections:
        if coll.get_gid() not in ("funnel-points", "funnel-filled"):
            continue
        coll.set_clip_on(True)
        xy = np.asarray(coll.get_offsets(), dtype=float)
        if not xy.size:
            continue
        # marker half-width in pixels (sizes are in pt^2), plus the edge line
        half = (math.sqrt(float(np.max(coll.get_sizes()))) / 2.0
                + float(np.max(coll.get_linewidths())) / 2.0) * fig.dpi / PT_PER_INCH
        px = to_px.transform(xy)
        fitted = np.column_stack([np.clip(px[:, 0], box.x0 + half, box.x1 - half),
                                  np.clip(px[:, 1], box.y0 + half, box.y1 - half)])
        moved = np.any(fitted != px, axis=1)
        if moved.any():                       # the others keep their exact data coordinates
            xy[moved] = to_px.inverted().transform(fitted[moved])
            coll.set_offsets(xy)
