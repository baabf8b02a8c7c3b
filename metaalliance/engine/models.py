"""Random-effects meta-analysis, meta-regression and subgroup analysis, as metafor's ``rma.uni``.

Public API (see CONTRACT.md):

- ``random_effects(yi, vi, method="REML", test="z", level=95, labels=None, measure="ZCOR")``
- ``random_effects_batch(Y, V, method="REML", test="z", level=95, mask=None)``
- ``meta_regression(yi, vi, data, formula, ...)`` / ``meta_regression_matrix(yi, vi, X, names, ...)``
  with an optional permutation test (``permutations=N, seed=S``) as ``permutest()``
- ``subgroups(yi, vi, groups, method=..., tau2_model="separate"|"pooled")``
- ``design_matrix(data, formula)``: metafor's ``factor()`` design from a DataFrame
- ``three_level(...)``: forwarded to ``multilevel.three_level``

Which metafor call each function reproduces:

=====================================  =======================================================
random_effects(yi, vi, m, t)           rma(yi, vi, method=m, test=t); predict(); confint()
meta_regression(..., "~ a + b")        rma(yi, vi, mods = ~ a + b, method=m, test=t)
  ... permutations=N, seed=S           permutest(res, iter=N) (exact when N >= #permutations)
subgroups(..., "separate")             rma(..., subset = g == level) per level; Q-between =
                                       rma(est, sei, mods = ~ level, method="EE")$QM
subgroups(..., "pooled")               rma(yi, vi, mods = ~ g)$QM; estimates from ~ g - 1
=====================================  =======================================================

k = 1 follows metafor: tau^2 is set to 0, Q = 0, I^2 = 0, H^2 = 1, knha falls back to z
(both with a MetaAllianceWarning); se of tau^2 and the heterogeneity CIs are None.

``control`` (every function; ``options.CONTROLS``): "metafor" (the default) iterates tau^2 and
the Q-profile CI exactly as metafor's default control does, so every number equals the plain
metafor call in the table (and permutest() refits are skipped where metafor's fail);
"optimum" iterates to the exact optimum (= metafor with
``control = list(threshold = 1e-10, tol = 1e-12)``). Where metafor's default algorithm stops
with an error (Fisher scoring not converged in 100 iterations, PM's root beyond
``tau2.max``), "metafor" warns, uses the optimum and says so (``fallback`` of the result).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np

from metaalliance.engine import estimators as est
from metaalliance.engine import inference as inf
from metaalliance.errors import DataError, MetaAllianceWarning, ModelError, OptionError
from metaalliance.options import (CONTROLS, DEFAULT_CONTROL, METHODS, TAU2_MODELS, TESTS, VI_MAX, VI_MIN,
                      YI_MAX, check_option)
from metaalliance.engine.results import (Coefficient, MetaRegressionResult, RandomEffectsResult, SubgroupEstimate,
                      SubgroupResult, provenance)

# the permutation test lives in engine/permutation.py (split for size); names kept here
from metaalliance.engine.permutation import (  # noqa: E402,F401
    COMPTOL, PERM_CHUNK, PermutationResult, _batch_stats, _exact_count, _multiset_permutations,
    permutation_test)

MEASURES = ("ZCOR", "generic")
#: metafor warns when max(vi) / min(vi) reaches this ("Ratio of largest to smallest sampling
#: variance extremely large. May not be able to obtain stable results.")
VI_RATIO_WARN = 1e7
INTERCEPT = "intrcpt"


# --------------------------------------------------------------------------------------------
# input validation


def _vectors(yi, vi, labels=None):
    try:
        y = np.asarray(yi, dtype=float)
        v = np.asarray(vi, dtype=float)
    except (TypeError, ValueError):
        raise DataError("yi and vi must be numeric") from None
    if y.ndim != 1 or v.ndim != 1:
        raise DataError("yi and vi must be one-dimensional")
    if y.shape != v.shape:
        raise DataError(f"yi has {y.size} values but vi has {v.size}")
    k = y.size
    if k == 0:
        raise DataError("no studies: yi is empty")
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise DataError(f"yi has missing or non-finite values at position(s) {_pos(bad)}")
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise DataError(f"vi has missing or non-finite values at position(s) {_pos(bad)}")
    bad = np.flatnonzero(v <= 0)
    if bad.size:
        raise DataError(f"vi must be > 0; not so at position(s) {_pos(bad)}")
    bad = np.flatnonzero(np.abs(y) > YI_MAX)
    if bad.size:
        raise DataError(f"yi must lie within +-{YI_MAX:g} (beyond, the weighted sums overflow); "
                        f"not so at position(s) {_pos(bad)}")
    bad = np.flatnonzero((v < VI_MIN) | (v > VI_MAX))
    if bad.size:
        raise DataError(f"vi must lie between {VI_MIN:g} and {VI_MAX:g} (beyond, the weights "
                        f"1/vi overflow); not so at position(s) {_pos(bad)}")
    if labels is None:
        labels = tuple(f"Study {i + 1}" for i in range(k))
    else:
        labels = tuple(str(x) for x in labels)
        if len(labels) != k:
            raise DataError(f"labels has {len(labels)} entries but yi has {k}")
    return y, v, labels


def _pos(idx, n=5):
    s = ", ".join(str(int(i) + 1) for i in idx[:n])
    return s + (" ..." if idx.size > n else "")


def _options(method, test, measure=None, control=DEFAULT_CONTROL):
    check_option("method", method, METHODS)
    check_option("test", test, TESTS)
    if measure is not None:
        check_option("measure", measure, MEASURES)
    check_option("control", control, CONTROLS)


def _has_intercept(X) -> np.ndarray:
    return np.all(X == 1.0, axis=0)


def _none(x):
    x = float(x)
    return None if math.isnan(x) else x


# --------------------------------------------------------------------------------------------
# the core single-model fit


def _metafor_fails(method) -> str:
    """What metafor's default control does where ``Tau2Fit.safeguarded`` is set."""
    if method == "PM":
        return ("the root of Q(tau^2) = k - p lies beyond metafor's search interval "
                "[0, max(100, 10 mad(yi)^2)] (metafor stops: \"Value of 'tau2.max' too low\")")
    return ("metafor's Fisher scoring does not converge within 100 iterations (metafor stops: "
            "\"Fisher scoring algorithm did not converge\")")


