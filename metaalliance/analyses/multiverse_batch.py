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


def trimfill_batch(y, v, masks, method, test, level=95, control="metafor"):
    """(numbers dict of arrays (S,), {subset position: reason}) for masks (S, k)."""
    S, k = masks.shape
    out = _nan(S)
    failures = {}
    fit0 = models.random_effects_batch(y, v, method, test, level=level, mask=masks.T,
                                       control=control)
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
    if good.size:
        X = np.column_stack([np.ones(k), np.sqrt(v)])
        M = masks[good].T
        Yb = np.broadcast_to(y[:, None], M.shape)
        with est.single_threaded_blas():
            tau2 = est.tau2_batch(Yb, v, method, X=X, mask=M, control=control)
        Y2, V2, _, Mf, _ = est.as_batch(Yb, v, X, M)
        f = est.wls(X, Mf / (V2 + tau2), Y2, False)
        sign[good] = np.where(f.beta[:, 1] < 0, -1.0, 1.0)
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
        T = np.zeros((k, len(active)), dtype=bool)
        for j, s in enumerate(active):
            T[order[s][:ys[s].size - k0[s]], j] = True
        est_a = np.empty(len(active))
        sg = np.array([sign[s] for s in active])
        for sval in (1.0, -1.0):
            cols = np.flatnonzero(sg == sval)
            if cols.size:
                r = models.random_effects_batch(sval * y, v, method, "z", level=level,
                                                mask=T[:, cols], control=control)
                est_a[cols] = r.estimate
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
    if zero:
        sub = models.BatchResult(*(np.asarray(a)[zero] for a in fit0))
        _put(out, np.array(zero), sub, np.array([idx[s].size for s in zero]))
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
    return out, failures


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
