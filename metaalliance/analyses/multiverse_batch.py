"""The multiverse's kernels: batched trim and fill and PET-PEESE over many subsets, and
``run_task``, which fits one work unit (a group of specifications) of ``analyses.multiverse``.

``trimfill_batch`` is ``bias.trim_and_fill(models.random_effects(y[m], v[m], method, test))``
for every subset mask ``m`` at once: the side regression (y on sqrt(v) with the fit's method)
per subset through ``estimators.Design`` as the single call does; each trimming iteration one
``models.random_effects_batch`` call over the still-iterating subsets (padded columns); the
refits on observed + filled studies one batched call. The part that does not depend on the
test is computed once for z and knha (cached). ``pet_peese_batch`` is
``bias.pet_peese`` per subset with the t distribution evaluated once for all. The step-by-step
logic (ranks with ties in order, R's rounding, the stopping rule, metafor's L0 estimator) is the
one of ``analyses.bias``; tests/test_multiverse.py checks that both give its numbers.

A subset where the single call would raise (k < 3, equal standard errors, no convergence) gets
NaN here and its reason in ``failures``: the multiverse lists it as not fitted.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from metaalliance.analyses.bias import ALPHA, TRIMFILL_MAXITER, _rank_first
from metaalliance.engine import estimators as est
from metaalliance.engine import inference as inf
from metaalliance.engine import models
from metaalliance.errors import MetaAllianceError

__all__ = ["trimfill_batch", "pet_peese_batch", "stacked_composites", "run_task", "FIELDS"]

#: the numbers of one specification
FIELDS = ("k_model", "estimate", "se", "ci_lower", "ci_upper", "pi_lower", "pi_upper", "p",
          "tau2")
#: rho of the CHE model (0.6: the value i13's che() defaults to, as in Pustejovsky & Tipton
#: 2022)
CHE_RHO = 0.6


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
    """``aggregation.aggregate(y[m], v[m], codes[m], rho)`` (weighted, compound symmetry) of
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


# ------------------------------------------------------------ one work unit of the multiverse


def _stacked_composites(y, v, codes, masks, rho):
    """The composites of every subset stacked into one dataset, and one block mask per
    subset: subsets of one dataset again, so the batched kernels apply (cached: the
    composite specifications of every method and test share them)."""
    key = _key(y, v, codes, masks, rho)
    hit = _COMPOSITES.get(key)
    if hit is None:
        hit = stacked_composites(y, v, codes, masks, rho)
        if len(_COMPOSITES) >= 4:
            _COMPOSITES.pop(next(iter(_COMPOSITES)))
        _COMPOSITES[key] = hit
    return hit


_COMPOSITES: dict = {}


def _padded(y, v, blocks):
    """Disjoint blocks of (y, v) as padded (kmax, S) columns and their mask."""
    sizes = blocks.sum(axis=1)
    kmax = int(sizes.max())
    S = blocks.shape[0]
    M = np.arange(kmax)[:, None] < sizes[None, :]
    Y = np.zeros((kmax, S))
    V = np.ones((kmax, S))
    Y.T[M.T] = y[np.nonzero(blocks)[1]]
    V.T[M.T] = v[np.nonzero(blocks)[1]]
    return Y, V, M


def _batch_numbers(res):
    return {"k_model": res.k.astype(float), "estimate": res.estimate, "se": res.se,
            "ci_lower": res.ci_lower, "ci_upper": res.ci_upper, "pi_lower": res.pi_lower,
            "pi_upper": res.pi_upper, "p": res.pvalue, "tau2": res.tau2}