#: the quantities of a fit that must be finite (else ModelError, never NaN in a result)
_FINITE = ("beta", "se", "stat", "pval", "ci_lo", "ci_hi", "pi_lo", "pi_hi", "tau2", "qe", "qm",
           "i2", "h2")


def _fit(y, v, X, names, method, test, level, control=DEFAULT_CONTROL):
    """Fit one model; a dict of every quantity at full precision.

    Numerically hopeless data (weights beyond double precision, a design singular in
    floating point though not exactly) stop with a ModelError instead of NaN results."""
    try:
        with np.errstate(all="ignore"):
            r = _fit_numbers(y, v, X, names, method, test, level, control)
    except np.linalg.LinAlgError:
        raise ModelError(_hopeless(v, "a matrix of the fit is numerically singular")) from None
    bad = [key for key in _FINITE if not np.all(np.isfinite(np.asarray(r[key], dtype=float)))]
    if bad:
        raise ModelError(_hopeless(v, "the results would not be finite numbers"))
    return r


def _hopeless(v, what: str) -> str:
    ratio = float(v.max() / v.min())
    if ratio >= VI_RATIO_WARN:
        return (f"the model cannot be fitted reliably: {what}; the largest sampling variance "
                f"is {ratio:.3g} times the smallest, beyond what double precision resolves "
                "(check the studies with extreme variances)")
    return (f"the model cannot be fitted reliably: {what} (moderators nearly collinear or on "
            "very different scales? rescale them)")


