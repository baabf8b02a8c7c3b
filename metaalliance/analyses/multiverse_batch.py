"""Batched bias adjustments for the multiverse: trim and fill and PET-PEESE over many subsets.

``trimfill_batch`` is ``bias.trim_and_fill(models.random_effects(y[m], v[m], method, test))``
for every subset mask ``m`` at once: the side regressions (y on sqrt(v), the fit's method) are
one ``estimators.tau2_batch`` call, each trimming iteration one
``models.random_effects_batch`` call over the still-iterating subsets, the refits on observed +
filled studies one batched call over padded columns. ``pet_peese_batch`` is
``bias.pet_peese`` per subset with the t distribution evaluated once for all. The step-by-step
logic (ranks with ties in order, R's rounding, the stopping rule, metafor's L0 estimator) is the
one of ``analyses.bias``; tests/test_multiverse.py checks that both give its numbers.

A subset where the single call would raise (k < 3, equal standard errors, no convergence) gets
NaN here and its reason in ``failures``: the multiverse lists it as not fitted.
"""

from __future__ import annotations

import numpy as np

from metaalliance.analyses.bias import ALPHA, TRIMFILL_MAXITER, _rank_first
from metaalliance.engine import estimators as est
from metaalliance.engine import inference as inf
from metaalliance.engine import models

__all__ = ["trimfill_batch", "pet_peese_batch"]


def _nan(n):
    return {f: np.full(n, np.nan) for f in ("k_model", "estimate", "se", "ci_lower",
                                            "ci_upper", "pi_lower", "pi_upper", "p", "tau2")}


def _put(out, idx, res, kmodel):
    out["k_model"][idx] = kmodel
    out["estimate"][idx] = res.estimate
    out["se"][idx] = res.se
    out["ci_lower"][idx] = res.ci_lower
    out["ci_upper"][idx] = res.ci_upper
    out["pi_lower"][idx] = res.pi_lower
    out["pi_upper"][idx] = res.pi_upper
    out["p"][idx] = res.pvalue
    out["tau2"][idx] = res.tau2


#: the test-independent part of the last few trim-and-fill batches (the z and knha
#: specifications of one method share it: only k0 = 0 returns the fit with its own test)
_CORE_CACHE: dict = {}
_CORE_CACHE_SIZE = 4


def _key(*arrays_and_args) -> bytes:
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for a in arrays_and_args:
        if isinstance(a, np.ndarray):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            h.update(repr(a).encode())
    return h.digest()


def trimfill_batch(y, v, masks, method, test, level=95, control="metafor"):
    """(numbers dict of arrays (S,), {subset position: reason}) for masks (S, k)."""
    S, k = masks.shape
    key = _key(y, v, masks, method, level, control)
    core = _CORE_CACHE.get(key)
    if core is None:
        core = _trimfill_core(y, v, masks, method, level, control)
        if len(_CORE_CACHE) >= _CORE_CACHE_SIZE:
            _CORE_CACHE.pop(next(iter(_CORE_CACHE)))
        _CORE_CACHE[key] = core
    out_f, failures, zero = core
    out = {f: a.copy() for f, a in out_f.items()}
    failures = dict(failures)
    if zero:
        sub = masks[zero]
        sizes = sub.sum(axis=1)
        kmax = int(sizes.max())
        M = np.arange(kmax)[:, None] < sizes[None, :]
        Y = np.zeros((kmax, len(zero)))
        V = np.ones((kmax, len(zero)))
        cols = np.nonzero(sub)[1]
        Y.T[M.T], V.T[M.T] = y[cols], v[cols]
        fit0 = models.random_effects_batch(Y, V, method, test, level=level, mask=M,
                                           control=control)
        _put(out, np.array(zero), fit0, sizes)
    return out, failures