def _single(model, method, test, bias, y, v, codes, measure, level, rho, control, pet_sign):
    """One non-batched specification: a dict of FIELDS (None where not defined)."""
    from metaalliance.engine import models
    from metaalliance.engine.aggregation import aggregate
    from metaalliance.engine.multilevel import three_level

    if model == "three_level":
        r = three_level(y, v, codes, method=method, test=test, level=level, measure=measure)
        return dict(k_model=r.k, estimate=r.estimate, se=r.se, ci_lower=r.ci_lower,
                    ci_upper=r.ci_upper, pi_lower=r.pi_lower, pi_upper=r.pi_upper, p=r.pvalue,
                    tau2=float(sum(r.sigma2)))
    if model == "che":
        from metaalliance.engine.che import che
        r = che(y, v, codes, rho=CHE_RHO, level=level)
        return dict(k_model=y.size, estimate=r.estimate, se=r.se, ci_lower=r.ci_lower,
                    ci_upper=r.ci_upper, pi_lower=None, pi_upper=None, p=r.pvalue,
                    tau2=float(np.sum(r.sigma2)))
    if model == "composite":
        agg = aggregate(y, v, codes, rho=rho)
        y, v = np.asarray(agg.yi), np.asarray(agg.vi)
    if bias == "pet_peese":
        from metaalliance.analyses.bias import pet_peese

        class _Dir:                 # pet_peese reads yi, vi and the pooled estimate's sign
            pass
        d = _Dir()
        d.yi, d.vi, d.method, d.test, d.level, d.labels = y, v, "REML", "z", level, None
        d.estimate = pet_sign
        r = pet_peese(d)
        line = r.peese if r.selected == "PEESE" else r.pet
        return dict(k_model=y.size, estimate=r.estimate, se=line.intercept_se,
                    ci_lower=r.ci_lower, ci_upper=r.ci_upper, pi_lower=None, pi_upper=None,
                    p=line.intercept_pvalue, tau2=None)
    if bias == "3psm":
        from metaalliance.analyses.selection import selection_model
        r = selection_model(y, v, type="stepfun", steps=(0.025,))
        return dict(k_model=y.size, estimate=r.estimate, se=r.se, ci_lower=r.ci_lower,
                    ci_upper=r.ci_upper, pi_lower=None, pi_upper=None, p=r.pvalue,
                    tau2=r.tau2)
    fit = models.random_effects(y, v, method=method, test=test, level=level, measure=measure,
                                control=control)
    if bias == "trimfill":
        from metaalliance.analyses.bias import trim_and_fill
        fit = trim_and_fill(fit).fit
    return dict(k_model=fit.k, estimate=fit.estimate, se=fit.se, ci_lower=fit.ci_lower,
                ci_upper=fit.ci_upper, pi_lower=fit.pi_lower, pi_upper=fit.pi_upper,
                p=fit.pvalue, tau2=fit.tau2)


def _fit_batch(model, y, v, masks, method, test, level, control):
    """``random_effects_batch`` of every subset; composites (disjoint stacked blocks) as
    padded columns, since the subsets kernel would spend O(S^2) on their zeros."""
    from metaalliance.engine import models

    if model == "composite":
        Yp, Vp, Mp = _padded(y, v, masks)
        return models.random_effects_batch(Yp, Vp, method, test, level=level, mask=Mp,
                                           control=control)
    return models.random_effects_batch(y, v, method, test, level=level, mask=masks.T,
                                       control=control)


def _three_level_rows(out, failures, tests, y, v, codes, masks, rows, method, measure, level):
    """Three-level specifications: one z fit per subset; the t test (rma.mv test = "t",
    df = k - 1) from the same fit, as ``multilevel._assemble`` computes it."""
    from metaalliance.engine.multilevel import three_level

    _, alpha = inf_level(level)
    cache = {}
    for j in range(rows.size):
        m = masks[j]
        key = m.tobytes()
        if key not in cache:
            try:
                cache[key] = three_level(y[m], v[m], codes[m], method=method, test="z",
                                         level=level, measure=measure)
            except MetaAllianceError as exc:
                cache[key] = exc
        r = cache[key]
        if isinstance(r, Exception):
            failures.append((int(rows[j]), str(r)))
            continue
        est, se = r.estimate, r.se
        s2 = float(sum(r.sigma2))
        if tests[j] == "t":
            from metaalliance.engine import inference as inf
            df = float(r.k - 1)
            crit = float(inf.t_isf(alpha / 2, df))
            p = float(2.0 * inf.t_sf(abs(est / se), df))
            half = crit * math.sqrt(float(r.vcov[0, 0]) + s2)
            vals = (est - crit * se, est + crit * se, est - half, est + half, p)
        else:
            vals = (r.ci_lower, r.ci_upper, r.pi_lower, r.pi_upper, r.pvalue)
        for f, x in zip(("ci_lower", "ci_upper", "pi_lower", "pi_upper", "p"), vals):
            out[f][j] = x
        out["k_model"][j], out["estimate"][j], out["se"][j], out["tau2"][j] = r.k, est, se, s2


