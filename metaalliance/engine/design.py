"""Single meta-regressions: one dataset, one design ``X``, scalar tau^2 (``Design``).

Fisher scoring and the Q-profile roots from weighted cross products
``[w, w^2, w^3] @ [vec(x x'), x y, y^2, 1]``: one BLAS product per evaluation and p x p
algebra for the rest, about 12 numpy calls per step instead of 25. Same estimators and
stopping rules as ``tau2`` (checked against it in ``tests/test_batch.py``).
"""

from __future__ import annotations

import numpy as np

from metaalliance.engine.control import (
    CONV_TOL, CONV_TOL_ACCEPT, ITERATIVE, LL0_TOL, MAXITER, MF_THRESHOLD, Tau2Fit,
    mf_bounded_root1, mf_scoring1, rma_tau2_max)
from metaalliance.engine.tau2 import _raw_closed_form, _tau2_fit, loglik
from metaalliance.engine.wls import design_products
from metaalliance.errors import ModelError
from metaalliance.options import DEFAULT_CONTROL


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
