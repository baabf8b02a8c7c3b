"""Intercept-only models fitted to subsets of one dataset: single fits, leave-one-out,
cumulative analyses, GOSH, trim and fill.

Every quantity of an intercept-only model is a sum over the subset of w^a y^c with
w = 1/(v + tau^2), so one evaluation of B fits at B values of tau^2 is the (B, k) weight
matrix times the (k, 3) matrix [1, y, y^2]: one BLAS product instead of ~10 passes of array
arithmetic (``Subsets``), in blocks that stay in cache. The estimators, stopping rules and
metafor's control are those of ``tau2`` and ``control``; ``tests/test_batch.py`` checks every
subset fit against the column-wise fit to 1e-10.
"""

from __future__ import annotations

import math

import numpy as np

from metaalliance.engine.control import (
    CONV_TOL, CONV_TOL_ACCEPT, ITERATIVE, LL0_TOL, MAXITER, MF_THRESHOLD, Tau2Fit,
    mf_bounded_root, mf_bounded_root1, mf_scoring, mf_scoring1, rma_tau2_max)
from metaalliance.engine.tau2 import _halved_step, _score_root
from metaalliance.engine.wls import is_intercept_only
from metaalliance.errors import DataError, ModelError
from metaalliance.options import DEFAULT_CONTROL


# --------------------------------------------------------------------------------------------
# intercept-only models fitted to subsets of one dataset (single fits, leave-one-out,
# cumulative analyses, GOSH)


#: subsets x studies per block when many subsets are fitted: closed-form estimators make a
#: few passes per block and run fastest when a block's arrays stay in L2 (64k cells = 512 kB);
#: iterative ones repeat ~10 numpy calls per iteration and block, so larger blocks amortise
#: that (measured on a 2-core EPYC with 1 MB L2 per core: see benchmarks/README.md)
SUBSET_BLOCK_CELLS = 1 << 16
SUBSET_BLOCK_CELLS_ITERATIVE = 1 << 18


def shared_column(Y):
    """The (k,) data vector when every column of ``Y`` is the same array (``Y`` 1-d, one
    column, or a stride-0 broadcast such as ``np.broadcast_to(y[:, None], (k, B))``), else
    None."""
    if not isinstance(Y, np.ndarray):
        return None
    if Y.ndim == 1:
        return Y
    if Y.ndim == 2 and (Y.shape[1] == 1 or Y.strides[1] == 0):
        return Y[:, 0]
    return None


