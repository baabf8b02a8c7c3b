"""tau^2 estimators of the univariate random-effects model, computed as metafor's ``rma.uni``.

Pure numpy and vectorised: every estimator works on a batch of ``B`` data columns at once
(``Y`` is ``(k, B)``), so that permutation tests, leave-one-out, cumulative analyses and GOSH
fit thousands of models in one call. All quantities are built from ``O(k p^2)`` formulas;
no ``k x k`` matrix is ever formed, so memory is linear in ``k``.

Estimators (metafor's names and formulas, ``metafor:::rma.uni`` version 3.8-1):

====  ==========================================================================================
EE    equal-effects model, tau^2 = 0
DL    DerSimonian-Laird: (Q - (k - p)) / tr(P), P at weights 1/v
HE    Hedges (unweighted method of moments): (RSS_ols - tr(P_ols V)) / (k - p)
HS    Hunter-Schmidt: (Q - k) / sum(1/v)
SJ    Sidik-Jonkman: tau0 * Q(tau0) / (k - p), tau0 = mean((y - mean(y))^2)
ML    maximum likelihood, Fisher scoring with step halving, started at max(0, HE)
REML  restricted maximum likelihood, Fisher scoring with step halving, started at max(0, HE)
EB    empirical Bayes (Morris); fixed point Q(tau^2) = k - p
PM    Paule-Mandel; root of Q(tau^2) = k - p
====  ==========================================================================================

Every estimate is truncated at 0 as metafor does (``tau2.min = 0``). As in metafor, the
outcome is centred (``Ymc``) before tau^2 is estimated; with an intercept in the model this
changes nothing, without one it reproduces metafor's numbers.

Convergence: ``control``. Every estimator takes ``control`` (``options.CONTROLS``):

- ``"metafor"`` (the default, ``options.DEFAULT_CONTROL``) reproduces metafor 3.8's default
  control of ``rma.uni`` step for step, so that results equal a plain ``rma(yi, vi)`` call:
  ML/REML/EB start at ``max(0, HE)``; Fisher scoring (EB: metafor's EB update
  ``adj = (Q k / (k - p) - k) / sum(w)``) with metafor's step halving
  (``while (tau2 + adj < 0) adj <- adj / 2``) stops when ``|change| <= threshold = 1e-5`` and
  fails after ``maxiter = 100`` iterations; metafor's ll0check then sets tau^2 to 0 when
  ``ll(0) - ll(tau2) > eps^0.25`` and ``tau2 > 1e-5``. PM is R's ``uniroot`` (``uniroot``
  module: an exact port of Brent's method as R runs it) on
  ``[0, tau2.max = max(100, 10 mad(yi)^2)]`` with ``tol = eps^0.25``, ``maxiter = 100``, and 0
  when ``Q(0) < k - p``. Both stop ~1e-5 (absolute) short of the optimum, exactly where
  metafor stops. Where metafor itself fails (Fisher scoring does not converge in 100
  iterations: "Fisher scoring algorithm did not converge"; ``Q(tau2.max) > k - p``: "Value
  of 'tau2.max' too low") metafor stops with an error; we compute the column as ``"optimum"``
  does and flag it (``Tau2Fit.safeguarded``; single fits warn and say so in the result).
- ``"optimum"`` iterates to the optimum itself: until the change is below
  ``CONV_TOL * (tau2 + vbar)`` (``vbar`` = harmonic mean of the sampling variances); the
  reference tests compare it with metafor run with
  ``control = list(threshold = 1e-10, tol = 1e-12)``.

EB: metafor's EB iteration ``tau2 += (Q * k / (k - p) - k) / sum(w)`` has the fixed point
``Q(tau2) = k - p`` (truncated at 0), the same equation PM solves; under ``"optimum"`` we solve
it with the same safeguarded Newton root finder as PM, which gives metafor's EB value at the
optimum to full precision; under ``"metafor"`` we run metafor's iteration itself (it stops
elsewhere than PM's uniroot, as in metafor).

The loops of ``"metafor"`` are written once (``mf_scoring``, ``mf_bounded_root`` and their
one-fit versions) and driven by each kernel's step or Q function: the column-wise code
(``_tau2_fit``: permutations, simulated batches), ``Subsets`` (single intercept-only fits,
leave-one-out, cumulative, GOSH) and ``Design`` (single meta-regressions). Each kernel's
arithmetic differs from metafor's k x k matrix algebra only by rounding, so results agree with
metafor's to ~1e-14 relative; a stopping decision could only differ if a step's change fell
within rounding error of 1e-5 (never seen).

Why not pymare or statsmodels: pymare offers DL, HE and ML/REML, the latter by a bounded
scalar minimisation whose stopping tolerance, not the likelihood, sets the last digits, and has
no HS, SJ, EB, PM or Q-profile intervals; statsmodels' ``combine_effects`` pools without
moderators with DL/PM only. Neither vectorises over thousands of refits with masks.

Non-convergence under ``"optimum"`` (ML/REML only). Plain Fisher scoring (metafor's
algorithm, from metafor's start) can oscillate and diverge when observed and expected
information differ a lot; metafor then stops with "Fisher scoring algorithm did not converge".
We then restart with safeguarded Fisher scoring on a bracket of the score (bisection when a
step leaves the bracket), which always converges to the likelihood maximum;
``Tau2Fit.safeguarded`` flags those columns. Only if that too fails does the column fall back
to DL (``Tau2Fit.converged = False``; single fits warn with ``MetaAllianceWarning``, see
``models``).
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import numpy as np

from metaalliance.errors import DataError, ModelError
from metaalliance.options import CONTROLS, DEFAULT_CONTROL, METHODS, check_option
from metaalliance.engine.uniroot import uniroot, uniroot1

# --- the modules this one was split into; their names are re-exported here (facade) ---
from metaalliance.engine.control import (  # noqa: F401
    CONV_TOL, CONV_TOL_ACCEPT, EVTOL, ITERATIVE, LL0_TOL, MAD_CONSTANT, MAXITER, MF_CI_MAXITER,
    MF_MAXITER, MF_TAU2_MAX, MF_THRESHOLD, MF_TOL, Tau2Fit, _halve, _r_median_sorted,
    check_control, mf_bounded_root, mf_bounded_root1, mf_scoring, mf_scoring1, r_mad,
    rma_tau2_max)
from metaalliance.engine.wls import (  # noqa: F401
    FEW_COLUMNS, WLS, _cross, _cross_f, _trAC, _trmm, as_batch, centered,
    check_design, design_products, is_intercept_only, q_stat, single_threaded_blas, trace_P,
    trace_PP, trace_PPV, trace_PV, trace_PVPV, vbar, wls)
from metaalliance.engine.tau2 import (  # noqa: F401
    _eb_step, _fisher_scoring, _fs_step, _halved_step, _ll0_reset, _raw_closed_form, _score,
    _score_root, _tau2_fit, _tau2_fit_metafor, loglik, q_root, se_tau2, sj_tau0)
from metaalliance.engine.subsets import (  # noqa: F401
    SUBSET_BLOCK_CELLS, SUBSET_BLOCK_CELLS_ITERATIVE, Subsets, _as_subsets, _subset_closed_form,
    _subset_eb_adj, _subset_fisher, _subset_fisher_1, _subset_fs_adj, _subset_ll0_reset,
    _subset_q_root_1, _subset_tau2_blocks, _subset_tau2_metafor, shared_column, subset_q_root,
    subset_tau2)


def tau2_fit(Y, V, method="REML", X=None, mask=None, control=DEFAULT_CONTROL) -> Tau2Fit:
    """tau^2 for every column of Y with convergence information (see ``tau2_batch``)."""
    check_option("method", method, METHODS)
    check_control(control)
    S = _as_subsets(Y, V, X, mask)
    if S is not None:
        with single_threaded_blas():
            return _subset_tau2_blocks(S, method, control)
    if mask is not None and isinstance(Y, np.ndarray) and Y.ndim == 1:
        Y = np.broadcast_to(Y[:, None], np.shape(mask))
    Y, V, X, M, _ = as_batch(Y, V, X, mask)
    return _tau2_fit(Y, V, X, M, method, control)


def tau2_batch(Y, V, method="REML", X=None, mask=None, control=DEFAULT_CONTROL):
    """tau^2 for every column of ``Y``; vectorised, memory linear in k.

    Parameters
    ----------
    Y : (k, B) array (or (k,)) of effect sizes, one model per column; with a 2-d ``mask``,
        a (k,) vector means the same data in every column (subsets of one dataset: the
        ``Subsets`` kernel, O(k B) memory for the mask only).
    V : (k,) or (k, B) sampling variances.
    method : one of ``options.METHODS``.
    X : (k, p) design matrix shared by all columns (None: intercept only).
    mask : optional (k, B) bool, rows taking part in each column's fit (leave-one-out,
        cumulative, GOSH subsets).
    control : "metafor" (default: metafor's default control, step for step) or "optimum"
        (iterate to the optimum); see the module docstring.

    Returns
    -------
    (B,) array (a float for 1-d ``Y``). Columns whose Fisher scoring does not converge get
    the DL value, as single fits do; use ``tau2_fit`` to see which.

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([0.1, 0.3, 0.35, 0.6]); vi = np.array([0.01, 0.02, 0.015, 0.03])
    >>> round(float(tau2_batch(yi, vi, "DL")), 6)
    0.022437
    """
    check_option("method", method, METHODS)
    check_control(control)
    if mask is not None and np.ndim(mask) == 2:
        return tau2_fit(Y, V, method, X, mask, control).tau2
    Y, V, X, M, squeeze = as_batch(Y, V, X, mask)
    fit = _tau2_fit(Y, V, X, M, method, control)
    return float(fit.tau2[0]) if squeeze else fit.tau2


# --------------------------------------------------------------------------------------------
# single meta-regression fits: one dataset, one design, scalar tau^2


class Design:
    """A meta-regression of one dataset ``(y, v)`` on ``X`` (which must contain an intercept
    column), evaluated at scalar tau^2 values through weighted cross products:
    ``[w, w^2, w^3] @ [vec(x x'), x y, y^2, 1]`` is one BLAS product per evaluation, and the
    rest is p x p algebra. This replaces ~25 numpy calls per Fisher-scoring or root-finding
    step of the column-wise code (whose cost is call overhead at B = 1) by ~12.

    ``y`` is centred at its mean (metafor's ``Ymc``); with an intercept in the model every
    quantity used here (tau^2, Q) is shift-invariant, and centring keeps the expansions
    ``y'PPy = sum w^2 y^2 - 2 b' X'W^2 y + b' X'W^2 X b`` well-conditioned (rounding error of
    tau^2 about ``eps * mean(y^2)`` in absolute terms).
    """

    def __init__(self, X, y, v):
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        self.X, self.v, self.y_raw = X, np.asarray(v, dtype=float), y
        self.k, self.p = X.shape
        yc = y - y.mean()
        self.y = yc
        self.Z = np.column_stack([design_products(X), X * yc[:, None], yc * yc,
                                  np.ones(self.k)])
        pp = self.p * self.p
        self._slices = (slice(0, pp), slice(pp, pp + self.p), pp + self.p, pp + self.p + 1)
        self.scale = self.k / float((1.0 / self.v).sum())

    def moments(self, t: float, order: int):
        """[(C, b, c, s)] for a = 1..order: C = X'W^a X, b = X'W^a y, c = sum w^a y^2,
        s = sum w^a (W = diag 1/(v + t))."""
        w = 1.0 / (self.v + t)
        if order == 1:
            G = (w @ self.Z)[None, :]
        else:
            Wm = [w, w * w]
            if order >= 3:
                Wm.append(Wm[1] * w)
            G = np.stack(Wm) @ self.Z
        sC, sb, ic, isw = self._slices
        p = self.p
        return [(g[sC].reshape(p, p), g[sb], float(g[ic]), float(g[isw])) for g in G]

    def q(self, t: float):
        """Q(t) = y'P y and y'PPy (= -dQ/dt)."""
        (C1, b1, c1, _), (C2, b2, c2, _) = self.moments(t, 2)
        beta = np.linalg.solve(C1, b1)
        return c1 - float(beta @ b1), c2 - 2.0 * float(beta @ b2) + float(beta @ C2 @ beta)


def _design_fs_step(D: Design, method, t: float) -> float:
    """metafor's ML/REML Fisher-scoring step of one meta-regression at tau2 ``t``."""
    m = D.moments(t, 2 if method == "ML" else 3)
    (C1, b1, c1, sw), (C2, b2, c2, sw2) = m[0], m[1]
    try:
        A = np.linalg.inv(C1)
    except np.linalg.LinAlgError:
        raise ModelError("the weighted design matrix X'WX is singular") from None
    beta = A @ b1
    yPPy = c2 - 2.0 * float(beta @ b2) + float(beta @ C2 @ beta)
    AC2 = A @ C2
    if method == "ML":
        return (yPPy - sw) / sw2
    C3 = m[2][0]
    trP = sw - float(np.trace(AC2))
    trPP = sw2 - 2.0 * float(np.sum(A * C3)) + float(np.sum(AC2 * AC2.T))
    return (yPPy - trP) / trPP


def _design_eb_step(D: Design, t: float) -> float:
    """metafor's EB update ``(Q k / (k - p) - k) / sum w`` of one meta-regression."""
    (C1, b1, c1, sw), = D.moments(t, 1)
    try:
        beta = np.linalg.solve(C1, b1)
    except np.linalg.LinAlgError:
        raise ModelError("the weighted design matrix X'WX is singular") from None
    q = c1 - float(beta @ b1)
    k = float(D.k)
    return (q * k / (k - D.p) - k) / sw


def design_fisher(D: Design, method, start):
    """ML/REML Fisher scoring with metafor's step halving for one fit (as
    ``_fisher_scoring``); returns (tau2, converged, iterations)."""
    t = float(start)
    last = np.inf
    it = 0
    for it in range(1, MAXITER + 1):
        adj = _design_fs_step(D, method, t)
        if not np.isfinite(adj):
            adj = 0.0
        if t <= 0 and adj < 0:
            adj = 0.0
        while t + adj < 0:
            adj /= 2.0
        t += adj
        last = abs(adj)
        if last <= CONV_TOL * (t + D.scale):
            return t, True, it
    return t, bool(last <= CONV_TOL_ACCEPT * (t + D.scale)), it


def design_q_root(D: Design, target: float, upper=None):
    """``q_root`` for one fit: (tau2, iterations) with the same rules."""
    target = float(target)
    q0, _ = D.q(0.0)
    if not q0 > target:
        return 0.0, 0
    lo = 0.0
    if upper is not None:
        hi = float(upper)
        if D.q(hi)[0] >= target:
            return hi, 0
    else:
        hi = max(D.scale, float(np.mean(D.y * D.y)))
        hi = hi if hi > 0 else 1.0
        for _ in range(2000):
            if not D.q(hi)[0] > target:
                break
            lo, hi = hi, hi * 2.0
    t = lo
    it = 0
    for it in range(1, MAXITER + 1):
        qv, yPPy = D.q(t)
        fval = qv - target
        if fval > 0:
            lo = t
        else:
            hi = t
        new = t + fval / yPPy if yPPy != 0 else np.nan
        if not np.isfinite(new) or new <= lo or new >= hi:
            new = 0.5 * (lo + hi)
        if fval == 0:
            new = t
        change = abs(new - t)
        t = new
        tol = CONV_TOL * (new + D.scale)
        if change <= tol or hi - lo <= tol or fval == 0:
            break
    return t, it


def design_tau2(D: Design, method, control=DEFAULT_CONTROL) -> Tau2Fit:
    """tau^2 of one meta-regression (arrays of shape (1,)), as ``_tau2_fit``: closed forms and
    the checks through the column-wise code, the iterations through ``Design``."""
    k, p = D.k, D.p
    Y, V, M = D.y[:, None], D.v[:, None], np.ones((k, 1))
    if method not in ITERATIVE:
        return _tau2_fit(Y, V, D.X, M, method)
    if k <= p:
        raise ModelError(f"{method} needs more studies than model coefficients (k = {k}, p = {p})")
    one = np.ones(1, dtype=bool)
    no = np.zeros(1, dtype=bool)
    if control == "metafor":
        return _design_tau2_metafor(D, method, Y, V, M)
    if method in ("PM", "EB"):
        t, it = design_q_root(D, k - p)
        return Tau2Fit(np.array([t]), one, np.array([it]), no, no)
    start = max(float(_raw_closed_form("HE", Y, V, M, D.X, False, np.array([k]), p)[0]), 0.0)
    t, conv, it = design_fisher(D, method, start)
    if not conv:
        # plain Fisher scoring failed: the column-wise code has the bracketed fallback
        return _tau2_fit(Y, V, D.X, M, method, control)
    reset = False
    if t > CONV_TOL * D.scale:
        ll0 = loglik(method, Y, V, M, D.X, np.zeros(1), False)[0]
        ll1 = loglik(method, Y, V, M, D.X, np.array([t]), False)[0]
        if ll0 - ll1 > LL0_TOL:
            t, reset = 0.0, True
    return Tau2Fit(np.array([max(t, 0.0)]), one, np.array([it]), np.array([reset]), no)


def _design_tau2_metafor(D: Design, method, Y, V, M) -> Tau2Fit:
    """``design_tau2`` (ML, REML, EB, PM) under metafor's default control; where metafor fails
    the fit is computed as under "optimum" and flagged safeguarded."""
    k, p = D.k, D.p
    one = np.ones(1, dtype=bool)
    no = np.zeros(1, dtype=bool)
    if method == "PM":
        t, it, above = mf_bounded_root1(lambda x: D.q(x)[0], k - p,
                                        float(rma_tau2_max(D.y_raw)[0]))
        if above:
            t, _ = design_q_root(D, k - p)
        return Tau2Fit(np.array([t]), one, np.array([it]), no, np.array([above]))
    start = max(float(_raw_closed_form("HE", Y, V, M, D.X, False, np.array([k]), p)[0]), 0.0)
    if method == "EB":
        t, conv, it = mf_scoring1(lambda x: _design_eb_step(D, x), start)
    else:
        t, conv, it = mf_scoring1(lambda x: _design_fs_step(D, method, x), start)
    if not conv:
        sub = design_tau2(D, method, "optimum")
        return Tau2Fit(sub.tau2, sub.converged, np.array([it]), sub.reset_to_zero,
                       sub.converged.copy())
    reset = False
    if method != "EB" and t > MF_THRESHOLD:
        ll0 = loglik(method, Y, V, M, D.X, np.zeros(1), False)[0]
        ll1 = loglik(method, Y, V, M, D.X, np.array([t]), False)[0]
        if ll0 - ll1 > LL0_TOL:
            t, reset = 0.0, True
    return Tau2Fit(np.array([max(t, 0.0)]), one, np.array([it]), np.array([reset]), no)
