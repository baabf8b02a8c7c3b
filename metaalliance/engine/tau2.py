"""The tau^2 estimators on columns: one model per column of ``Y`` (k, B), any design ``X``.

Closed forms (DL, HE, HS, SJ), Fisher scoring with metafor's step halving (ML, REML), the
Q-root (PM, EB), the safeguarded score root, the log-likelihood, metafor's ll0check and the
standard error of tau^2, each as ``metafor:::rma.uni`` computes it (see ``estimators`` for
the formulas and the stopping rules). ``_tau2_fit`` is the column-wise driver that
``estimators.tau2_fit`` / ``tau2_batch`` dispatch to when the batch is not subsets of one
dataset; ``subsets`` and ``design`` reuse its pieces for their special cases.
"""

from __future__ import annotations

import numpy as np

from metaalliance.engine.control import (
    CONV_TOL, CONV_TOL_ACCEPT, LL0_TOL, MAXITER, MF_THRESHOLD, Tau2Fit, mf_bounded_root,
    mf_scoring, rma_tau2_max)
from metaalliance.engine.wls import (
    FEW_COLUMNS, centered, design_products, is_intercept_only, q_stat, trace_P, trace_PP,
    trace_PPV, trace_PV, trace_PVPV, vbar, wls)
from metaalliance.errors import ModelError
from metaalliance.options import DEFAULT_CONTROL


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


def _halved_step(t, adj):
    """A Fisher-scoring step kept inside tau^2 >= 0 as metafor does:
    ``while (tau2 + adj < tau2.min) adj <- adj / 2`` (at tau2 = 0 a negative step vanishes);
    a non-finite step becomes 0."""
    adj = np.where(np.isfinite(adj), adj, 0.0)
    adj = np.where((t <= 0) & (adj < 0), 0.0, adj)
    neg = t + adj < 0
    while np.any(neg):
        adj = np.where(neg, adj / 2.0, adj)
        neg = t + adj < 0
    return adj


def _fisher_scoring(method, Yc, V, M, X, int_only, start, scale):
    """ML/REML Fisher scoring with metafor's step halving, per column until converged."""
    B = Yc.shape[1]
    tau2 = start.copy()
    converged = np.zeros(B, dtype=bool)
    iters = np.zeros(B, dtype=int)
    last = np.full(B, np.inf)
    active = np.arange(B)
    XX = None if (int_only or B <= FEW_COLUMNS) else design_products(X)
    for _ in range(MAXITER):
        if active.size == 0:
            break
        y, v, m, t = Yc[:, active], V[:, active], M[:, active], tau2[active]
        adj = _fs_step(method, y, v, m, X, int_only, t, XX)
        adj = _halved_step(t, adj)
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


def _fs_step(method, y, v, m, X, int_only, t, XX=None):
    """metafor's Fisher-scoring step of ML (``(y'PPy - sum w) / sum w^2``) or REML
    (``(y'PPy - tr P) / tr PP``) per column at tau2 ``t``."""
    w = m / (v + t)
    f = wls(X, w, y, int_only, XX)
    Py = w * f.r
    if method == "ML":
        return ((Py * Py).sum(axis=0) - f.sw) / (w * w).sum(axis=0)
    return ((Py * Py).sum(axis=0) - trace_P(f, w)) / trace_PP(f, X, w, int_only)


def _eb_step(y, v, m, X, int_only, t, kb, p, XX=None):
    """metafor's EB update ``(Q k / (k - p) - k) / sum w`` per column at tau2 ``t``."""
    w = m / (v + t)
    f = wls(X, w, y, int_only, XX)
    q = (w * f.r * f.r).sum(axis=0)
    return (q * kb / (kb - p) - kb) / f.sw


def _ll0_reset(method, Yc, V, M, X, tau2, chk, int_only):
    """metafor's ll0check for the columns ``chk`` (bool): True where the log-likelihood at
    tau2 = 0 beats the one at ``tau2`` by more than ``LL0_TOL``."""
    reset = np.zeros(Yc.shape[1], dtype=bool)
    if np.any(chk):
        ll0 = loglik(method, Yc[:, chk], V[:, chk], M[:, chk], X, np.zeros(int(chk.sum())),
                     int_only)
        ll1 = loglik(method, Yc[:, chk], V[:, chk], M[:, chk], X, tau2[chk], int_only)
        reset[chk] = ll0 - ll1 > LL0_TOL
    return reset