class Subsets:
    """Intercept-only models fitted to subsets of one dataset ``(y, v)``.

    ``rows`` (B, k) bool: row b marks the studies of fit b; None: one fit to all k studies.
    Every quantity of these models is a sum over the subset of ``w^a y^c`` with
    ``w = 1 / (v + tau2)``, so one evaluation at B values of tau^2 is the (B, k) weight matrix
    times the (k, 3) matrix ``[1, y, y^2]`` (a BLAS product) instead of ~10 passes of
    elementwise arithmetic over (k, B) arrays; memory is O(B k) for the mask only.

    ``y`` is centred at its mean over all k studies. metafor centres each fit at its own mean
    (``Ymc``); the intercept-only model is shift-invariant, and with y centred the expansions
    (e.g. ``sum w (y - mu)^2 = sum w y^2 - mu sum w y``) lose nothing that matters: the
    rounding error of tau^2 is about ``eps * mean(y^2)`` in absolute terms, far below the
    convergence tolerance ``CONV_TOL * (tau2 + vbar)``.

    ``y`` and ``v`` must be finite with ``v > 0`` (callers validate).
    """

    def __init__(self, y, v, rows=None, like=None):
        if like is not None:                 # the same data as ``like`` (blocks of one batch)
            self.k, self.shift, self.y, self.v = like.k, like.shift, like.y, like.v
            self.P, base, self.y_raw = like.P, like._base, like.y_raw
        else:
            y = np.asarray(y, dtype=float)
            v = np.asarray(v, dtype=float)
            k = y.size
            self.k = k
            self.y_raw = y
            self.shift = float(y.mean())
            yc = y - self.shift
            self.y, self.v = yc, v
            self.P = np.column_stack([np.ones(k), yc, yc * yc])
            w0 = 1.0 / v
            base = np.column_stack([np.ones(k), yc, yc * yc, v, np.log(v), w0, w0 * yc,
                                    w0 * yc * yc, w0 * w0, y])
        self._base = base
        k = self.k
        if rows is None:
            self.Mf = None
            G = base.sum(axis=0)[None, :]
        else:
            self.Mf = np.ascontiguousarray(rows, dtype=float)
            if self.Mf.ndim != 2 or self.Mf.shape[1] != k:
                raise DataError(f"subset rows must have shape (B, {k}), got {self.Mf.shape}")
            G = self.Mf @ base
        (self.kb, self.sy, self.sy2, self.sv, self.slogv, self.sw0, self.swy0, self.swy20,
         self.sw20, self.sy_raw) = (np.ascontiguousarray(c) for c in G.T)
        self.B = G.shape[0]

    # --- sums at given tau^2 values (idx: rows of the fits; None: all) ---------------------

    def weights(self, t, idx=None):
        """(n, k) weights 1 / (v + t) of the studies in each fit (0 for the others)."""
        T = self.v[None, :] + np.asarray(t, dtype=float)[:, None]
        if self.Mf is None:
            return np.divide(1.0, T, out=T)
        return np.divide(self.Mf if idx is None else self.Mf[idx], T, out=T)

    def sums(self, t, idx=None, order=1):
        """[sum w, sum w y, sum w y^2] (order 1), + [sum w^2, sum w^2 y, sum w^2 y^2]
        (order 2), + [sum w^3] (order 3), each (n,)."""
        W = self.weights(t, idx)
        S = W @ self.P
        out = [S[:, 0], S[:, 1], S[:, 2]]
        if order >= 2:
            W2 = W * W
            S2 = W2 @ self.P
            out += [S2[:, 0], S2[:, 1], S2[:, 2]]
            if order >= 3:
                out.append(np.einsum("ij,ij->i", W2, W))
        return out

    def sums1(self, t: float, order=1):
        """``sums`` of a single fit (B = 1) at a scalar tau^2, as Python floats."""
        w = 1.0 / (self.v + t) if self.Mf is None else self.Mf[0] / (self.v + t)
        S = w @ self.P
        out = [float(S[0]), float(S[1]), float(S[2])]
        if order >= 2:
            w2 = w * w
            S2 = w2 @ self.P
            out += [float(S2[0]), float(S2[1]), float(S2[2])]
            if order >= 3:
                out.append(float(w2 @ w))
        return out

    def logsum(self, t, idx=None):
        """sum log(v + t) over the studies of each fit."""
        L = np.log(self.v[None, :] + np.asarray(t, dtype=float)[:, None])
        if self.Mf is None:
            return L.sum(axis=1)
        return np.einsum("ij,ij->i", self.Mf if idx is None else self.Mf[idx], L)

    def rss(self, t, mu, idx=None):
        """sum w (y - mu)^2 computed from the residuals (not expanded): exact zeros stay
        zeros (the Knapp-Hartung check for identical effect sizes)."""
        W = self.weights(t, idx)
        R = self.y[None, :] - np.asarray(mu, dtype=float)[:, None]
        return np.einsum("ij,ij->i", W, R * R)

    def estimate(self, swy, sw):
        """The weighted mean of each fit from its sums, on the original scale; a fit of one
        study returns that study's y exactly."""
        return np.where(self.kb == 1, self.sy_raw, self.shift + swy / sw)

    def q0(self):
        """Q (weights 1/v) of every fit: sum w (y - ybar_w)^2."""
        return self.swy20 - self.swy0 ** 2 / self.sw0

    def tau2_max(self, idx=None):
        """rma.uni's ``max(100, 10 * mad(yi)^2)`` of each fit (over its studies' raw yi)."""
        if self.Mf is None:
            return rma_tau2_max(self.y_raw)
        rows = self.Mf if idx is None else self.Mf[idx]
        return rma_tau2_max(np.broadcast_to(self.y_raw[:, None], (self.k, rows.shape[0])),
                            rows.T)

    def dense(self, idx):
        """(k, n) arrays Y (0 outside the fit), V (1 outside), M (float) for the generic code."""
        M = np.ones((self.k, len(idx))) if self.Mf is None else self.Mf[idx].T.copy()
        Y = self.y[:, None] * M
        V = np.where(M > 0, self.v[:, None], 1.0)
        return Y, V, M


