"""Tests and intervals of the random-effects model, computed as metafor does.

- Wald tests of the fixed effects: ``test="z"`` (standard normal) or ``test="knha"``
  (Knapp-Hartung: variances scaled by ``s2w = sum w (y - X b)^2 / (k - p)``, t with k - p df,
  QM as F(m, k - p); no truncation of ``s2w`` at 1 — metafor's ``test="adhoc"`` does that).
- Q (QE), I^2, H^2 with metafor's ``vt = (k - p) / tr(P)`` at weights 1/v.
- Prediction interval as ``predict.rma``: ``pred +- crit * sqrt(se^2 + tau2)``, crit from the
  normal or, under knha, from t(k - p).
- Q-profile confidence intervals for tau^2 (and I^2, H^2 through ``vt``) as ``confint.rma.uni``
  (type "QP", its default for every method): the tau^2 where the generalised Q statistic equals
  the chi^2(k - p) quantiles, searched on ``[0, max(100, 10 tau2)]``; ``control="metafor"``
  (default) finds them with confint's default ``uniroot`` exactly as metafor does.

All functions are vectorised over columns like ``estimators`` (arrays of shape (B,)).
"""

from __future__ import annotations

import numpy as np

from metaalliance.engine import estimators as est
from metaalliance.errors import OptionError
from metaalliance.options import DEFAULT_CONTROL


# Distribution functions through scipy.special (the ufuncs scipy.stats calls, without its
# import time and per-call argument checking): see engine/distributions.py.
from metaalliance.engine.distributions import (  # noqa: E402,F401
    chi2_isf, chi2_ppf, chi2_sf, f_sf, norm_isf, norm_sf, t_isf, t_sf)


def level_alpha(level) -> tuple[float, float]:
    """(level in percent, alpha) from 95 or 0.95, as metafor's ``.level``."""
    try:
        lv = float(level)
    except (TypeError, ValueError):
        raise OptionError(f"level: {level!r} is not a number") from None
    if np.isfinite(lv) and 50 < lv < 100:
        return lv, (100.0 - lv) / 100.0
    if np.isfinite(lv) and 0.5 < lv < 1:
        return 100.0 * lv, 1.0 - lv
    raise OptionError(f"level: {level!r} must be a percentage between 50 and 100 (e.g. 95)")


def crit_value(test: str, alpha: float, df=None):
    """Two-sided critical value: normal for "z", t(df) for "knha"."""
    if test == "knha":
        return t_isf(alpha / 2, df)
    return norm_isf(alpha / 2)


def wald(beta, se, test, alpha, df=None):
    """Statistic, p-value and CI bounds of coefficients (arrays broadcast)."""
    stat = beta / se
    if test == "knha":
        pval = 2 * t_sf(np.abs(stat), df)
    else:
        pval = 2 * norm_sf(np.abs(stat))
    crit = crit_value(test, alpha, df)
    return stat, pval, beta - crit * se, beta + crit * se


def knha_scale(Y, V, M, X, tau2, int_only=None):
    """Knapp-Hartung factor s2w = RSS / (k - p) with weights 1/(v + tau2); 0 when RSS <= eps
    (metafor), which callers must turn into an error."""
    kb = M.sum(axis=0)
    p = X.shape[1]
    w = M / (V + tau2)
    f = est.wls(X, w, Y, int_only)
    rss = (w * f.r * f.r).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rss <= np.finfo(float).eps, 0.0, rss / (kb - p))


def qm_coefficients(X) -> list:
    """The coefficients the omnibus test QM covers (metafor's default ``btt``): all but the
    intercept (a column of ones) when there is one and more than one coefficient."""
    has_int = np.all(X == 1.0, axis=0)
    p = X.shape[1]
    return [j for j in range(p) if not has_int[j]] if (has_int.any() and p > 1) else list(range(p))


