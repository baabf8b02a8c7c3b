"""The fitted selection function of a selection model (metafor's ``plot(selmodel(...))``).

``selection_plot(res)`` draws the relative likelihood of selection w(p) against the one-sided
p-value: a step function for ``type = "stepfun"`` (the 3PSM: 1 for p <= .025 and delta beyond),
a curve for the smooth types; the observed p-values are marked along the bottom. scikit-learn's
convention: ``ax=None`` creates a figure (not pyplot), the axes are returned, no ``plt.show()``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["selection_function_data", "selection_plot"]


def selection_function_data(res, n: int = 1001) -> dict:
    """p grid (0..1) and w(p) of a fitted ``SelectionResult``; the observed p-values."""
    p = np.linspace(0.0, 1.0, n)
    if res.type == "stepfun":
        p = np.unique(np.r_[p, np.asarray(res.steps), np.nextafter(np.asarray(res.steps), 2)])
        p = p[(p >= 0) & (p <= 1)]
    w = np.asarray(res.weights(np.clip(p, 1e-5, 1 - 1e-5)), dtype=float)
    return {"p": p, "w": w}


def selection_plot(res, ax=None, pvalues=None):
    """Draw w(p) of ``res`` (a ``SelectionResult``) into ``ax`` (new figure if None)."""
    if ax is None:
        from matplotlib.figure import Figure

        from metaalliance.figures.plots import journal_rc
        import matplotlib

        with matplotlib.rc_context(journal_rc()):
            fig = Figure(figsize=(3.46, 2.4), layout="constrained")
            ax = fig.add_subplot(1, 1, 1)
            return _draw(res, ax, pvalues)
    return _draw(res, ax, pvalues)


def _draw(res, ax, pvalues):
    d = selection_function_data(res)
    ax.plot(d["p"], d["w"], color="black", lw=1.0)
    if pvalues is not None and len(pvalues):
        ax.plot(np.asarray(pvalues), np.zeros(len(pvalues)), "|", color="0.3", ms=6,
                label="observed p-values")
    for s in res.steps:
        if 0 < s < 1:
            ax.axvline(s, color="0.6", lw=0.6, ls=":")
    top = max(1.05, float(np.nanmax(d["w"])) * 1.05)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.05 * top, top)
    ax.set_xlabel(f"One-sided p-value ({res.alternative})")
    ax.set_ylabel("Relative likelihood of selection")
    name = "3PSM (step at .025)" if res.type == "stepfun" and tuple(res.steps) == (0.025, 1.0) \
        else res.type
    ax.set_title(f"Fitted selection function: {name}", fontsize="medium")
    return ax