def _subset_closed_form(S: Subsets, method):
    """Untruncated closed-form estimates of every fit (B,) (fits of one study: nan/inf)."""
    kb = S.kb
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "HE":
            rss = S.sy2 - S.sy ** 2 / kb
            return (rss - (S.sv - S.sv / kb)) / (kb - 1)
        q0 = S.q0()
        if method == "DL":
            return (q0 - (kb - 1)) / (S.sw0 - S.sw20 / S.sw0)
        if method == "HS":
            return (q0 - kb) / S.sw0
        if method == "SJ":
            tau0 = np.maximum((S.sy2 - S.sy ** 2 / kb) / kb, 0.0)
            sw, swy, swy2 = S.sums(tau0, None, 1)
            return tau0 * (swy2 - swy ** 2 / sw) / (kb - 1)
    raise AssertionError(method)


def _subset_fisher_1(S: Subsets, method, start: float, scale: float):
    """``_subset_fisher`` for a single fit (B = 1) in Python floats: the same operations in
    the same order, without the array bookkeeping that dominated a single fit's time."""
    t = float(start)
    last = math.inf
    order = 2 if method == "ML" else 3
    for it in range(1, MAXITER + 1):
        s = S.sums1(t, order)
        sw, swy, sw2, sw2y, sw2y2 = s[0], s[1], s[3], s[4], s[5]
        mu = swy / sw
        yPPy = sw2y2 - 2.0 * mu * sw2y + mu * mu * sw2
        try:
            if method == "ML":
                adj = (yPPy - sw) / sw2
            else:
                h = sw2 / sw
                adj = (yPPy - (sw - h)) / (sw2 - 2.0 * s[6] / sw + h * h)
        except ZeroDivisionError:
            adj = 0.0
        if not math.isfinite(adj):
            adj = 0.0
        if t <= 0 and adj < 0:
            adj = 0.0
        while t + adj < 0:
            adj = adj / 2.0
        t = t + adj
        last = abs(adj)
        if last <= CONV_TOL * (t + scale):
            return t, True, it
    return t, bool(last <= CONV_TOL_ACCEPT * (t + scale)), MAXITER


def _subset_q_root_1(S: Subsets, target: float, upper=None):
    """``subset_q_root`` for a single fit (B = 1) in Python floats (same operations)."""
    target = float(target)
    if not float(S.q0()[0]) > target:
        return 0.0, 0
    kb = float(S.kb[0])
    scale = kb / float(S.sw0[0])

    def q(t):
        sw, swy, swy2 = S.sums1(t, 1)
        return swy2 - swy ** 2 / sw

    lo = 0.0
    if upper is not None:
        hi = float(upper)
        if q(hi) >= target:
            return hi, 0
    else:
        var0 = (float(S.sy2[0]) - float(S.sy[0]) ** 2 / kb) / kb
        hi = max(scale, var0)
        hi = hi if hi > 0 else 1.0
        for _ in range(2000):
            if not q(hi) > target:
                break
            lo, hi = hi, hi * 2.0
    t = lo
    it = 0
    for it in range(1, MAXITER + 1):
        sw, swy, swy2, sw2, sw2y, sw2y2 = S.sums1(t, 2)
        mu = swy / sw
        fval = (swy2 - swy * mu) - target
        dval = -(sw2y2 - 2.0 * mu * sw2y + mu * mu * sw2)
        if fval > 0:
            lo = t
        else:
            hi = t
        new = t + (-fval / dval) if dval != 0 else math.nan
        if not math.isfinite(new) or new <= lo or new >= hi:
            new = 0.5 * (lo + hi)
        if fval == 0:
            new = t
        change = abs(new - t)
        t = new
        tol = CONV_TOL * (new + scale)
        if change <= tol or hi - lo <= tol or fval == 0:
            break
    return t, it


def _subset_fisher(S: Subsets, method, cols, start, scale):
    """ML/REML Fisher scoring with metafor's step halving (as ``_fisher_scoring``) for the
    fits ``cols``; returns tau2, converged, iterations for those fits."""
    n = cols.size
    if S.B == 1 and n == 1:
        t, c, it = _subset_fisher_1(S, method, start[0], scale[0])
        return np.array([t]), np.array([c]), np.array([it])
    tau2 = start.copy()
    converged = np.zeros(n, dtype=bool)
    iters = np.zeros(n, dtype=int)
    last = np.full(n, np.inf)
    active = np.arange(n)
    order = 2 if method == "ML" else 3
    all_rows = n == S.B
    for _ in range(MAXITER):
        if active.size == 0:
            break
        t = tau2[active]
        idx = None if (all_rows and active.size == n) else cols[active]
        s = S.sums(t, idx, order)
        sw, swy, sw2, sw2y, sw2y2 = s[0], s[1], s[3], s[4], s[5]
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = swy / sw
            yPPy = sw2y2 - 2.0 * mu * sw2y + mu * mu * sw2
            if method == "ML":
                adj = (yPPy - sw) / sw2
            else:
                sw3 = s[6]
                h = sw2 / sw
                adj = (yPPy - (sw - h)) / (sw2 - 2.0 * sw3 / sw + h * h)
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