def _trimfill_core(y, v, masks, method, level, control):
    """Everything of ``trimfill_batch`` that does not depend on the test: the numbers of the
    subsets with k0 > 0 (refitted with z, as trimfill()), failures, the k0 = 0 subsets."""
    S, k = masks.shape
    out = _nan(S)
    failures = {}
    idx = [np.flatnonzero(m) for m in masks]
    ok = np.ones(S, dtype=bool)
    for s in range(S):
        if idx[s].size < 3:
            failures[s] = (f"trim and fill: choosing the side as metafor does needs k >= 3 "
                           f"(k = {idx[s].size})")
            ok[s] = False
        elif np.ptp(v[idx[s]]) == 0:
            failures[s] = ("trim and fill: choosing the side as metafor does needs studies of "
                           "different precision (all standard errors are equal)")
            ok[s] = False
    sign = np.ones(S)
    good = np.flatnonzero(ok)
    for s in good:
        sign[s] = _side_sign(y[idx[s]], v[idx[s]], method, control)
    # per subset: its values in the signed, sorted order (stable, as argsort(kind="stable"))
    order, ys, vs = {}, {}, {}
    for s in good:
        yy = sign[s] * y[idx[s]]
        ix = np.argsort(yy, kind="stable")
        order[s], ys[s], vs[s] = idx[s][ix], yy[ix], v[idx[s]][ix]
    k0 = {s: 0 for s in good}
    k0_prev = {s: -1 for s in good}
    beta = {}
    active = [s for s in good]
    it = 0
    while active:
        it += 1
        if it > TRIMFILL_MAXITER:
            for s in active:
                failures[s] = "trim and fill did not converge"
            break
        for s in active:
            k0_prev[s] = k0[s]
        # the trimmed sets as padded columns (the column-wise kernel: for stacked
        # composites the subsets kernel would spend O(S^2) on disjoint blocks)
        kmax = max(ys[s].size - k0[s] for s in active)
        Y = np.zeros((kmax, len(active)))
        V = np.ones((kmax, len(active)))
        T = np.zeros((kmax, len(active)), dtype=bool)
        for j, s in enumerate(active):
            kt = ys[s].size - k0[s]
            Y[:kt, j], V[:kt, j], T[:kt, j] = ys[s][:kt], vs[s][:kt], True
        est_a = models.random_effects_batch(Y, V, method, "z", level=level, mask=T,
                                            control=control).estimate
        nxt = []
        for j, s in enumerate(active):
            b = float(est_a[j])
            beta[s] = b
            n = ys[s].size
            yc = ys[s] - b
            signed = np.sign(yc) * _rank_first(np.abs(yc))
            sr = signed[signed > 0].sum()
            k0_raw = (4 * sr - n * (n + 1)) / (2 * n - 1)
            k0[s] = int(max(0, np.round(k0_raw)))
            if k0[s] != k0_prev[s]:
                if n - k0[s] < 1:
                    failures[s] = "trim and fill trimmed every study"
                else:
                    nxt.append(s)
        active = nxt
    done = [s for s in good if s not in failures]
    zero = [s for s in done if k0[s] == 0]
    fill = [s for s in done if k0[s] > 0]
    if fill:
        kmax = max(idx[s].size + k0[s] for s in fill)
        Y = np.zeros((kmax, len(fill)))
        V = np.ones((kmax, len(fill)))
        Mk = np.zeros((kmax, len(fill)), dtype=bool)
        for j, s in enumerate(fill):
            n = ys[s].size
            fy = sign[s] * (2 * beta[s] - ys[s][n - k0[s]:])
            yy = np.concatenate([y[idx[s]], fy])
            vv = np.concatenate([v[idx[s]], vs[s][n - k0[s]:]])
            Y[:yy.size, j], V[:yy.size, j], Mk[:yy.size, j] = yy, vv, True
        r = models.random_effects_batch(Y, V, method, "z", level=level, mask=Mk,
                                        control=control)
        _put(out, np.array(fill), r, Mk.sum(axis=0))
    return out, failures, zero