def _fit_numbers(y, v, X, names, method, test, level, control=DEFAULT_CONTROL):
    """The body of ``_fit``."""
    _options(method, test, None, control)
    lv, alpha = inf.level_alpha(level)
    k, p = X.shape
    int_only = est.is_intercept_only(X)
    est.check_design(X, names)
    one = k == 1 and p == 1
    if one:
        warnings.warn("k = 1: tau^2 is set to 0 and heterogeneity cannot be assessed "
                      "(as metafor)", MetaAllianceWarning, stacklevel=3)
        if test == "knha":
            warnings.warn("test 'knha' needs k >= 2; using test 'z' (as metafor)",
                          MetaAllianceWarning, stacklevel=3)
            test = "z"
    elif k <= p:
        raise ModelError(f"the model has {p} coefficients but only {k} studies; "
                         "a model needs more studies than coefficients")
    ratio = float(v.max() / v.min())
    if ratio >= VI_RATIO_WARN:
        warnings.warn(f"the largest sampling variance is {ratio:.3g} times the smallest "
                      f"(>= {VI_RATIO_WARN:g}): results may be numerically unstable "
                      "(as metafor warns)", MetaAllianceWarning, stacklevel=3)
    if method == "EE" and test == "knha":
        warnings.warn("the Knapp-Hartung method is not meant for EE models (as metafor warns)",
                      MetaAllianceWarning, stacklevel=3)
    Y, V, M = y[:, None], v[:, None], np.ones((k, 1))
    # intercept-only: the sums kernel (the code path of leave-one-out, cumulative and GOSH);
    # meta-regressions with an intercept: the cross-product kernel for one fit
    S = est.Subsets(y, v) if int_only else None
    D = est.Design(X, y, v) if (not int_only and k > p and _has_intercept(X).any()) else None
    if S is not None:
        tfit = est.subset_tau2(S, method, control)
    elif D is not None:
        tfit = est.design_tau2(D, method, control)
    else:
        tfit = est._tau2_fit(Y, V, X, M, method, control)
    tau2 = float(tfit.tau2[0])
    converged = bool(tfit.converged[0])
    method_used = method if converged else "DL"
    fallback = None
    if control == "metafor" and tfit.safeguarded[0]:
        fallback = (f"{_metafor_fails(method)}; tau^2 is the {method} estimate found by the "
                    "safeguarded search of control 'optimum'")
        warnings.warn(f"{method}: {fallback}", MetaAllianceWarning, stacklevel=3)
    if not converged:
        warnings.warn(f"{method} estimation of tau^2 did not converge; using the DL estimate",
                      MetaAllianceWarning, stacklevel=3)
    if tfit.reset_to_zero[0]:
        warnings.warn("Fisher scoring may have stopped at a local maximum; tau^2 set to 0 "
                      "(as metafor)", MetaAllianceWarning, stacklevel=3)
    w = 1.0 / (v + tau2)
    f = est.wls(X, w[:, None], Y, int_only)
    beta = f.beta[0].copy()
    vb = f.A[0].copy()
    df = None
    if test == "knha":
        s2w = float(inf.knha_scale(Y, V, M, X, np.array([tau2]), int_only)[0])
        if s2w == 0.0:
            raise ModelError("the Knapp-Hartung adjustment is undefined: the weighted residuals "
                             "are all zero (identical effect sizes?); use test 'z'")
        vb *= s2w
        df = k - p
    se = np.sqrt(np.diag(vb))
    stat, pval, lo, hi = inf.wald(beta, se, test, alpha, df)
    has_int = _has_intercept(X)
    btt = inf.qm_coefficients(X)
    bb = beta[btt]
    qm = float(bb @ np.linalg.solve(vb[np.ix_(btt, btt)], bb))
    m = len(btt)
    if test == "knha":
        qm /= m
        qm_p = float(inf.f_sf(qm, m, k - p))
    else:
        qm_p = float(inf.chi2_sf(qm, m))
    qe, qdf, qp, vt = (float(a[0]) for a in inf.heterogeneity(Y, V, M, X, int_only))
    i2, h2 = (float(a) for a in inf.i2_h2(method, tau2, vt, qe, qdf))
    se_t2 = None if one else _none(est.se_tau2(method_used, Y, V, X, M, tfit.tau2)[0])
    if one:
        t2lo = t2hi = i2lo = i2hi = h2lo = h2hi = None
    else:
        lb, ub = inf.q_profile_ci(Y, V, M, X, None if method == "EE" else np.array([tau2]),
                                  alpha, int_only, subsets=S, design=D, control=control)
        t2lo, t2hi = float(lb[0]), float(ub[0])
        i2lo, h2lo = (float(a) for a in inf.i2_h2_from_tau2(t2lo, vt))
        i2hi, h2hi = (float(a) for a in inf.i2_h2_from_tau2(t2hi, vt))
    crit = float(inf.crit_value(test, alpha, df))
    pi_lo, pi_hi = inf.prediction_interval(beta, se, tau2, crit)
    r2 = None
    if p > 1 and has_int.any():
        r2 = _pseudo_r2(y, v, X, method, tau2, f, w, control)
    return dict(
        k=k, p=p, method=method, method_used=method_used, converged=converged, test=test,
        level=lv, alpha=alpha, tau2=tau2, se_tau2=se_t2, beta=beta, vb=vb, se=se, stat=stat,
        pval=pval, ci_lo=lo, ci_hi=hi, df=df, crit=crit, pi_lo=pi_lo, pi_hi=pi_hi, qm=qm,
        qm_df=m, qm_df2=(k - p if test == "knha" else None), qm_p=qm_p, btt=btt, qe=qe,
        qe_df=int(qdf), qe_p=qp, vt=vt, i2=i2, h2=h2, tau2_ci=(t2lo, t2hi),
        i2_ci=(i2lo, i2hi), h2_ci=(h2lo, h2hi), weights=100 * w / w.sum(), r2=r2,
        iterations=int(tfit.iterations[0]), control=control, fallback=fallback,
    )


def _pseudo_r2(y, v, X, method, tau2, f, w, control=DEFAULT_CONTROL):
    """metafor's R^2 (r2def "1"): max(0, 100 (tau2_RE - tau2) / tau2_RE); EE: adjusted R^2 of
    the weighted least-squares regression (summary(lm(yi ~ X, weights = 1/vi)))."""
    k, p = X.shape
    if method == "EE":
        if np.var(y) == 0:
            return 0.0
        fitted = y - f.r[:, 0]
        mw = np.sum(w * fitted) / w.sum()
        mss = np.sum(w * (fitted - mw) ** 2)
        rss = np.sum(w * f.r[:, 0] ** 2)
        r2 = mss / (mss + rss)
        return max(0.0, 100 * (1 - (1 - r2) * (k - 1) / (k - p)))
    # metafor refits rma.uni(yi, vi, method) with the model's control
    re = est.subset_tau2(est.Subsets(y, v), method, control)
    tau2_re = float(re.tau2[0])
    if tau2_re == 0.0:
        return 0.0
    return max(0.0, 100 * (tau2_re - tau2) / tau2_re)


# --------------------------------------------------------------------------------------------
# random-effects model