def subset_q_root(S: Subsets, target, upper=None, cols=None):
    """``q_root`` for the fits ``cols`` (None: all): Q(tau2) = target on [0, upper].

    Returns (tau2, iterations) for those fits, with the same rules as ``q_root``.
    """
    cols = np.arange(S.B) if cols is None else np.asarray(cols)
    n = cols.size
    if S.B == 1 and n == 1:
        t, it = _subset_q_root_1(S, np.ravel(target)[0],
                                 None if upper is None else np.ravel(upper)[0])
        return np.array([t]), np.array([it])
    target = np.broadcast_to(np.asarray(target, dtype=float), (n,)).copy()
    kb = S.kb[cols]
    scale = kb / S.sw0[cols]
    out = np.zeros(n)
    iters = np.zeros(n, dtype=int)
    act = np.flatnonzero(S.q0()[cols] > target)
    if act.size == 0:
        return out, iters

    def q(t, a):
        sw, swy, swy2 = S.sums(t, cols[a], 1)
        return swy2 - swy ** 2 / sw

    lo = np.zeros(act.size)
    if upper is not None:
        up = np.broadcast_to(np.asarray(upper, dtype=float), (n,))[act]
        at_up = q(up, act) >= target[act]
        out[act[at_up]] = up[at_up]
        act, lo, hi = act[~at_up], lo[~at_up], up[~at_up]
    else:
        c = cols[act]
        var0 = (S.sy2[c] - S.sy[c] ** 2 / S.kb[c]) / S.kb[c]
        hi = np.maximum(scale[act], var0)
        hi = np.where(hi > 0, hi, 1.0)
        for _ in range(2000):
            bad = q(hi, act) > target[act]
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
        a = act[idx]
        sw, swy, swy2, sw2, sw2y, sw2y2 = S.sums(t[idx], cols[a], 2)
        mu = swy / sw
        fval = (swy2 - swy * mu) - target[a]
        dval = -(sw2y2 - 2.0 * mu * sw2y + mu * mu * sw2)
        lo[idx] = np.where(fval > 0, t[idx], lo[idx])
        hi[idx] = np.where(fval <= 0, t[idx], hi[idx])
        with np.errstate(divide="ignore", invalid="ignore"):
            step = -fval / dval
        new = t[idx] + step
        bis = ~np.isfinite(new) | (new <= lo[idx]) | (new >= hi[idx])
        new = np.where(bis, 0.5 * (lo[idx] + hi[idx]), new)
        new = np.where(fval == 0, t[idx], new)
        change = np.abs(new - t[idx])
        t[idx] = new
        iters[a] += 1
        tol = CONV_TOL * (new + scale[a])
        done = (change <= tol) | (hi[idx] - lo[idx] <= tol) | (fval == 0)
        idx = idx[~done]
    out[act] = t
    return out, iters


