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

Convergence. metafor stops Fisher scoring when the absolute change of tau^2 drops below
``threshold = 1e-5`` and finds the PM root with ``uniroot(tol = eps^0.25)``; both can leave
tau^2 about 1e-5 from the optimum. We iterate until the change is below
``CONV_TOL * (tau2 + vbar)`` (``vbar`` = harmonic mean of the sampling variances), i.e. to the
optimum itself; the reference tests therefore compare with metafor run with
``control = list(threshold = 1e-10, tol = 1e-12)``.

EB: metafor's EB iteration ``tau2 += (Q * k / (k - p) - k) / sum(w)`` has the fixed point
``Q(tau2) = k - p`` (truncated at 0), the same equation PM solves; we solve it with the same
safeguarded Newton root finder, which gives metafor's EB value to full precision.

Why not pymare or statsmodels: pymare offers DL, HE and ML/REML, the latter by a bounded
scalar minimisation whose stopping tolerance, not the likelihood, sets the last digits, and has
no HS, SJ, EB, PM or Q-profile intervals; statsmodels' ``combine_effects`` pools without
moderators with DL/PM only. Neither vectorises over thousands of refits with masks.

Non-convergence (ML/REML only). Plain Fisher scoring (metafor's algorithm, from metafor's
start) can oscillate and diverge when observed and expected information differ a lot; metafor
then stops with "Fisher scoring algorithm did not converge". We then restart with safeguarded
Fisher scoring on a bracket of the score (bisection when a step leaves the bracket), which
always converges to the likelihood maximum; ``Tau2Fit.safeguarded`` flags those columns. Only
if that too fails does the column fall back to DL (``Tau2Fit.converged = False``; single fits
warn with ``MetaAllianceWarning``, see ``models``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import DataError, ModelError
from .options import METHODS, check_option

#: stop iterating when |change| <= CONV_TOL * (tau2 + vbar): the optimum to ~machine precision
CONV_TOL = 1e-12
#: a run that hits MAXITER still counts as converged when its last change is below this
#: (relative) bound: rounding noise can keep the change just above CONV_TOL for huge k
CONV_TOL_ACCEPT = 1e-8
#: iteration cap for Fisher scoring and the root finder (metafor's maxiter is 100)
MAXITER = 1000
#: metafor's ``con$tol`` (.Machine$double.eps^0.25): log-likelihood tolerance of its check
#: that Fisher scoring did not stop at a worse point than tau2 = 0 (``ll0check``)
LL0_TOL = float(np.finfo(float).eps ** 0.25)
#: metafor's ``con$evtol``: eigenvalues of X'X below this mean a rank-deficient design
EVTOL = 1e-07

ITERATIVE = ("ML", "REML", "EB", "PM")


class Tau2Fit(NamedTuple):
    """tau^2 per column with convergence information (all arrays of shape (B,))."""

    tau2: np.ndarray
    converged: np.ndarray        # bool: False -> the value is the DL fallback
    iterations: np.ndarray       # int
    reset_to_zero: np.ndarray    # bool: metafor's ll0check set tau2 to 0 (ML/REML)
    safeguarded: np.ndarray      # bool: plain Fisher scoring failed; the bracketed version found
                                 # the optimum (where metafor stops with "did not converge")


# --------------------------------------------------------------------------------------------
# input handling


def as_batch(Y, V, X=None, mask=None):
    """Validate and broadcast to Y (k,B), V (k,B), X (k,p), M (k,B) float 0/1, squeeze flag.

    ``V`` may be (k,) (the same variances for every column) or (k, B). ``mask`` (k,B) bool
    marks rows that take part in each column's fit (None: all rows).
    """
    Y = np.asarray(Y, dtype=float)
    squeeze = Y.ndim == 1
    if squeeze:
        Y = Y[:, None]
    if Y.ndim != 2:
        raise DataError(f"Y must be a vector or a (k, B) matrix, got shape {Y.shape}")
    k, B = Y.shape
    V = np.asarray(V, dtype=float)
    if V.ndim == 1:
        if V.shape[0] != k:
            raise DataError(f"vi has length {V.shape[0]} but yi has length {k}")
        V = np.broadcast_to(V[:, None], (k, B))
    elif V.shape != (k, B):
        raise DataError(f"V must have shape ({k},) or ({k}, {B}), got {V.shape}")
    if mask is None:
        M = np.ones((k, B))
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim == 1:
            mask = np.broadcast_to(mask[:, None], (k, B))
        if mask.shape != (k, B):
            raise DataError(f"mask must have shape ({k}, {B}), got {mask.shape}")
        M = mask.astype(float)
    used = M > 0
    if not np.all(np.isfinite(Y[used])):
        raise DataError("yi contains missing or non-finite values")
    if not np.all(np.isfinite(V[used])):
        raise DataError("vi contains missing or non-finite values")
    if np.any(V[used] <= 0):
        raise DataError("vi must be > 0 for every study")
    if X is None:
        X = np.ones((k, 1))
    else:
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[:, None]
        if X.shape[0] != k:
            raise DataError(f"X has {X.shape[0]} rows but yi has length {k}")
        if not np.all(np.isfinite(X)):
            raise DataError("X contains missing or non-finite values")
    # rows outside the mask must not produce inf/nan in products with weight 0
    if mask is not None:
        Y = np.where(used, Y, 0.0)
        V = np.where(used, V, 1.0)
    return Y, V, X, M, squeeze


def is_intercept_only(X) -> bool:
    return X.shape[1] == 1 and bool(np.all(X[:, 0] == 1.0))


# --------------------------------------------------------------------------------------------
# weighted least squares kernel (per column), O(k p^2 B)


class WLS(NamedTuple):
    A: np.ndarray       # (B,p,p) (X'WX)^-1
    beta: np.ndarray    # (B,p)
    r: np.ndarray       # (k,B) residuals y - X beta
    h: np.ndarray       # (k,B) x_i' A x_i
    sw: np.ndarray      # (B,) sum of weights


def wls(X, w, Y, int_only=None) -> WLS:
    """Weighted least squares of every column of Y on X with weights w (k,B)."""
    if int_only is None:
        int_only = is_intercept_only(X)
    sw = w.sum(axis=0)
    if int_only:
        if np.any(sw <= 0):
            raise ModelError("no studies left to fit the model")
        a = 1.0 / sw
        b = (w * Y).sum(axis=0) * a
        return WLS(a[:, None, None], b[:, None], Y - b[None, :], np.broadcast_to(a, Y.shape), sw)
    XtWX = np.einsum("ki,kb,kj->bij", X, w, X, optimize=True)
    try:
        A = np.linalg.inv(XtWX)
    except np.linalg.LinAlgError:
        raise ModelError("the weighted design matrix X'WX is singular") from None
    XtWy = X.T @ (w * Y)                                   # (p,B)
    beta = np.einsum("bij,jb->bi", A, XtWy)
    r = Y - X @ beta.T
    h = np.einsum("ki,bij,kj->kb", X, A, X, optimize=True)
    return WLS(A, beta, r, h, sw)


def _cross(X, u, int_only):
    """X' diag(u_b) X per column -> (B,p,p)."""
    if int_only:
        return u.sum(axis=0)[:, None, None]
    return np.einsum("ki,kb,kj->bij", X, u, X, optimize=True)


def _trmm(A1, B1, A2, B2):
    """tr(A1 B1 A2 B2) per column."""
    return np.einsum("bij,bjk,bkl,bli->b", A1, B1, A2, B2, optimize=True)


def trace_P(f: WLS, w):
    """tr(P), P = W - W X A X' W."""
    return f.sw - (w * w * f.h).sum(axis=0)


def trace_PP(f: WLS, X, w, int_only):
    """tr(P P) (= sum(P * P))."""
    C2 = _cross(X, w * w, int_only)
    return (w * w).sum(axis=0) - 2 * (w ** 3 * f.h).sum(axis=0) + _trmm(f.A, C2, f.A, C2)


def trace_PV(f: WLS, w, V):
    return (w * V).sum(axis=0) - (w * w * V * f.h).sum(axis=0)


def trace_PVPV(f: WLS, X, w, V, int_only):
    """tr(P V P V) (= metafor's sum(PV * t(PV)))."""
    C = _cross(X, w * w * V, int_only)
    return ((w * V) ** 2).sum(axis=0) - 2 * (w ** 3 * V * V * f.h).sum(axis=0) + _trmm(f.A, C, f.A, C)


def trace_PPV(f: WLS, X, w, V, int_only):
    """tr(P P V) (= metafor's sum(PV * P))."""
    C2 = _cross(X, w * w, int_only)
    C = _cross(X, w * w * V, int_only)
    return (w * w * V).sum(axis=0) - 2 * (w ** 3 * V * f.h).sum(axis=0) + _trmm(f.A, C2, f.A, C)


# --------------------------------------------------------------------------------------------
# helpers shared with inference


def centered(Y, M):
    """metafor's Ymc: each column minus its mean over the rows in the fit."""
    kb = M.sum(axis=0)
    return np.where(M > 0, Y - (M * Y).sum(axis=0) / kb, 0.0)


def q_stat(Yc, V, M, X, tau2, int_only=None):
    """Generalised Q: y' P(tau2) y per column (tau2 (B,))."""
    w = M / (V + tau2)
    f = wls(X, w, Yc, int_only)
    return (w * f.r * f.r).sum(axis=0)


def vbar(V, M):
    """Harmonic mean of the sampling variances per column: the natural scale of tau^2."""
    return M.sum(axis=0) / (M / V).sum(axis=0)


def check_design(X, names=None) -> None:
    """Raise ModelError naming the columns if X is rank deficient (metafor: evtol on X'X)."""
    X = np.asarray(X, dtype=float)
    p = X.shape[1]
    if names is None:
        names = [f"X[:, {j}]" for j in range(p)]
    if np.linalg.matrix_rank(X) == p and np.linalg.eigvalsh(X.T @ X).min() > EVTOL:
        return
    # find the columns that are linear combinations of the columns before them
    dependent, kept = [], []
    for j in range(p):
        col = X[:, j]
        norm = np.linalg.norm(col)
        if norm == 0:
            dependent.append(names[j])
            continue
        if kept:
            Q = X[:, kept]
            coef, *_ = np.linalg.lstsq(Q, col, rcond=None)
            resid = np.linalg.norm(col - Q @ coef)
        else:
            resid = norm
        if resid <= 1e-7 * norm:
            dependent.append(names[j])
        else:
            kept.append(j)
    if not dependent:          # numerically near-singular without an exact dependence
        dependent = list(names)
    raise ModelError(
        "design matrix is not of full rank: column(s) "
        + ", ".join(repr(d) for d in dependent)
        + " are constant or a linear combination of other columns"
        + (f" ({', '.join(repr(names[j]) for j in kept)})" if kept else "")
    )


# --------------------------------------------------------------------------------------------
# the estimators


def _raw_closed_form(method, Yc, V, M, X, int_only, kb, p):
    """Untruncated closed-form estimates (B,)."""
    if method == "HE":
        f = wls(X, M, Yc, int_only)
        rss = (M * f.r * f.r).sum(axis=0)
        return (rss - trace_PV(f, M, V)) / (kb - p)
    if method in ("DL", "HS"):
        w = M / V
        f = wls(X, w, Yc, int_only)
        rss = (w * f.r * f.r).sum(axis=0)
        if method == "DL":
            return (rss - (kb - p)) / trace_P(f, w)
        return (rss - kb) / f.sw
    if method == "SJ":
        tau0 = (M * Yc * Yc).sum(axis=0) / kb
        w = M / (V + tau0)
        f = wls(X, w, Yc, int_only)
        rss = (w * f.r * f.r).sum(axis=0)
        return tau0 * rss / (kb - p)
    raise AssertionError(method)


def sj_tau0(Yc, M):
    """Sidik-Jonkman starting value tau0 = var(y) * (k - 1) / k."""
    return (M * Yc * Yc).sum(axis=0) / M.sum(axis=0)


def _fisher_scoring(method, Yc, V, M, X, int_only, start, scale):
    """ML/REML Fisher scoring with metafor's step halving, per column until converged."""
    B = Yc.shape[1]
    tau2 = start.copy()
    converged = np.zeros(B, dtype=bool)
    iters = np.zeros(B, dtype=int)
    last = np.full(B, np.inf)
    active = np.arange(B)
    for _ in range(MAXITER):
        if active.size == 0:
            break
        y, v, m, t = Yc[:, active], V[:, active], M[:, active], tau2[active]
        w = m / (v + t)
        f = wls(X, w, y, int_only)
        Py = w * f.r
        if method == "ML":
            adj = ((Py * Py).sum(axis=0) - f.sw) / (w * w).sum(axis=0)
        else:
            adj = ((Py * Py).sum(axis=0) - trace_P(f, w)) / trace_PP(f, X, w, int_only)
        adj = np.where(np.isfinite(adj), adj, 0.0)
        # metafor: while (tau2 + adj < tau2.min) adj <- adj / 2  (at tau2 = 0 the step vanishes)
        adj = np.where((t <= 0) & (adj < 0), 0.0, adj)
        neg = t + adj < 0
        while np.any(neg):
            adj = np.where(neg, adj / 2.0, adj)
            neg = t + adj < 0
        new = t + adj
        change = np.abs(adj)
        tau2[active] = new
        iters[active] += 1
        last[active] = change
        done = change <= CONV_TOL * (new + scale[active])
        converged[active[done]] = True
        active = active[~done]
    if active.size:
        ok = last[active] <= CONV_TOL_ACCEPT * (tau2[active] + scale[active])
        converged[active[ok]] = True
    return tau2, converged, iters


def _score(method, y, v, m, X, int_only, t):
    """ML/REML score S (times 2) and its derivative dS/dtau2 per column.

    REML: S = y'PPy - tr(P), dS = tr(PP) - 2 y'PPPy; ML: S = y'PPy - sum(w),
    dS = sum(w^2) - 2 y'PPPy (y'PPPy = u'Pu with u = Py).
    """
    w = m / (v + t)
    f = wls(X, w, y, int_only)
    u = w * f.r                                            # P y
    g = X.T @ (w * u)                                      # X'W u, (p, B)
    uPu = (w * u * u).sum(axis=0) - np.einsum("ib,bij,jb->b", g, f.A, g)
    if method == "ML":
        return (u * u).sum(axis=0) - f.sw, (w * w).sum(axis=0) - 2 * uPu
    return (u * u).sum(axis=0) - trace_P(f, w), trace_PP(f, X, w, int_only) - 2 * uPu


def _score_root(method, Yc, V, M, X, int_only, scale):
    """Safeguarded Newton: the root of the ML/REML score on a bracket [lo, hi].

    Used for columns where metafor's plain Fisher scoring oscillates or diverges (possible
    when observed and expected information differ a lot, e.g. near-saturated designs). Newton
    steps use the observed information; a step that leaves the bracket (or a non-concave
    point) is replaced by bisection, so it always converges to a stationary point where the
    score changes sign from + to - (a maximum); 0 if the score at 0 is <= 0 (the boundary
    maximum metafor's step halving converges to).
    """
    B = Yc.shape[1]
    out = np.zeros(B)
    ok = np.ones(B, dtype=bool)
    s0, _ = _score(method, Yc, V, M, X, int_only, np.zeros(B))
    act = np.flatnonzero(s0 > 0)
    if act.size == 0:
        return out, ok
    y, v, m = Yc[:, act], V[:, act], M[:, act]
    lo = np.zeros(act.size)
    hi = np.maximum(scale[act], (m * y * y).sum(axis=0) / m.sum(axis=0))
    for _ in range(2000):
        sh, _ = _score(method, y, v, m, X, int_only, hi)
        bad = sh > 0
        if not np.any(bad):
            break
        lo = np.where(bad, hi, lo)
        hi = np.where(bad, 2 * hi, hi)
    t = 0.5 * (lo + hi)
    idx = np.arange(act.size)
    for _ in range(MAXITER):
        if idx.size == 0:
            break
        sc, dsc = _score(method, y[:, idx], v[:, idx], m[:, idx], X, int_only, t[idx])
        lo[idx] = np.where(sc > 0, t[idx], lo[idx])
        hi[idx] = np.where(sc <= 0, t[idx], hi[idx])
        with np.errstate(divide="ignore", invalid="ignore"):
            new = t[idx] - sc / dsc
        bis = ~np.isfinite(new) | (dsc >= 0) | (new <= lo[idx]) | (new >= hi[idx])
        new = np.where(bis, 0.5 * (lo[idx] + hi[idx]), new)
        new = np.where(sc == 0, t[idx], new)            # an exact root: stay there
        change = np.abs(new - t[idx])
        t[idx] = new
        tol = CONV_TOL * (new + scale[act[idx]])
        done = (change <= tol) | (hi[idx] - lo[idx] <= tol) | (sc == 0)
        idx = idx[~done]
    ok[act[idx]] = False
    out[act] = t
    return out, ok


def loglik(method, Y, V, M, X, tau2, int_only=None):
    """ML or REML log-likelihood per column at tau2 (metafor's ll.ML / ll.REML, REMLf = TRUE
    except the log|X'X| constant, which is left out as in metafor's ll0check)."""
    if int_only is None:
        int_only = is_intercept_only(X)
    kb = M.sum(axis=0)
    p = X.shape[1]
    w = M / (V + tau2)
    f = wls(X, w, Y, int_only)
    rss = (w * f.r * f.r).sum(axis=0)
    logv = (M * np.log(V + tau2)).sum(axis=0)
    if method == "ML":
        return -0.5 * kb * np.log(2 * np.pi) - 0.5 * logv - 0.5 * rss
    logdet = np.linalg.slogdet(np.linalg.inv(f.A))[1]
    return -0.5 * (kb - p) * np.log(2 * np.pi) - 0.5 * logv - 0.5 * logdet - 0.5 * rss


def q_root(Yc, V, M, X, target, upper=None, int_only=None):
    """Solve Q(tau2) = target per column on [0, upper] (upper None: unbounded).

    Returns (tau2, iterations). As metafor: 0 when Q(0) <= target, ``upper`` when
    Q(upper) >= target, otherwise the root (safeguarded Newton, dQ/dtau2 = -y'PPy).
    """
    if int_only is None:
        int_only = is_intercept_only(X)
    B = Yc.shape[1]
    target = np.broadcast_to(np.asarray(target, dtype=float), (B,)).copy()
    scale = vbar(V, M)
    out = np.zeros(B)
    iters = np.zeros(B, dtype=int)
    q0 = q_stat(Yc, V, M, X, np.zeros(B), int_only)
    act = np.flatnonzero(q0 > target)
    if act.size == 0:
        return out, iters
    lo = np.zeros(act.size)
    if upper is not None:
        up = np.broadcast_to(np.asarray(upper, dtype=float), (B,))[act]
        qu = q_stat(Yc[:, act], V[:, act], M[:, act], X, up, int_only)
        at_up = qu >= target[act]
        out[act[at_up]] = up[at_up]
        act, lo, hi = act[~at_up], lo[~at_up], up[~at_up]
    else:
        # bracket: double from a scale-aware start until Q(hi) <= target
        hi = np.maximum(scale[act], (M[:, act] * Yc[:, act] ** 2).sum(axis=0) / M[:, act].sum(axis=0))
        hi = np.where(hi > 0, hi, 1.0)
        for _ in range(2000):
            qh = q_stat(Yc[:, act], V[:, act], M[:, act], X, hi, int_only)
            bad = qh > target[act]
            if not np.any(bad):
                break
            lo = np.where(bad, hi, lo)
            hi = np.where(bad, hi * 2.0, hi)
    if act.size == 0:
        return out, iters
    t = lo.copy()
    idx = np.arange(act.size)
    for _ in range(MAXITER):
        if idx.size == 0:
            break
        cols = act[idx]
        y, v, m = Yc[:, cols], V[:, cols], M[:, cols]
        w = m / (v + t[idx])
        f = wls(X, w, y, int_only)
        Py = w * f.r
        fval = (Py * f.r).sum(axis=0) - target[cols]
        dval = -(Py * Py).sum(axis=0)
        # bracket update (Q decreasing): f > 0 -> root to the right
        lo[idx] = np.where(fval > 0, t[idx], lo[idx])
        hi[idx] = np.where(fval <= 0, t[idx], hi[idx])
        with np.errstate(divide="ignore", invalid="ignore"):
            step = -fval / dval
        new = t[idx] + step
        bis = ~np.isfinite(new) | (new <= lo[idx]) | (new >= hi[idx])
        new = np.where(bis, 0.5 * (lo[idx] + hi[idx]), new)
        new = np.where(fval == 0, t[idx], new)          # an exact root: stay there
        change = np.abs(new - t[idx])
        t[idx] = new
        iters[cols] += 1
        tol = CONV_TOL * (new + scale[cols])
        done = (change <= tol) | (hi[idx] - lo[idx] <= tol) | (fval == 0)
        idx = idx[~done]
    out[act] = t
    return out, iters


def tau2_fit(Y, V, method="REML", X=None, mask=None) -> Tau2Fit:
    """tau^2 for every column of Y with convergence information (see ``tau2_batch``)."""
    check_option("method", method, METHODS)
    Y, V, X, M, _ = as_batch(Y, V, X, mask)
    return _tau2_fit(Y, V, X, M, method)


def _tau2_fit(Y, V, X, M, method) -> Tau2Fit:
    B = Y.shape[1]
    p = X.shape[1]
    kb = M.sum(axis=0)
    int_only = is_intercept_only(X)
    zeros = np.zeros(B)
    ok = np.ones(B, dtype=bool)
    it0 = np.zeros(B, dtype=int)
    reset = np.zeros(B, dtype=bool)
    if method == "EE":
        return Tau2Fit(zeros, ok, it0, reset, reset)
    if np.any(kb <= p):
        if p == 1 and np.all(kb >= 1):
            # metafor's k = 1 rule: tau2 fixed at 0 where only one study is in the fit
            one = kb == 1
        else:
            raise ModelError(
                f"{method} needs more studies than model coefficients (k = {int(kb.min())}, p = {p})"
            )
    else:
        one = np.zeros(B, dtype=bool)
    Yc = centered(Y, M)
    if np.any(one):
        # fit the columns with k >= 2 and put 0 where k = 1
        res = _tau2_fit(Y[:, ~one], V[:, ~one], X, M[:, ~one], method) if np.any(~one) else None
        tau2 = zeros.copy()
        conv = ok.copy()
        iters = it0.copy()
        safe = reset.copy()
        if res is not None:
            tau2[~one], conv[~one], iters[~one], reset[~one], safe[~one] = res
        return Tau2Fit(tau2, conv, iters, reset, safe)
    if method in ("DL", "HE", "HS", "SJ"):
        raw = _raw_closed_form(method, Yc, V, M, X, int_only, kb, p)
        return Tau2Fit(np.maximum(raw, 0.0), ok, it0, reset, reset)
    if method in ("PM", "EB"):
        tau2, iters = q_root(Yc, V, M, X, kb - p, None, int_only)
        return Tau2Fit(tau2, ok, iters, reset, reset)
    # ML / REML
    start = np.maximum(_raw_closed_form("HE", Yc, V, M, X, int_only, kb, p), 0.0)
    scale = vbar(V, M)
    tau2, conv, iters = _fisher_scoring(method, Yc, V, M, X, int_only, start, scale)
    safe = ~conv
    if np.any(safe):
        t_s, ok_s = _score_root(method, Yc[:, safe], V[:, safe], M[:, safe], X, int_only,
                                scale[safe])
        tau2[safe] = t_s
        conv[safe] = ok_s
    # metafor's ll0check: if tau2 = 0 beats the converged value, take 0
    chk = conv & (tau2 > CONV_TOL * scale)
    if np.any(chk):
        ll0 = loglik(method, Yc[:, chk], V[:, chk], M[:, chk], X, np.zeros(chk.sum()), int_only)
        ll1 = loglik(method, Yc[:, chk], V[:, chk], M[:, chk], X, tau2[chk], int_only)
        bad = np.zeros(B, dtype=bool)
        bad[chk] = ll0 - ll1 > LL0_TOL
        tau2 = np.where(bad, 0.0, tau2)
        reset = bad
    if not np.all(conv):
        dl = _raw_closed_form("DL", Yc[:, ~conv], V[:, ~conv], M[:, ~conv], X, int_only, kb[~conv], p)
        tau2[~conv] = np.maximum(dl, 0.0)
    return Tau2Fit(np.maximum(tau2, 0.0), conv, iters, reset, safe & conv)


def tau2_batch(Y, V, method="REML", X=None, mask=None):
    """tau^2 for every column of ``Y``; vectorised, memory linear in k.

    Parameters
    ----------
    Y : (k, B) array (or (k,)) of effect sizes, one model per column.
    V : (k,) or (k, B) sampling variances.
    method : one of ``options.METHODS``.
    X : (k, p) design matrix shared by all columns (None: intercept only).
    mask : optional (k, B) bool, rows taking part in each column's fit (leave-one-out,
        cumulative, GOSH subsets).

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
    Y, V, X, M, squeeze = as_batch(Y, V, X, mask)
    fit = _tau2_fit(Y, V, X, M, method)
    return float(fit.tau2[0]) if squeeze else fit.tau2


def se_tau2(method, Y, V, X, M, tau2):
    """Standard error of tau^2 as metafor computes it, per column (B,); NaN where metafor
    gives NA (EE, k = 1): callers turn that into None."""
    B = Y.shape[1]
    p = X.shape[1]
    kb = M.sum(axis=0)
    int_only = is_intercept_only(X)
    t = np.maximum(tau2, 0.0)
    if method == "EE":
        return np.full(B, np.nan)
    if method == "HS" or method == "DL":
        w = M / V
        f = wls(X, w, Y, int_only)
        trP = trace_P(f, w)
        trPP = trace_PP(f, X, w, int_only)
        denom = f.sw ** 2 if method == "HS" else trP ** 2
        out = np.sqrt(1.0 / denom * (2 * (kb - p) + 4 * t * trP + 2 * t ** 2 * trPP))
    elif method == "HE":
        f = wls(X, M, Y, int_only)
        out = np.sqrt(1.0 / (kb - p) ** 2 * (2 * trace_PVPV(f, X, M, V, int_only)
                                            + 4 * t * trace_PV(f, M, V) + 2 * t ** 2 * (kb - p)))
    elif method == "SJ":
        tau0 = sj_tau0(centered(Y, M), M)
        w = M / (V + tau0)
        f = wls(X, w, Y, int_only)
        out = np.sqrt(tau0 ** 2 / (kb - p) ** 2 * (2 * trace_PVPV(f, X, w, V, int_only)
                                                  + 4 * t * trace_PPV(f, X, w, V, int_only)
                                                  + 2 * t ** 2 * trace_PP(f, X, w, int_only)))
    elif method == "ML":
        w = M / (V + tau2)
        out = np.sqrt(2.0 / (w * w).sum(axis=0))
    elif method == "REML":
        w = M / (V + tau2)
        f = wls(X, w, Y, int_only)
        out = np.sqrt(2.0 / trace_PP(f, X, w, int_only))
    else:  # EB, PM
        w = M / (V + tau2)
        out = np.sqrt(2 * kb ** 2 / (kb - p) / w.sum(axis=0) ** 2)
    return np.where(kb <= p, np.nan, out)