def inf_level(level):
    from metaalliance.engine.inference import level_alpha
    return level_alpha(level)


def run_task(task, y, v, codes, masks, measure, level, rho, control):
    """Fit one work unit; returns (spec rows, {field: array}, failures, warning counts).

    ``masks`` holds the subsets of this task (in the order of the task's rows)."""
    model, method, test, bias, rows, _subs = task
    if model != "three_level" and not isinstance(test, str):
        # rows of several tests in one task: one sub-task per test (shared caches)
        n = rows.size
        out = {f: np.full(n, np.nan) for f in FIELDS}
        failures, wcount = [], {}
        tests = np.asarray(test)
        for t in dict.fromkeys(tests.tolist()):
            sel = np.flatnonzero(tests == t)
            r, o, fl, wc = run_task((model, method, t, bias, rows[sel], None), y, v, codes,
                                    masks[sel], measure, level, rho, control)
            for f in FIELDS:
                out[f][sel] = o[f]
            failures += fl
            for msg, c in wc.items():
                wcount[msg] = wcount.get(msg, 0) + c
        return rows, out, failures, wcount
    n = rows.size
    out = {f: np.full(n, np.nan) for f in FIELDS}
    failures = []
    wcount: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if model == "three_level":
            _three_level_rows(out, failures, test, y, v, codes, masks, rows, method, measure,
                              level)
            batched, skip = False, True
        else:
            skip = False
        if model == "composite":
            yb, vb, mb_ = _stacked_composites(y, v, codes, masks, rho)
        else:
            yb, vb, mb_ = y, v, masks
        batched = model in ("univariate", "composite") and bias != "3psm"
        if batched:
            try:
                if bias == "none":
                    res = _fit_batch(model, yb, vb, mb_, method, test, level, control)
                    got, fails = _batch_numbers(res), {}
                elif bias == "trimfill":
                    got, fails = trimfill_batch(yb, vb, mb_, method, test, level, control)
                else:
                    r0 = _fit_batch(model, yb, vb, mb_, "REML", "z", level, control)
                    got, fails = pet_peese_batch(yb, vb, mb_, r0.estimate, level)
                for f in FIELDS:
                    out[f] = np.asarray(got[f], dtype=float)
                failures += [(int(rows[j]), why) for j, why in fails.items()]
            except MetaAllianceError:
                batched = False       # a batch-wide failure: fit one by one below
        if not batched and not skip:
            signs = np.ones(n)
            if bias == "pet_peese":
                for j in range(n):
                    try:
                        e = models.random_effects(yb[mb_[j]], vb[mb_[j]], "REML", "z",
                                                  control=control).estimate
                        signs[j] = 1.0 if e >= 0 else -1.0
                    except MetaAllianceError:
                        pass
            for j in range(n):
                m = masks[j]
                try:
                    vals = _single(model, method, test, bias, y[m], v[m], codes[m], measure,
                                   level, rho, control, signs[j])
                except MetaAllianceError as exc:
                    failures.append((int(rows[j]), str(exc)))
                    continue
                except (ArithmeticError, np.linalg.LinAlgError) as exc:
                    failures.append((int(rows[j]), f"numerical failure: {exc}"))
                    continue
                for f in FIELDS:
                    out[f][j] = np.nan if vals[f] is None else float(vals[f])
    for w in caught:
        msg = str(w.message)
        wcount[msg] = wcount.get(msg, 0) + 1
    return rows, out, failures, wcount