def subset_tau2(S: Subsets, method, control=DEFAULT_CONTROL) -> Tau2Fit:
    """tau^2 of every fit of ``S`` (B,), exactly as ``_tau2_fit`` for the intercept-only
    model of each subset (metafor's k = 1 rule: tau2 = 0 for fits of one study)."""
    B = S.B
    kb = S.kb
    zeros = np.zeros(B)
    ok = np.ones(B, dtype=bool)
    it0 = np.zeros(B, dtype=int)
    reset = np.zeros(B, dtype=bool)
    if method == "EE":
        return Tau2Fit(zeros, ok, it0, reset, reset)
    if np.any(kb < 1):
        raise ModelError(f"{method} needs more studies than model coefficients (k = 0, p = 1)")
    many = np.flatnonzero(kb > 1)
    tau2 = zeros.copy()
    if method in ("DL", "HE", "HS", "SJ"):
        raw = _subset_closed_form(S, method)
        tau2[many] = np.maximum(raw[many], 0.0)
        return Tau2Fit(tau2, ok, it0, reset, reset)
    iters = it0.copy()
    if control == "metafor" and many.size:
        return _subset_tau2_metafor(S, method, many)
    if method in ("PM", "EB"):
        tau2[many], iters[many] = subset_q_root(S, kb[many] - 1, None, many)
        return Tau2Fit(tau2, ok, iters, reset, reset)
    # ML / REML
    scale = kb / S.sw0
    start = np.maximum(_subset_closed_form(S, "HE")[many], 0.0)
    t, conv_m, iters[many] = _subset_fisher(S, method, many, start, scale[many])
    tau2[many] = t
    conv = ok.copy()
    conv[many] = conv_m
    safe = ~conv
    if np.any(safe):
        # the bracketed fallback of the generic code, on dense columns of these fits only
        bad = np.flatnonzero(safe)
        Y, V, M = S.dense(bad)
        t_s, ok_s = _score_root(method, Y, V, M, np.ones((S.k, 1)), True, scale[bad])
        tau2[bad] = t_s
        conv[bad] = ok_s
    # metafor's ll0check: if tau2 = 0 beats the converged value, take 0
    reset = _subset_ll0_reset(S, method, tau2, conv & (tau2 > CONV_TOL * scale))
    tau2 = np.where(reset, 0.0, tau2)
    if not np.all(conv):
        nc = np.flatnonzero(~conv)
        tau2[nc] = np.maximum(_subset_closed_form(S, "DL")[nc], 0.0)
    return Tau2Fit(np.maximum(tau2, 0.0), conv, iters, reset, safe & conv)


def _subset_ll0_reset(S: Subsets, method, tau2, chk):
    """metafor's ll0check for the fits ``chk`` (bool (B,)) of ``S``: True where the ML/REML
    log-likelihood at tau2 = 0 beats the one at ``tau2`` by more than ``LL0_TOL``."""
    B = S.B
    reset = np.zeros(B, dtype=bool)
    chk = np.flatnonzero(chk)
    if chk.size:
        t = tau2[chk]
        sw, swy, swy2 = S.sums(t, chk if chk.size < B else None, 1)
        rss1 = swy2 - swy ** 2 / sw
        rss0 = S.swy20[chk] - S.swy0[chk] ** 2 / S.sw0[chk]
        logv1 = S.logsum(t, chk if chk.size < B else None)
        kc = S.kb[chk]
        c = 0.5 * np.log(2 * np.pi)
        if method == "ML":
            ll0 = -c * kc - 0.5 * S.slogv[chk] - 0.5 * rss0
            ll1 = -c * kc - 0.5 * logv1 - 0.5 * rss1
        else:
            ll0 = -c * (kc - 1) - 0.5 * S.slogv[chk] - 0.5 * np.log(S.sw0[chk]) - 0.5 * rss0
            ll1 = -c * (kc - 1) - 0.5 * logv1 - 0.5 * np.log(sw) - 0.5 * rss1
        reset[chk[ll0 - ll1 > LL0_TOL]] = True
    return reset


def _subset_fs_adj(method, s):
    """metafor's ML/REML Fisher-scoring step from the sums ``s`` of ``Subsets.sums``
    (order 2 for ML, 3 for REML); arrays or floats."""
    sw, swy, sw2, sw2y, sw2y2 = s[0], s[1], s[3], s[4], s[5]
    mu = swy / sw
    yPPy = sw2y2 - 2.0 * mu * sw2y + mu * mu * sw2
    if method == "ML":
        return (yPPy - sw) / sw2
    h = sw2 / sw
    return (yPPy - (sw - h)) / (sw2 - 2.0 * s[6] / sw + h * h)


def _subset_eb_adj(s, kb):
    """metafor's EB update ``(Q k / (k - 1) - k) / sum w`` from order-1 sums."""
    sw, swy, swy2 = s[0], s[1], s[2]
    q = swy2 - swy ** 2 / sw
    return (q * kb / (kb - 1) - kb) / sw