def _side_sign(y, v, method, control):
    """-1 when trimfill() fills on the right (the slope of y on sqrt(v) in the fit's model,
    as ``bias.trim_and_fill``: ``models._fit`` of the meta-regression), else +1."""
    import warnings

    X = np.column_stack([np.ones(y.size), np.sqrt(v)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method in est.ITERATIVE:
            tau2 = float(est.design_tau2(est.Design(X, y, v), method, control).tau2[0])
        else:
            tau2 = float(est._tau2_fit(y[:, None], v[:, None], X, np.ones((y.size, 1)),
                                       method, control).tau2[0])
    f = est.wls(X, (1.0 / (v + tau2))[:, None], y[:, None], False)
    return -1.0 if f.beta[0, 1] < 0 else 1.0


def stacked_composites(y, v, codes, masks, rho):
    """``multilevel.aggregate(y[m], v[m], codes[m], rho)`` (weighted, compound symmetry) of
    every subset ``m`` at once, stacked into one dataset with one block mask per subset.

    The composites of a subset are in order of first appearance of their samples, as
    aggregate() orders them; the formula is aggregate()'s (V_c^-1 by Sherman-Morrison)."""
    S, k = masks.shape
    sub, row = np.nonzero(masks)                 # row-major: subset by subset, rows in order
    cl = codes[row]
    n_cl = int(codes.max()) + 1 if codes.size else 1
    pair = sub * n_cl + cl
    uniq, first, inv = np.unique(pair, return_index=True, return_inverse=True)
    # order of first appearance within each subset (np.unique sorts by code)
    order = np.lexsort((first, uniq // n_cl))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    g = rank[inv]
    G = uniq.size
    t = 1.0 / np.sqrt(v[row])
    yy = y[row]
    nk = np.bincount(g, minlength=G)
    s1 = np.bincount(g, t, G)
    s2 = np.bincount(g, t * t, G)
    sy1 = np.bincount(g, t * yy, G)
    sy2 = np.bincount(g, t * t * yy, G)
    single = nk == 1
    rr = np.where(single, 0.0, float(rho))
    cc = rr / (1.0 + (nk - 1) * rr)
    sum_w = (s2 - cc * s1 * s1) / (1.0 - rr)
    sum_wy = (sy2 - cc * s1 * sy1) / (1.0 - rr)
    firstrow = np.zeros(G, dtype=int)
    firstrow[g[::-1]] = np.arange(g.size)[::-1]
    y_agg = np.where(single, yy[firstrow], sum_wy / sum_w)
    v_agg = np.where(single, v[row][firstrow], 1.0 / sum_w)
    gsub = (uniq // n_cl)[order]
    blocks = np.zeros((S, G), dtype=bool)
    blocks[gsub, np.arange(G)] = True
    return y_agg, v_agg, blocks


def pet_peese_batch(y, v, masks, signs, level=95, alpha=ALPHA):
    """PET-PEESE per subset (``bias.pet_peese``); ``signs`` the sign of each subset's pooled
    estimate (the direction of the one-sided PET test)."""
    S = masks.shape[0]
    out = _nan(S)
    failures = {}
    rows = []
    for s in range(S):
        m = masks[s]
        yy, vv = y[m], v[m]
        kk = yy.size
        if kk < 3:
            failures[s] = f"PET-PEESE needs at least 3 studies (k = {kk})"
            continue
        sw = 1.0 / np.sqrt(vv)
        yw = yy * sw
        line = []
        for x, name in ((np.sqrt(vv), "sei"), (vv, "vi")):
            Xw = np.column_stack([np.ones(kk), x]) * sw[:, None]
            q, r = np.linalg.qr(Xw)
            if abs(r[1, 1]) <= 1e-12 * abs(r[0, 0]):
                failures[s] = f"PET-PEESE: the {name} of all studies are equal"
                break
            b = np.linalg.solve(r, q.T @ yw)
            res = yw - Xw @ b
            rss = float(res @ res)
            if rss <= np.finfo(float).eps * float(yw @ yw):
                failures[s] = (f"PET-PEESE: the effect sizes lie exactly on a line in {name} "
                               "(e.g. identical effects), so its t-tests are undefined")
                break
            rinv = np.linalg.inv(r)
            se0 = float(np.sqrt(rss / (kk - 2) * (rinv @ rinv.T)[0, 0]))
            line.append((float(b[0]), se0))
        else:
            rows.append((s, kk, line[0], line[1]))
    if rows:
        pos = np.array([r[0] for r in rows])
        df = np.array([r[1] - 2 for r in rows], dtype=float)
        pet = np.array([r[2] for r in rows])
        peese = np.array([r[3] for r in rows])
        t_pet = pet[:, 0] / pet[:, 1]
        up = np.asarray(signs, dtype=float)[pos] >= 0
        p1 = np.where(up, inf.t_sf(t_pet, df), inf.t_sf(-t_pet, df))
        chosen = np.where((p1 < alpha)[:, None], peese, pet)
        b0, se = chosen[:, 0], chosen[:, 1]
        crit = inf.t_isf((1 - level / 100) / 2, df)
        out["k_model"][pos] = df + 2
        out["estimate"][pos] = b0
        out["se"][pos] = se
        out["ci_lower"][pos] = b0 - crit * se
        out["ci_upper"][pos] = b0 + crit * se
        out["p"][pos] = 2 * inf.t_sf(np.abs(b0 / se), df)
    return out, failures