def random_effects(yi, vi, method="REML", test="z", level=95, labels=None, measure="ZCOR",
                   control=DEFAULT_CONTROL):
    """Pool effect sizes with a random-effects model (``method="EE"``: equal effects).

    Parameters
    ----------
    yi, vi : effect sizes and sampling variances (Fisher z and 1/(n-3) for correlations).
    method : tau^2 estimator, one of ``options.METHODS`` (default REML, as metafor).
    test : "z" (normal) or "knha" (Knapp-Hartung, t with k - 1 df).
    level : confidence level in percent (95) or as a fraction (0.95).
    labels : study labels (default "Study 1", ...).
    measure : "ZCOR" (yi are Fisher z; tanh for display) or "generic".
    control : "metafor" (default): tau^2 and its Q-profile CI are found exactly as metafor's
        default control finds them (Fisher scoring to |change| <= 1e-5, uniroot with
        tol = eps^0.25), so every number equals a plain ``rma()``/``confint()`` call;
        "optimum": iterate to the exact optimum (``options.CONTROLS``).

    Returns
    -------
    RandomEffectsResult

    Examples
    --------
    >>> res = random_effects([0.1, 0.3, 0.35, 0.6], [0.01, 0.02, 0.015, 0.03], method="DL")
    >>> # metafor: rma(c(.1, .3, .35, .6), c(.01, .02, .015, .03), method = "DL")
    >>> round(res.estimate, 4), round(res.tau2, 4), res.q_df
    (0.3089, 0.0224, 3)
    """
    _options(method, test, measure, control)
    y, v, labels = _vectors(yi, vi, labels)
    X = np.ones((y.size, 1))
    r = _fit(y, v, X, [INTERCEPT], method, test, level, control)
    return RandomEffectsResult(
        k=r["k"], method=method, test=r["test"], level=r["level"], measure=measure,
        estimate=float(r["beta"][0]), se=float(r["se"][0]), stat=float(r["stat"][0]),
        pvalue=float(r["pval"][0]), ci_lower=float(r["ci_lo"][0]), ci_upper=float(r["ci_hi"][0]),
        pi_lower=float(r["pi_lo"][0]), pi_upper=float(r["pi_hi"][0]), df=r["df"],
        tau2=r["tau2"], se_tau2=r["se_tau2"], tau2_ci_lower=r["tau2_ci"][0],
        tau2_ci_upper=r["tau2_ci"][1], i2=r["i2"], i2_ci_lower=r["i2_ci"][0],
        i2_ci_upper=r["i2_ci"][1], h2=r["h2"], h2_ci_lower=r["h2_ci"][0],
        h2_ci_upper=r["h2_ci"][1], q=r["qe"], q_df=r["qe_df"], q_pvalue=r["qe_p"], vt=r["vt"],
        yi=_ro(y), vi=_ro(v), weights=_ro(r["weights"]), labels=labels,
        provenance=provenance(method, r["test"], r["k"], y, v, method_used=r["method_used"],
                              measure=measure, level=r["level"], control=control,
                              **_fallback_prov(r)),
        converged=r["converged"], method_used=r["method_used"], control=control,
        fallback=r["fallback"],
    )


def _fallback_prov(r) -> dict:
    return {} if r["fallback"] is None else {"fallback": r["fallback"]}


def _ro(a):
    a = np.array(a, dtype=float, copy=True)
    a.setflags(write=False)
    return a


class BatchResult(NamedTuple):
    """Arrays of shape (B,) from ``random_effects_batch``."""

    k: np.ndarray
    estimate: np.ndarray
    se: np.ndarray
    stat: np.ndarray
    pvalue: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    pi_lower: np.ndarray
    pi_upper: np.ndarray
    tau2: np.ndarray
    q: np.ndarray
    q_pvalue: np.ndarray
    i2: np.ndarray
    h2: np.ndarray
    converged: np.ndarray


