"""Figures of the bias and sensitivity analyses: funnel (contour-enhanced, with trim-and-fill
studies), GOSH and Baujat plots, and the plain data behind them.

The data functions (``funnel_data``, ``gosh_data``) return coordinates and regions as
numpy arrays, so another plotting layer (``plots.py``, a report, a notebook) can draw them its
own way; the ``*_plot`` functions draw them with matplotlib following scikit-learn's
convention: ``ax=None`` creates a figure (``matplotlib.figure.Figure``, not pyplot), a given
``ax`` is drawn into, the axes are returned and ``plt.show()`` is never called. matplotlib is
imported inside the drawing functions only.

Funnel plot as metafor's ``funnel()``: effect on x, standard error on y with 0 at the top, a
vertical line at the model estimate and the pseudo confidence region estimate +- z se
(``level``, tau^2 not added, metafor's default). ``contours=True`` shades, around 0, the
regions where a study would be significant at p < .10, .05 and .01 (two-sided z test;
Peters et al. 2008; metafor's ``funnel(res, level = c(90, 95, 99), refline = 0)``).
Studies filled in by trim and fill are drawn as open circles, as metafor draws them.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from metaalliance.errors import DataError

__all__ = ["funnel_data", "funnel_plot", "gosh_data", "gosh_plot", "baujat_plot",
           "CONTOUR_LEVELS"]

#: two-sided significance levels of the contour-enhanced funnel plot
CONTOUR_LEVELS = (0.10, 0.05, 0.01)
#: grey shades of the contour regions (p < .10, < .05, < .01), light to dark
CONTOUR_SHADES = ("0.90", "0.78", "0.64")
#: headroom below the largest standard error (metafor's funnel() uses the largest se itself)
SE_HEADROOM = 1.05


def _level_alpha(level) -> float:
    level = float(level)
    return 1 - level / 100 if level > 1 else 1 - level


def funnel_data(fit, trimfill=None, level: Optional[float] = None,
                contours: Sequence[float] = CONTOUR_LEVELS) -> dict:
    """Everything a funnel plot shows, as arrays.

    Returns a dict with
    ``yi``, ``se``, ``labels`` (the studies); ``filled_yi``, ``filled_se``, ``filled_labels``
    (trim-and-fill studies; empty without ``trimfill``); ``estimate``; ``adjusted_estimate``
    (trim and fill, or None); ``se_top`` (bottom of the plot); ``pseudo_ci``: dict ``se``,
    ``lower``, ``upper`` (the triangle estimate +- z se at ``level``); ``contours``: one dict
    per significance level p with ``p``, ``z`` = z_(1 - p/2) and the boundary lines ``lower``
    = -z se, ``upper`` = z se at ``se`` = [0, se_top]; ``regions``: polygons (lists of (x, se)
    vertices) of the bands p in (.05, .10], (.01, .05] and p < .01 on both sides of 0, each with
    its ``p_upper`` / ``p_lower`` bounds.
    """
    from metaalliance.engine import distributions as stats

    yi = np.asarray(fit.yi, dtype=float)
    vi = np.asarray(fit.vi, dtype=float)
    if yi.size == 0 or np.any(~np.isfinite(yi)) or np.any(~np.isfinite(vi)) or np.any(vi <= 0):
        raise DataError("funnel plot: needs finite yi and positive vi")
    se = np.sqrt(vi)
    level = float(getattr(fit, "level", 95) if level is None else level)
    crit = float(stats.norm.isf(_level_alpha(level) / 2))
    if trimfill is not None and trimfill.k0 > 0:
        fyi = np.asarray(trimfill.filled_yi, dtype=float)
        fse = np.sqrt(np.asarray(trimfill.filled_vi, dtype=float))
        flab = list(trimfill.filled_labels)
        adjusted = float(trimfill.fit.estimate)
    else:
        fyi, fse, flab = np.zeros(0), np.zeros(0), []
        adjusted = None if trimfill is None else float(trimfill.fit.estimate)
    se_top = float(max(se.max(), fse.max() if fse.size else 0.0)) * SE_HEADROOM
    est = float(fit.estimate)
    sev = np.array([0.0, se_top])
    ps = sorted((float(p) for p in contours), reverse=True)
    lines = [{"p": p, "z": float(stats.norm.isf(p / 2)), "se": sev,
              "lower": -float(stats.norm.isf(p / 2)) * sev,
              "upper": float(stats.norm.isf(p / 2)) * sev} for p in ps]
    regions = []
    zs = [c["z"] for c in lines]
    # the last band runs to the edge of the visible effect range
    span = max(float(np.abs(np.concatenate([yi, fyi])).max()) if yi.size else 0.0,
               (abs(est) + crit * se_top), (zs[-1] if zs else crit) * se_top) * 1.5
    for i, c in enumerate(lines):
        z_in = c["z"]
        p_lower = ps[i + 1] if i + 1 < len(ps) else 0.0
        for sign in (-1.0, 1.0):
            if i + 1 < len(lines):
                z_out = lines[i + 1]["z"]
                poly = [(0.0, 0.0), (sign * z_in * se_top, se_top), (sign * z_out * se_top, se_top)]
            else:
                # beyond the last contour: out to the edge, then along it
                poly = [(0.0, 0.0), (sign * z_in * se_top, se_top), (sign * span, se_top),
                        (sign * span, 0.0)]
            regions.append({"p_upper": c["p"], "p_lower": p_lower, "side": int(sign),
                            "polygon": np.array(poly)})
    labels = list(getattr(fit, "labels", None) or [f"Study {i + 1}" for i in range(yi.size)])
    return {
        "yi": yi, "se": se, "labels": labels,
        "filled_yi": fyi, "filled_se": fse, "filled_labels": flab,
        "estimate": est, "adjusted_estimate": adjusted, "se_top": se_top, "level": level,
        "pseudo_ci": {"se": sev, "lower": est - crit * sev, "upper": est + crit * sev},
        "contours": lines, "regions": regions,
    }


def _new_axes(width_in=5.5, height_in=3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    return fig.add_subplot(1, 1, 1)


def _effect_label(fit) -> str:
    return "Fisher's z" if getattr(fit, "measure", "generic") == "ZCOR" else "Observed outcome"


def funnel_plot(fit, ax=None, *, trimfill=None, contours: bool = False,
                level: Optional[float] = None, legend: bool = True):
    """Funnel plot of a fitted model; see the module docstring. Returns the axes.

    ``trimfill``: a ``bias.TrimFillResult`` (its filled studies are drawn open, its estimate
    as a dashed line). ``contours``: shade the regions of significance at .10/.05/.01 around 0.
    Artists carry gids: funnel-points, funnel-filled, funnel-estimate, funnel-adjusted,
    funnel-pseudo-ci, funnel-contour.
    """
    from matplotlib.patches import Polygon

    d = funnel_data(fit, trimfill=trimfill, level=level)
    if ax is None:
        ax = _new_axes()
    top = d["se_top"]
    if contours:
        for reg in d["regions"]:
            i = [c["p"] for c in d["contours"]].index(reg["p_upper"])
            shade = CONTOUR_SHADES[min(i, len(CONTOUR_SHADES) - 1)]
            label = None
            if reg["side"] > 0:
                hi = f"{reg['p_upper']:.2f}".lstrip("0")
                lo = f"{reg['p_lower']:.2f}".lstrip("0")
                label = f"p < {hi}" if reg["p_lower"] == 0 else f"{lo} < p < {hi}"
            ax.add_patch(Polygon(reg["polygon"], closed=True, facecolor=shade,
                                 edgecolor="none", zorder=0, gid="funnel-contour", label=label))
    ci = d["pseudo_ci"]
    ax.plot([ci["lower"][1], d["estimate"], ci["upper"][1]], [top, 0, top], color="black",
            lw=0.8, ls=":", zorder=1, gid="funnel-pseudo-ci",
            label=f"{d['level']:g}% pseudo CI")
    ax.plot([d["estimate"], d["estimate"]], [0, top], color="black", lw=0.8, zorder=1,
            gid="funnel-estimate", label="estimate")
    if d["adjusted_estimate"] is not None and trimfill is not None and trimfill.k0 > 0:
        ax.plot([d["adjusted_estimate"]] * 2, [0, top], color="black", lw=0.8, ls="--",
                zorder=1, gid="funnel-adjusted", label="trim-and-fill estimate")
    ax.scatter(d["yi"], d["se"], s=18, color="black", zorder=3, gid="funnel-points",
               label="studies")
    if d["filled_yi"].size:
        ax.scatter(d["filled_yi"], d["filled_se"], s=18, facecolors="white",
                   edgecolors="black", zorder=3, gid="funnel-filled",
                   label="filled (trim and fill)")
    xs = np.concatenate([d["yi"], d["filled_yi"], ci["lower"], ci["upper"]])
    if contours:
        z = max(c["z"] for c in d["contours"])
        xs = np.concatenate([xs, [-z * top, z * top]])
    pad = 0.05 * float(xs.max() - xs.min() or 1.0)
    ax.set_xlim(float(xs.min()) - pad, float(xs.max()) + pad)
    ax.set_ylim(top, 0)
    ax.set_xlabel(_effect_label(fit))
    ax.set_ylabel("Standard error")
    if legend:
        # outside the panel, so that it never hides a study
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  frameon=False, fontsize="x-small")
    return ax


def gosh_data(gosh_result, highlight: Optional[int] = None) -> dict:
    """Points of a GOSH plot: ``estimate`` (x) and ``i2`` (y, percent) per subset, and
    ``highlight`` (bool per subset: contains study number ``highlight``, 0-based)."""
    est = np.asarray(gosh_result.estimate, dtype=float)
    i2 = np.asarray(gosh_result.i2, dtype=float)
    mark = np.zeros(est.size, dtype=bool)
    if highlight is not None:
        if not 0 <= int(highlight) < gosh_result.incl.shape[1]:
            raise DataError(f"highlight: no study number {highlight} (0-based, k = "
                            f"{gosh_result.incl.shape[1]})")
        mark = np.asarray(gosh_result.incl[:, int(highlight)], dtype=bool)
    return {"estimate": est, "i2": i2, "highlight": mark}


def gosh_plot(gosh_result, ax=None, *, highlight: Optional[int] = None):
    """GOSH plot (Olkin et al. 2012): I^2 against the estimate of every subset, as the
    scatter panel of metafor's ``plot(gosh(res))``; ``highlight`` colours the subsets that
    contain that study (0-based), as ``plot(sav, out = i)``. Returns the axes (gids
    gosh-points, gosh-highlight)."""
    d = gosh_data(gosh_result, highlight)
    if ax is None:
        ax = _new_axes()
    n = d["estimate"].size
    alpha = float(min(1.0, max(0.15, 500.0 / max(n, 1))))
    rest = ~d["highlight"]
    ax.scatter(d["estimate"][rest], d["i2"][rest], s=4, color="black", alpha=alpha, lw=0,
               gid="gosh-points", label="subsets" if highlight is not None else None)
    if highlight is not None:
        lab = gosh_result.labels[int(highlight)]
        ax.scatter(d["estimate"][~rest], d["i2"][~rest], s=4, color="tab:red", alpha=alpha,
                   lw=0, gid="gosh-highlight", label=f"with {lab}")
        ax.legend(loc="best", frameon=False, fontsize="small")
    measure = getattr(gosh_result, "measure", "generic")
    ax.set_xlabel("Estimate (Fisher's z)" if measure == "ZCOR" else "Estimate")
    ax.set_ylabel("I\u00b2 (%)")
    ax.set_ylim(bottom=0)
    return ax


def baujat_plot(baujat_result, ax=None, *, annotate: bool = True):
    """Baujat plot as metafor's ``baujat()``: squared Pearson residual (contribution to
    heterogeneity) on x, influence on the result on y; points labelled by study number
    (1-based, metafor's default ``symbol = "ids"``). Returns the axes (gid baujat-points)."""
    if ax is None:
        ax = _new_axes()
    x = np.asarray(baujat_result.x, dtype=float)
    y = np.asarray(baujat_result.y, dtype=float)
    ax.scatter(x, y, s=10, color="black", gid="baujat-points")
    if annotate:
        for i, (a, b) in enumerate(zip(x, y)):
            ax.annotate(str(i + 1), (a, b), textcoords="offset points", xytext=(3, 3),
                        fontsize="x-small")
    ax.set_xlabel("Squared Pearson residual")
    ax.set_ylabel("Influence on overall result")
    return ax