def _score(method, y, v, m, X, int_only, t, XX=None):
    """ML/REML score S (times 2) and its derivative dS/dtau2 per column.

    REML: S = y'PPy - tr(P), dS = tr(PP) - 2 y'PPPy; ML: S = y'PPy - sum(w),
    dS = sum(w^2) - 2 y'PPPy (y'PPPy = u'Pu with u = Py).
    """
    w = m / (v + t)
    f = wls(X, w, y, int_only, XX)
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
    XX = None if (int_only or B <= FEW_COLUMNS) else design_products(X)
    s0, _ = _score(method, Yc, V, M, X, int_only, np.zeros(B), XX)
    act = np.flatnonzero(s0 > 0)
    if act.size == 0:
        return out, ok
    y, v, m = Yc[:, act], V[:, act], M[:, act]
    lo = np.zeros(act.size)
    hi = np.maximum(scale[act], (m * y * y).sum(axis=0) / m.sum(axis=0))
    for _ in range(2000):
        sh, _ = _score(method, y, v, m, X, int_only, hi, XX)
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
        sc, dsc = _score(method, y[:, idx], v[:, idx], m[:, idx], X, int_only, t[idx], XX)
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
    XX = None if (int_only or B <= FEW_COLUMNS) else design_products(X)
    q0 = q_stat(Yc, V, M, X, np.zeros(B), int_only, XX)
    act = np.flatnonzero(q0 > target)
    if act.size == 0:
        return out, iters
    lo = np.zeros(act.size)
    if upper is not None:
        up = np.broadcast_to(np.asarray(upper, dtype=float), (B,))[act]
        qu = q_stat(Yc[:, act], V[:, act], M[:, act], X, up, int_only, XX)
        at_up = qu >= target[act]
        out[act[at_up]] = up[at_up]
        act, lo, hi = act[~at_up], lo[~at_up], up[~at_up]
    else:
        # bracket: double from a scale-aware start until Q(hi) <= target
        hi = np.maximum(scale[act], (M[:, act] * Yc[:, act] ** 2).sum(axis=0) / M[:, act].sum(axis=0))
        hi = np.where(hi > 0, hi, 1.0)
        for _ in range(2000):
            qh = q_stat(Yc[:, act], V[:, act], M[:, act], X, hi, int_only, XX)
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
        f = wls(X, w, y, int_only, XX)
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


def _tau2_fit_metafor(Y, Yc, V, M, X, method, int_only, kb, p) -> Tau2Fit:
    """ML, REML, EB or PM per column (k >= p + 1 everywhere) under metafor's default control;
    columns where metafor fails are computed as under "optimum" and flagged safeguarded."""
    B = Y.shape[1]
    XX = None if (int_only or B <= FEW_COLUMNS) else design_products(X)
    reset = np.zeros(B, dtype=bool)
    if method == "PM":
        def q(t, idx):
            return q_stat(Yc[:, idx], V[:, idx], M[:, idx], X, t, int_only, XX)

        tau2, iters, failed = mf_bounded_root(q, kb - p, rma_tau2_max(Y, M))
        if np.any(failed):
            tau2[failed], _ = q_root(Yc[:, failed], V[:, failed], M[:, failed], X,
                                     (kb - p)[failed], None, int_only)
        return Tau2Fit(tau2, np.ones(B, dtype=bool), iters, reset, failed)
    start = np.maximum(_raw_closed_form("HE", Yc, V, M, X, int_only, kb, p), 0.0)
    if method == "EB":
        def step(t, idx):
            return _eb_step(Yc[:, idx], V[:, idx], M[:, idx], X, int_only, t, kb[idx], p, XX)
    else:
        def step(t, idx):
            return _fs_step(method, Yc[:, idx], V[:, idx], M[:, idx], X, int_only, t, XX)
    tau2, conv, iters = mf_scoring(step, start)
    if method != "EB":
        reset = _ll0_reset(method, Yc, V, M, X, tau2, conv & (tau2 > MF_THRESHOLD), int_only)
        tau2 = np.where(reset, 0.0, tau2)
    failed = ~conv
    if np.any(failed):
        sub = _tau2_fit(Y[:, failed], V[:, failed], X, M[:, failed], method, "optimum")
        tau2[failed] = sub.tau2
        conv[failed] = sub.converged
        reset[failed] = sub.reset_to_zero
    return Tau2Fit(np.maximum(tau2, 0.0), conv, iters, reset, failed & conv)

def _tau2_fit(Y, V, X, M, method, control=DEFAULT_CONTROL) -> Tau2Fit:
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
        res = (_tau2_fit(Y[:, ~one], V[:, ~one], X, M[:, ~one], method, control)
               if np.any(~one) else None)
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
    if control == "metafor":
        return _tau2_fit_metafor(Y, Yc, V, M, X, method, int_only, kb, p)
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