def heterogeneity(Y, V, M, X, int_only=None):
    """QE (on centred y, as metafor), its df, p-value and vt = (k - p) / tr(P) per column."""
    kb = M.sum(axis=0)
    p = X.shape[1]
    df = kb - p
    Yc = est.centered(Y, M)
    w = M / V
    f = est.wls(X, w, Yc, int_only)
    qe = np.maximum(0.0, (w * f.r * f.r).sum(axis=0))
    trP = est.trace_P(f, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        vt = np.where(df > 0, df / trP, 0.0)
        qp = np.where(df > 0, chi2_sf(qe, np.maximum(df, 1)), 1.0)
    qe = np.where(df > 0, qe, 0.0)
    return qe, df, qp, vt


def i2_h2(method, tau2, vt, qe, df):
    """I^2 (percent) and H^2 as metafor: from tau2 and vt, or from Q for the EE model."""
    tau2, vt, qe, df = (np.asarray(a, dtype=float) for a in (tau2, vt, qe, df))
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "EE":
            i2 = np.where(qe > 0, np.maximum(0.0, 100 * (qe - df) / qe), 0.0)
            h2 = np.where(df > 0, qe / np.where(df > 0, df, 1), 1.0)
        else:
            i2 = np.where(df > 0, 100 * tau2 / (vt + tau2), 0.0)
            h2 = np.where(df > 0, tau2 / np.where(vt > 0, vt, 1) + 1, 1.0)
    i2 = np.where(np.isfinite(i2), i2, 0.0)
    return i2, h2


def prediction_interval(pred, se, tau2, crit):
    half = crit * np.sqrt(se * se + tau2)
    return pred - half, pred + half


def q_profile_ci(Y, V, M, X, tau2, alpha, int_only=None, subsets=None, design=None,
                 control=DEFAULT_CONTROL):
    """Q-profile CI for tau^2 as ``confint.rma.uni(type="QP")`` per column: (lower, upper).

    Bounds are clipped to metafor's search interval [0, max(100, 10 tau2)]. ``subsets``: the
    ``estimators.Subsets`` of an intercept-only model, ``design`` the ``estimators.Design`` of
    a single meta-regression with an intercept (their kernels find the same roots faster).

    ``control="metafor"`` (default): as confint() with its default control, step for step:
    ``uniroot(tol = eps^0.25, maxiter = 1000)`` on ``[0, max(100, 10 tau2)]``, a bound at 0
    where ``Q(0)`` is below its quantile, at the upper end where ``Q(upper)`` is above it.
    For ``tau2=None`` (EE models, which confint() refuses) the interval is [0, 100], i.e. what
    confint() would do for tau2 = 0. ``control="optimum"``: the exact roots (EE: unbounded).
    """
    kb = M.sum(axis=0)
    p = X.shape[1]
    df = kb - p
    crit_u = chi2_isf(alpha / 2, df)   # Q = crit_u -> lower bound
    crit_l = chi2_ppf(alpha / 2, df)   # Q = crit_l -> upper bound
    if control == "metafor":
        return _q_profile_metafor(Y, V, M, X, tau2, crit_u, crit_l, int_only, subsets, design)
    # metafor searches [0, max(100, 10 tau2)] and reports the end when the root lies beyond;
    # tau2 = None (EE models, which confint() refuses): the unbounded Q-profile root
    upper = None if tau2 is None else np.maximum(100.0, 10.0 * tau2)
    # confint.rma.uni profiles the uncentred outcome (it calls .QE.func with Y = yi)
    if design is not None and Y.shape[1] == 1:
        up = None if upper is None else float(np.asarray(upper).ravel()[0])
        lb = np.array([est.design_q_root(design, float(np.ravel(crit_u)[0]), up)[0]])
        ub = np.array([est.design_q_root(design, float(np.ravel(crit_l)[0]), up)[0]])
        return lb, ub
    if subsets is not None:
        lb, _ = est.subset_q_root(subsets, crit_u, upper)
        ub, _ = est.subset_q_root(subsets, crit_l, upper)
        return lb, ub
    lb, _ = est.q_root(Y, V, M, X, crit_u, upper, int_only)
    ub, _ = est.q_root(Y, V, M, X, crit_l, upper, int_only)
    return lb, ub


def _q_profile_metafor(Y, V, M, X, tau2, crit_u, crit_l, int_only, subsets, design):
    """``q_profile_ci`` under confint.rma.uni's default control (see there)."""
    B = Y.shape[1]
    if tau2 is None:
        upper = np.full(B, est.MF_TAU2_MAX)
    else:
        # confint: tau2.max = max(100, x$tau2 * 10, tau2.min * 10), tau2.min = min(0, tau2)
        upper = np.maximum(est.MF_TAU2_MAX, np.asarray(tau2, dtype=float) * 10.0)
    crit_u = np.broadcast_to(np.asarray(crit_u, dtype=float), (B,))
    crit_l = np.broadcast_to(np.asarray(crit_l, dtype=float), (B,))
    one = None
    if design is not None and B == 1:
        def one(t):
            return design.q(t)[0]
    elif subsets is not None and subsets.B == 1 and B == 1:
        def one(t):
            sw, swy, swy2 = subsets.sums1(t, 1)
            return swy2 - swy ** 2 / sw
    if one is not None:
        up = float(upper[0])
        lb = est.mf_bounded_root1(one, float(crit_u[0]), up, est.MF_CI_MAXITER)[0]
        ub = est.mf_bounded_root1(one, float(crit_l[0]), up, est.MF_CI_MAXITER)[0]
        return np.array([lb]), np.array([ub])
    if subsets is not None:
        def q(t, idx):
            sw, swy, swy2 = subsets.sums(t, idx, 1)
            return swy2 - swy ** 2 / sw
    else:
        if int_only is None:
            int_only = est.is_intercept_only(X)

        def q(t, idx):
            # confint.rma.uni profiles the uncentred outcome (.QE.func with Y = yi)
            return est.q_stat(Y[:, idx], V[:, idx], M[:, idx], X, t, int_only)
    lb = est.mf_bounded_root(q, crit_u, upper, est.MF_CI_MAXITER)[0]
    ub = est.mf_bounded_root(q, crit_l, upper, est.MF_CI_MAXITER)[0]
    return lb, ub


def i2_h2_from_tau2(tau2, vt):
    """I^2 (percent) and H^2 bounds from tau^2 bounds (confint.rma.uni)."""
    return 100 * tau2 / (vt + tau2), tau2 / vt + 1