def random_effects_batch(Y, V, method="REML", test="z", level=95, mask=None,
                         control=DEFAULT_CONTROL) -> BatchResult:
    """``random_effects`` for every column of ``Y`` (k, B) at once (no tau^2 CIs).

    ``V`` is (k,) or (k, B); ``mask`` (k, B) bool selects the studies of each column's fit
    (leave-one-out: ``~np.eye(k, dtype=bool)``; cumulative: ``np.tri(k, dtype=bool).T``).
    Each column gives exactly what ``random_effects`` gives for its studies (columns with
    one study follow the k = 1 rule without warnings; knha falls back to z there).
    ``control`` as in ``random_effects`` (metafor's leave1out(), cumul(), gosh() ... refit
    with the model's control); ``converged`` is False where tau^2 is the DL fallback.

    Subsets of one dataset (``Y`` 1-d or a stride-0 broadcast of one column, ``V`` (k,),
    and a mask) go through ``estimators.Subsets``: sums over each subset as BLAS products,
    in cache-sized blocks; memory O(k B) for the mask only. Other batches (permuted or
    simulated columns) use the column-wise code.

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([0.1, 0.3, 0.35, 0.6]); vi = np.array([0.01, 0.02, 0.015, 0.03])
    >>> loo = random_effects_batch(yi, vi, "DL", mask=~np.eye(4, dtype=bool))
    >>> # metafor: leave1out(rma(yi, vi, method = "DL"))
    >>> [round(float(x), 4) for x in loo.estimate]
    [0.3889, 0.323, 0.306, 0.2323]
    """
    _options(method, test, None, control)
    lv, alpha = inf.level_alpha(level)
    y = est.shared_column(Y)
    v = est.shared_column(V) if isinstance(V, np.ndarray) and V.ndim == 2 else V
    if y is not None and mask is not None and v is not None:
        y = np.asarray(y, dtype=float)
        v = np.asarray(v, dtype=float)
        m = np.asarray(mask, dtype=bool)
        if (v.ndim == 1 and y.shape == v.shape and m.ndim == 2 and m.shape[0] == y.size
                and np.all(np.isfinite(y)) and np.all(np.isfinite(v)) and np.all(v > 0)):
            with est.single_threaded_blas():
                return _subset_batch(y, v, m, method, test, alpha, control)
    if mask is not None and isinstance(Y, np.ndarray) and np.ndim(Y) == 1:
        Y = np.broadcast_to(np.asarray(Y, dtype=float)[:, None], np.shape(mask))
    Y, V, X, M, _ = est.as_batch(Y, V, None, mask)
    kb = M.sum(axis=0)
    if np.any(kb < 1):
        raise ModelError("a column of the batch has no studies")
    with est.single_threaded_blas():
        tfit = est._tau2_fit(Y, V, X, M, method, control)
    tau2 = tfit.tau2
    w = M / (V + tau2)
    f = est.wls(X, w, Y, True)
    beta = f.beta[:, 0]
    var = f.A[:, 0, 0].copy()
    df = kb - 1
    if test == "knha":
        with np.errstate(divide="ignore", invalid="ignore"):
            s2w = inf.knha_scale(Y, V, M, X, tau2, True)
        s2w = np.where(df > 0, s2w, 1.0)
        _check_s2w(s2w)
        var = var * s2w
    qe, qdf, qp, vt = inf.heterogeneity(Y, V, M, X, True)
    return _batch_result(kb, beta, var, tau2, qe, qp, vt, df, method, test, alpha,
                         tfit.converged)


def _check_s2w(s2w, offset=0):
    zero = s2w == 0
    if np.any(zero):
        raise ModelError("the Knapp-Hartung adjustment is undefined for batch column(s) "
                         f"{_pos(np.flatnonzero(zero) + offset)}: all weighted residuals are zero")


def _batch_result(kb, beta, var, tau2, qe, qp, vt, df, method, test, alpha, converged):
    se = np.sqrt(var)
    stat = beta / se
    if test == "knha":
        dft = np.where(df > 0, df, 1)
        pval = np.where(df > 0, 2 * inf.t_sf(np.abs(stat), dft), 2 * inf.norm_sf(np.abs(stat)))
        crit = np.where(df > 0, inf.t_isf(alpha / 2, dft), inf.norm_isf(alpha / 2))
    else:
        pval = 2 * inf.norm_sf(np.abs(stat))
        crit = np.full(beta.shape, inf.norm_isf(alpha / 2))
    i2, h2 = inf.i2_h2(method, tau2, vt, qe, df)
    pl, pu = inf.prediction_interval(beta, se, tau2, crit)
    return BatchResult(kb.astype(int), beta, se, stat, pval, beta - crit * se, beta + crit * se,
                       pl, pu, tau2, qe, qp, i2, h2, converged)