def _subset_tau2_metafor(S: Subsets, method, many) -> Tau2Fit:
    """``subset_tau2`` under metafor's default control for the fits ``many`` (k >= 2; the
    others keep tau2 = 0). Fits where metafor fails are computed as under "optimum" and
    flagged safeguarded."""
    B = S.B
    kb = S.kb
    tau2 = np.zeros(B)
    iters = np.zeros(B, dtype=int)
    conv = np.ones(B, dtype=bool)
    reset = np.zeros(B, dtype=bool)
    failed = np.zeros(B, dtype=bool)
    all_fits = many.size == B

    def rows(idx):                      # the rows of S for positions idx of ``many``
        return None if (all_fits and idx.size == B) else many[idx]

    if method == "PM":
        if B == 1:
            def q1(t):
                sw, swy, swy2 = S.sums1(t, 1)
                return swy2 - swy ** 2 / sw

            t, it, above = mf_bounded_root1(q1, kb[0] - 1, S.tau2_max()[0])
            tau2[0], iters[0], failed[0] = t, it, above
        else:
            def q(t, idx):
                sw, swy, swy2 = S.sums(t, rows(idx), 1)
                return swy2 - swy ** 2 / sw

            tau2[many], iters[many], failed[many] = mf_bounded_root(
                q, kb[many] - 1, S.tau2_max(None if all_fits else many))
        if np.any(failed):
            bad = np.flatnonzero(failed)
            tau2[bad], _ = subset_q_root(S, kb[bad] - 1, None, bad)
        return Tau2Fit(tau2, conv, iters, reset, failed)
    start = np.maximum(_subset_closed_form(S, "HE")[many], 0.0)
    order = 1 if method == "EB" else (2 if method == "ML" else 3)
    if B == 1:
        k1 = float(kb[0])
        if method == "EB":
            def step1(t):
                return _subset_eb_adj(S.sums1(t, 1), k1)
        else:
            def step1(t):
                return _subset_fs_adj(method, S.sums1(t, order))

        t, c, it = mf_scoring1(step1, float(start[0]))
        tau2[0], conv[0], iters[0] = t, c, it
    else:
        if method == "EB":
            def step(t, idx):
                return _subset_eb_adj(S.sums(t, rows(idx), 1), kb[many[idx]])
        else:
            def step(t, idx):
                return _subset_fs_adj(method, S.sums(t, rows(idx), order))

        tau2[many], conv[many], iters[many] = mf_scoring(step, start)
    if method != "EB":
        reset = _subset_ll0_reset(S, method, tau2, conv & (tau2 > MF_THRESHOLD))
        tau2 = np.where(reset, 0.0, tau2)
    failed = ~conv
    if np.any(failed):
        bad = np.flatnonzero(failed)
        sub = subset_tau2(Subsets(None, None, None if S.Mf is None else S.Mf[bad], like=S),
                          method, "optimum")
        tau2[bad], conv[bad], reset[bad] = sub.tau2, sub.converged, sub.reset_to_zero
    return Tau2Fit(np.maximum(tau2, 0.0), conv, iters, reset, failed & conv)

def _as_subsets(Y, V, X, mask):
    """(y, v, rows) when the batch is intercept-only subsets of one dataset (``Y`` 1-d or a
    stride-0 broadcast, ``V`` (k,), a 2-d ``mask``) with valid data, else None."""
    if mask is None or (X is not None and not is_intercept_only(np.atleast_2d(
            np.asarray(X, dtype=float).T).T)):
        return None
    y = shared_column(Y)
    v = shared_column(V) if isinstance(V, np.ndarray) and np.ndim(V) == 2 else V
    if y is None or v is None:
        return None
    y = np.asarray(y, dtype=float)
    v = np.asarray(v, dtype=float)
    m = np.asarray(mask, dtype=bool)
    if not (v.ndim == 1 and y.shape == v.shape and m.ndim == 2 and m.shape[0] == y.size
            and np.all(np.isfinite(y)) and np.all(np.isfinite(v)) and np.all(v > 0)):
        return None
    return y, v, m


def _subset_tau2_blocks(yvm, method, control=DEFAULT_CONTROL) -> Tau2Fit:
    """``subset_tau2`` over the columns of a (k, B) mask, in blocks."""
    y, v, m = yvm
    k, B = m.shape
    cells = SUBSET_BLOCK_CELLS_ITERATIVE if method in ITERATIVE else SUBSET_BLOCK_CELLS
    step = max(1, cells // max(k, 1))
    rows = m.T
    parts, first = [], None
    for start in range(0, B, step):
        S = Subsets(y, v, rows[start:start + step], like=first)
        first = first or S
        parts.append(subset_tau2(S, method, control))
    return Tau2Fit(*(np.concatenate(c) for c in zip(*parts)))