def _subset_batch(y, v, mask, method, test, alpha, control=DEFAULT_CONTROL) -> BatchResult:
    """``random_effects_batch`` for subsets of one dataset, in blocks of fits."""
    k, B = mask.shape
    if B == 0:
        raise ModelError("the batch has no columns")
    rows = mask.T
    cells = est.SUBSET_BLOCK_CELLS_ITERATIVE if method in est.ITERATIVE else est.SUBSET_BLOCK_CELLS
    step = max(1, cells // max(k, 1))
    parts = []
    first = None
    for start in range(0, B, step):
        S = est.Subsets(y, v, rows[start:start + step], like=first)
        first = first or S
        if np.any(S.kb < 1):
            raise ModelError("a column of the batch has no studies")
        tfit = est.subset_tau2(S, method, control)
        tau2 = tfit.tau2
        sw, swy, _ = S.sums(tau2, None, 1)
        var = 1.0 / sw
        if test == "knha":
            df = S.kb - 1
            rss = S.rss(tau2, swy / sw)
            with np.errstate(divide="ignore", invalid="ignore"):
                s2w = np.where(rss <= np.finfo(float).eps, 0.0, rss / df)
            s2w = np.where(df > 0, s2w, 1.0)
            _check_s2w(s2w, start)
            var = var * s2w
        parts.append((S.kb, S.estimate(swy, sw), var, tau2, S.q0(), S.sw0, S.sw20,
                      tfit.converged))
    kb, beta, var, tau2, q0, sw0, sw20, conv = (np.concatenate(c) for c in zip(*parts))
    df = kb - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        qe = np.where(df > 0, np.maximum(0.0, q0), 0.0)
        vt = np.where(df > 0, df / (sw0 - sw20 / sw0), 0.0)
    qp = np.where(df > 0, inf.chi2_sf(qe, np.maximum(df, 1)), 1.0)
    return _batch_result(kb, beta, var, tau2, qe, qp, vt, df, method, test, alpha, conv)


# --------------------------------------------------------------------------------------------
# design matrices from formulas


def _check_moderator(x, name) -> None:
    """A numeric moderator must be finite (missing aside) and within +-YI_MAX: beyond, the
    cross-products X'WX overflow and the model would be reported as rank deficient."""
    bad = np.flatnonzero(np.isinf(x) | (np.abs(np.nan_to_num(x)) > YI_MAX))
    if bad.size:
        raise DataError(f"formula: {name} has a value beyond +-{YI_MAX:g} at position(s) "
                        f"{_pos(bad)}; rescale it (e.g. thousands instead of units)")


def design_matrix(data, formula: str):
    """Design matrix of ``formula`` over ``data`` as R's ``model.matrix`` (metafor's coding).

    Built by ``engine.formulas.design_matrix`` (formulaic): interactions, ``factor()``/``C()``,
    ``I()``, ``center()``; treatment contrasts, first (sorted) level the reference, the
    intercept ``intrcpt`` first. Returns (X, names, keep).
    """
    from metaalliance.engine.formulas import design_matrix as _dm

    return _dm(data, formula)


# --------------------------------------------------------------------------------------------
# meta-regression


def meta_regression(yi, vi, data, formula, method="REML", test="z", level=95, labels=None,
                    measure="ZCOR", permutations=None, seed=None, exact=False, progress=None,
                    control=DEFAULT_CONTROL, permci=False, permci_progress=None):
    """Mixed-effects meta-regression ``rma(yi, vi, mods = formula, data = data)``.

    Rows with a missing value in a moderator are omitted with a MetaAllianceWarning (as
    metafor's na.omit) and counted in ``omitted``. ``permutations=N`` (with ``seed``) adds
    permutest() p-values for QM and every coefficient; the test is exact (all distinct
    permutations) when their number is <= N or ``exact=True``. ``progress(done, total)`` is
    called as batches of permutations are fitted (the command line's progress bar).
    ``control`` as in ``random_effects``; the permutation refits use it too (as permutest()
    refits with the model's control), unless metafor's control cannot fit the observed model:
    then they use 'optimum', as the observed fit does, with a warning. ``permci=True`` (or a
    list of coefficient names) adds permutation-based CIs (``permutest(permci = TRUE)``,
    engine/permci.py) as each coefficient's ``perm_ci_lower``/``perm_ci_upper``;
    ``permci_progress(done, total)`` is called per bound searched.
    """
    _options(method, test, measure, control)
    y, v, labels = _vectors(yi, vi, labels)
    if len(data) != y.size:
        raise DataError(f"data has {len(data)} rows but yi has {y.size} values")
    X, names, keep = design_matrix(data, formula)
    omitted = int((~keep).sum())
    if omitted:
        warnings.warn(f"{omitted} row(s) with missing moderator values omitted",
                      MetaAllianceWarning, stacklevel=2)
        y, v, X = y[keep], v[keep], X[keep]
        labels = tuple(lb for lb, kp in zip(labels, keep) if kp)
    return _meta_regression(y, v, X, names, method, test, level, labels, measure, permutations,
                            seed, exact, formula, omitted, progress, control, permci,
                            permci_progress)


def meta_regression_matrix(yi, vi, X, names=None, method="REML", test="z", level=95,
                           labels=None, measure="ZCOR", permutations=None, seed=None,
                           exact=False, progress=None, control=DEFAULT_CONTROL, permci=False,
                           permci_progress=None):
    """Meta-regression on a ready design matrix ``X`` (include the intercept column yourself)."""
    _options(method, test, measure, control)
    y, v, labels = _vectors(yi, vi, labels)
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if X.shape[0] != y.size:
        raise DataError(f"X has {X.shape[0]} rows but yi has {y.size} values")
    if not np.all(np.isfinite(X)):
        raise DataError("X has missing or non-finite values")
    _check_moderator(X.ravel(), "X")
    if names is None:
        names = [INTERCEPT if np.all(X[:, j] == 1) else f"x{j}" for j in range(X.shape[1])]
    names = list(names)
    if len(names) != X.shape[1]:
        raise DataError(f"{len(names)} names for {X.shape[1]} columns of X")
    return _meta_regression(y, v, X, names, method, test, level, labels, measure, permutations,
                            seed, exact, None, 0, progress, control, permci, permci_progress)


def _meta_regression(y, v, X, names, method, test, level, labels, measure, permutations, seed,
                     exact, formula, omitted, progress=None, control=DEFAULT_CONTROL,
                     permci=False, permci_progress=None):
    if y.size == 0:
        raise DataError("no studies left after omitting rows with missing moderator values")
    if permci is not False and permci is not None and permutations is None:
        raise OptionError("permci: needs permutations=N (the permutation test it inverts)")
    r = _fit(y, v, X, names, method, test, level, control)
    perm = pci = None
    if permutations is not None:
        perm_control = control
        if r["fallback"] is not None:
            # metafor cannot fit the observed model, so it has no permutest() to match; under its
            # control most refits would fail too and be skipped, leaving a p-value of a few fits
            perm_control = "optimum"
            warnings.warn("permutation refits use control 'optimum', as the observed model "
                          "does (metafor's default control cannot fit it)",
                          MetaAllianceWarning, stacklevel=3)
        perm = permutation_test(y, v, X, method, r["test"], r["btt"], r["stat"], r["qm"],
                                permutations, seed, exact, progress, perm_control)
        if permci is not False and permci is not None:
            pci = _permci(y, v, X, names, r, method, level, permutations, seed, exact,
                          perm_control, permci, permci_progress)
    coefs = tuple(
        Coefficient(name=names[j], estimate=float(r["beta"][j]), se=float(r["se"][j]),
                    stat=float(r["stat"][j]), pvalue=float(r["pval"][j]),
                    ci_lower=float(r["ci_lo"][j]), ci_upper=float(r["ci_hi"][j]),
                    perm_pvalue=(float(perm.pvalues[j]) if perm else None),
                    perm_ci_lower=(pci.lower[j] if pci else None),
                    perm_ci_upper=(pci.upper[j] if pci else None))
        for j in range(len(names)))
    return MetaRegressionResult(
        k=r["k"], method=method, test=r["test"], level=r["level"], measure=measure,
        formula=formula, coefficients=coefs, vcov=_ro(r["vb"]), df=r["df"], tau2=r["tau2"],
        se_tau2=r["se_tau2"], tau2_ci_lower=r["tau2_ci"][0], tau2_ci_upper=r["tau2_ci"][1],
        i2=r["i2"], h2=r["h2"], qm=r["qm"], qm_df=r["qm_df"], qm_df2=r["qm_df2"],
        qm_pvalue=r["qm_p"], qe=r["qe"], qe_df=r["qe_df"], qe_pvalue=r["qe_p"], r2=r["r2"],
        yi=_ro(y), vi=_ro(v), X=_ro(X), weights=_ro(r["weights"]), labels=labels,
        provenance=provenance(method, r["test"], r["k"], y, v, method_used=r["method_used"],
                              measure=measure, level=r["level"], formula=formula,
                              names=list(names), control=control, **_fallback_prov(r)),
        converged=r["converged"], method_used=r["method_used"], omitted=omitted,
        permutations=(perm.iterations if perm else None),
        permutation_exact=(perm.exact if perm else None),
        perm_qm_pvalue=(float(perm.qm_pvalue) if perm else None),
        seed=(seed if perm else None), qm_coefficients=tuple(names[j] for j in r["btt"]),
        control=control, fallback=r["fallback"],
        permutations_failed=(int(perm.failed) if perm else None),
        permci_tests=(pci.tests if pci else None),
    )


def _permci(y, v, X, names, r, method, level, permutations, seed, exact, control, permci,
            progress):
    """``permutest(res, permci = TRUE | coefs)`` for a fitted meta-regression (engine/permci.py)."""
    from metaalliance.engine.permci import permutation_ci

    if permci is True:
        coefs = None
    else:
        wanted = [permci] if isinstance(permci, str) else list(permci)
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise OptionError(f"permci: no coefficient {', '.join(map(repr, unknown))} "
                              f"(coefficients: {', '.join(names)})")
        coefs = [names.index(n) for n in dict.fromkeys(wanted)]
    return permutation_ci(y, v, X, r["beta"], r["ci_lo"], r["ci_hi"], method, r["test"], level,
                          permutations, seed, exact, control, coefs=coefs, progress=progress)


# --------------------------------------------------------------------------------------------
# subgroups


def _levels(groups):
    import pandas as pd

    s = pd.Series(groups).dropna()
    if isinstance(s.dtype, pd.CategoricalDtype):
        levels = [c for c in s.cat.categories if (s == c).any()]
    elif pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        levels = sorted(pd.unique(s))
    else:
        s = s.astype(str)
        levels = sorted(pd.unique(s))
    return s.to_numpy(), levels


def _in_subgroup(where, fn, *args):
    """``fn(*args)`` with its warnings and errors prefixed by the subgroup they concern."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn(*args)
        except (DataError, ModelError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
    for w in caught:
        if issubclass(w.category, MetaAllianceWarning):
            warnings.warn(f"{where}: {w.message}", w.category, stacklevel=3)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return out


def subgroups(yi, vi, groups, method="REML", test="z", level=95, tau2_model="separate",
              labels=None, measure="ZCOR", by="group", control=DEFAULT_CONTROL):
    """Pooled estimate per subgroup and a test of subgroup differences.

    Rows with a missing group are omitted with a MetaAllianceWarning (as metafor's subset)
    and counted in ``omitted``.

    tau2_model "separate": a random-effects model per subgroup (own tau^2); Q-between is the
    Q of an equal-effects model of the subgroup estimates with variances se^2 (what the
    metafor documentation does: ``rma(estimate, sei = se, mods = ~ group, method = "EE")``,
    whose QM equals that Q), chi^2 with G - 1 df.
    tau2_model "pooled": one model ``rma(yi, vi, mods = ~ group)`` with a common tau^2;
    Q-between is its QM (chi^2(G - 1), or F(G - 1, k - G) under knha); subgroup estimates
    and their CIs come from the equivalent ``mods = ~ group - 1`` parametrisation.
    ``control`` as in ``random_effects``, for every model fitted.
    """
    _options(method, test, measure, control)
    check_option("tau2_model", tau2_model, TAU2_MODELS)
    y, v, labels = _vectors(yi, vi, labels)
    import pandas as pd

    gs = pd.Series(groups)
    if len(gs) != y.size:
        raise DataError(f"groups has {len(gs)} values but yi has {y.size}")
    keep = ~gs.isna().to_numpy()
    omitted = int((~keep).sum())
    if omitted:
        warnings.warn(f"{omitted} row(s) with a missing {by} omitted", MetaAllianceWarning,
                      stacklevel=2)
        y, v = y[keep], v[keep]
        labels = tuple(lb for lb, kp in zip(labels, keep) if kp)
        gs = gs[keep]
    if y.size == 0:
        raise DataError(f"subgroups: every row has a missing {by}")
    g, levels = _levels(gs.reset_index(drop=True))
    if len(levels) < 2:
        raise ModelError(f"subgroups: {by!r} has {len(levels)} level(s); need at least 2")
    from metaalliance.engine import distributions as stats
    rows, models = [], {}
    if tau2_model == "separate":
        for lv in levels:
            sel = g == lv
            if test == "knha" and sel.sum() < 2:
                raise ModelError(f"subgroup {by} = {lv!s} has k = 1: the Knapp-Hartung test "
                                 "needs k >= 2 in every subgroup")
            res = _in_subgroup(f"subgroup {by} = {lv!s}", random_effects, y[sel], v[sel],
                               method, test, level, [lb for lb, s_ in zip(labels, sel) if s_],
                               measure, control)
            models[str(lv)] = res
            rows.append(SubgroupEstimate(str(lv), res.k, res.estimate, res.se, res.stat,
                                         res.pvalue, res.ci_lower, res.ci_upper, res.pi_lower,
                                         res.pi_upper, res.tau2, res.i2, res.q))
        est_g = np.array([r_.estimate for r_ in rows])
        var_g = np.array([r_.se ** 2 for r_ in rows])
        wg = 1 / var_g
        qb = float(np.sum(wg * (est_g - np.sum(wg * est_g) / wg.sum()) ** 2))
        qb_df, qb_df2 = len(levels) - 1, None
        qb_p = float(stats.chi2.sf(qb, qb_df))
    else:
        G = len(levels)
        D = np.column_stack([(g == lv).astype(float) for lv in levels])
        names = [f"{by}{lv}" for lv in levels]
        # the ~ group - 1 parametrisation: one coefficient per subgroup
        r0 = _fit(y, v, D, names, method, test, level, control)
        Xi = np.column_stack([np.ones(y.size), D[:, 1:]])
        reg = _meta_regression(y, v, Xi, [INTERCEPT] + names[1:], method, test, level, labels,
                               measure, None, None, False, f"~ {by}", 0, None, control)
        models["pooled"] = reg
        for j, lv in enumerate(levels):
            kj = int(D[:, j].sum())
            rows.append(SubgroupEstimate(str(lv), kj, float(r0["beta"][j]), float(r0["se"][j]),
                                         float(r0["stat"][j]), float(r0["pval"][j]),
                                         float(r0["ci_lo"][j]), float(r0["ci_hi"][j]),
                                         float(r0["pi_lo"][j]), float(r0["pi_hi"][j]),
                                         r0["tau2"]))
        qb, qb_df, qb_p = reg.qm, G - 1, reg.qm_pvalue
        qb_df2 = reg.qm_df2
    return SubgroupResult(
        by=by, tau2_model=tau2_model, method=method, test=test,
        level=inf.level_alpha(level)[0], measure=measure, subgroups=tuple(rows), q_between=qb,
        q_between_df=qb_df, q_between_df2=qb_df2, q_between_pvalue=qb_p, k=int(y.size),
        models=models,
        provenance=provenance(method, test, y.size, y, v, tau2_model=tau2_model, by=by,
                              control=control),
        omitted=omitted, control=control,
    )


# --------------------------------------------------------------------------------------------


def three_level(*args, **kwargs):
    """Three-level model (finding within cluster); implemented in ``multilevel``."""
    from metaalliance.engine.multilevel import three_level as _three_level

    return _three_level(*args, **kwargs)
