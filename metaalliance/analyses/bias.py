"""Small-study effects and publication bias, computed as metafor does.

========================  ======================================================================
``egger_test(fit)``       metafor's ``regtest()`` default: mixed-effects meta-regression on the
                          standard error (the fit's method and test); the z (or t) test of the
                          slope and the limit estimate (the intercept, as se -> 0)
``rank_test(fit)``        metafor's ``ranktest()``: Kendall's tau between the standardized
                          deviates and the variances (Begg & Mazumdar 1994), exact p-value when
                          R's ``cor.test`` gives one (no ties), else its normal approximation
``trim_and_fill(fit)``    metafor's ``trimfill()``: L0 (default) or R0 estimator, side chosen as
                          metafor chooses it, the filled studies and the refitted model
``pet_peese(fit)``        PET and PEESE (Stanley & Doucouliagos 2014) with the conditional rule
``fail_safe_n(fit)``      metafor's ``fsn()``: Rosenthal, Orwin and Rosenberg
``run_all(fit)``          all of the above, as one ``BiasResult`` (the ``bias --json`` form)
========================  ======================================================================

Each function takes a fitted ``models.random_effects`` result and uses its yi, vi, method,
test and level, as metafor's functions use the model's. Functions that refit (Egger's test,
trim and fill) take ``control`` (``options.CONTROLS``); None (the default) is the fit's own
(``fit.control``; ``options.DEFAULT_CONTROL`` for a fit without one). regtest() refits with
``x$control``; trimfill() with the control given in its ``...`` (default: metafor's default),
so with the default "metafor" control both equal metafor's plain calls.

PET-PEESE rule. PET is the weighted least-squares regression y_i = b0 + b1 se_i with weights
1/v_i and a multiplicative dispersion (R's ``lm(yi ~ sei, weights = 1/vi)``, i.e. metafor's
``regtest(model = "lm")``); PEESE the same with v_i in place of se_i. Following Stanley &
Doucouliagos (2014), the PET intercept is tested with a one-sided t-test (df = k - 2) at
``alpha`` = .05 in the direction of the fit's pooled estimate (H1: b0 > 0 when the pooled
estimate is >= 0, b0 < 0 otherwise). If that test rejects (there is a genuine effect), the
PEESE intercept is the corrected estimate; otherwise the PET intercept is.

Computation only: nothing here prints or writes files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from metaalliance.errors import DataError, ModelError, OptionError
from metaalliance.analyses.sensitivity import _control
from metaalliance.analyses.sensitivity import _fit_info as _sensitivity_fit_info
from metaalliance.options import (DEFAULT_CONTROL, SIDES, TRIMFILL_ESTIMATORS,
                      check_option)

__all__ = [
    "EggerResult", "RankTestResult", "TrimFillResult", "RegressionLine", "PetPeeseResult",
    "FailSafeNResult", "BiasResult",
    "egger_test", "rank_test", "trim_and_fill", "pet_peese", "fail_safe_n", "run_all",
    "kendall_exact_cdf",
]

#: metafor's trimfill() stops after this many iterations without convergence
TRIMFILL_MAXITER = 100
#: fsn(): a fail-safe N within this distance of an integer is rounded, otherwise ceiled
FSN_INTEGER_TOL = float(np.finfo(float).eps ** 0.5)
#: default significance level of the PET test in the PET-PEESE rule and of fsn()
ALPHA = 0.05


def _fit_info(fit):
    """As sensitivity's, plus what every bias analysis needs: k >= 2 and usable data."""
    yi, vi, method, test, level, labels = _sensitivity_fit_info(fit)
    if yi.size < 2:
        raise ModelError("bias analyses need at least 2 studies (k = 1)")
    if np.any(~np.isfinite(yi)) or np.any(~np.isfinite(vi)) or np.any(vi <= 0):
        raise DataError("yi must be finite and vi > 0 for every study")
    return yi, vi, method, test, level, labels


def _f(x) -> Optional[float]:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


# --------------------------------------------------------------------------------------------
# Egger's regression test (metafor's regtest(), model = "rma", predictor = "sei")


@dataclass(frozen=True, eq=False)
class EggerResult:
    """Regression test for funnel plot asymmetry.

    ``stat`` is z (test "z") or t with ``df`` = k - 2 (test "knha") of the slope on the
    standard error; ``limit_estimate`` (with its CI) is the intercept: the estimate for a study
    of infinite precision.
    """

    stat: float
    pvalue: float
    df: Optional[int]
    slope: float
    slope_se: float
    limit_estimate: float
    limit_ci_lower: float
    limit_ci_upper: float
    tau2: float
    method: str
    test: str
    model: str = "rma"
    predictor: str = "sei"

    def to_dict(self) -> dict:
        return {"z" if self.df is None else "t": self.stat, "pvalue": self.pvalue,
                "df": self.df, "slope": self.slope, "slope_se": self.slope_se,
                "limit_estimate": self.limit_estimate, "limit_ci_lower": self.limit_ci_lower,
                "limit_ci_upper": self.limit_ci_upper, "tau2": self.tau2,
                "model": self.model, "predictor": self.predictor}


def _meta_regression(yi, vi, X, names, method, test, level, control=DEFAULT_CONTROL):
    """Mixed-effects meta-regression through the engine (``models.meta_regression_matrix``)."""
    from metaalliance.engine import models
    return models.meta_regression_matrix(yi, vi, X, names, method=method, test=test, level=level,
                                         control=control)


def egger_test(fit, predictor: str = "sei", control=None) -> EggerResult:
    """Egger's regression test as metafor's ``regtest(fit)``: the model of ``fit`` (its method
    and test) with the standard error (``predictor="sei"``) or the variance (``"vi"``) as
    moderator; the test of that coefficient and the limit estimate. ``control``: how the
    meta-regression iterates (None: the fit's own, as regtest() uses ``x$control``)."""
    check_option("predictor", predictor, ("sei", "vi"))
    control = _control(fit, control)
    yi, vi, method, test, level, _ = _fit_info(fit)
    k = yi.size
    if k < 3:
        raise ModelError(f"Egger's test needs at least 3 studies (k = {k})")
    x = np.sqrt(vi) if predictor == "sei" else vi
    if np.ptp(x) == 0:
        raise ModelError("Egger's test needs studies of different precision "
                         "(all standard errors are equal)")
    X = np.column_stack([np.ones(k), x])
    reg = _meta_regression(yi, vi, X, ("intrcpt", predictor), method, test, level, control)
    b0, b1 = reg.coefficients[0], reg.coefficients[1]
    return EggerResult(stat=float(b1.stat), pvalue=float(b1.pvalue),
                       df=None if test == "z" else int(k - 2), slope=float(b1.estimate),
                       slope_se=float(b1.se), limit_estimate=float(b0.estimate),
                       limit_ci_lower=float(b0.ci_lower), limit_ci_upper=float(b0.ci_upper),
                       tau2=float(reg.tau2), method=method, test=test, predictor=predictor)


# --------------------------------------------------------------------------------------------
# rank correlation test (metafor's ranktest(), R's cor.test(method = "kendall", exact = TRUE))


@dataclass(frozen=True, eq=False)
class RankTestResult:
    """Begg & Mazumdar's rank correlation test: Kendall's tau (tau-b) between the standardized
    deviates and the sampling variances; ``exact`` says whether the p-value is the exact
    permutation p-value (no ties) or R's normal approximation with tie correction."""

    tau: float
    pvalue: float
    exact: bool
    ties: bool

    def to_dict(self) -> dict:
        return {"tau": self.tau, "pvalue": self.pvalue, "exact": self.exact, "ties": self.ties}


def kendall_exact_cdf(q: int, n: int) -> float:
    """P(T <= q) for the number T of concordant pairs among n untied pairs under independence
    (the distribution of inversions of a random permutation; R's ``pkendall``).

    Built one element at a time with probabilities (not counts), so it neither overflows for
    n > 170 (where R's ``gammafn(n + 1)`` is infinite) nor loses the small lower tail; only
    the lower half is needed, the upper tail follows by symmetry.
    """
    total = n * (n - 1) // 2
    q = int(math.floor(q + 1e-7))
    if q < 0:
        return 0.0
    if q >= total:
        return 1.0
    if q > total // 2:
        return 1.0 - kendall_exact_cdf(total - q - 1, n)
    m = q + 1                      # probabilities of 0..q inversions are all that is needed
    dist = np.zeros(m)
    dist[0] = 1.0
    for i in range(2, n + 1):
        # adding element i shifts the inversion count by 0..i-1, uniformly
        c = np.concatenate(([0.0], np.cumsum(dist)))
        lo = np.maximum(np.arange(m) - (i - 1), 0)
        dist = (c[1:] - c[lo]) / i
    return float(min(1.0, dist.sum()))


def _kendall_tau_b(x, y):
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(x.size, 1)
    s = float((dx * dy)[iu].sum())
    n0 = x.size * (x.size - 1) / 2
    n1 = float((dx[iu] == 0).sum())
    n2 = float((dy[iu] == 0).sum())
    return s / math.sqrt((n0 - n1) * (n0 - n2))


def _tie_counts(a):
    _, counts = np.unique(a, return_counts=True)
    return counts[counts > 1].astype(float)


def rank_test(fit, exact: bool = True) -> RankTestResult:
    """metafor's ``ranktest(fit)``: R's ``cor.test(yi.star, vi, method = "kendall",
    exact = TRUE)`` with yi.star = (y_i - mu_EE) / sqrt(v_i - 1/sum(1/v)).

    Without ties the p-value is exact (the permutation distribution of tau); with ties it is
    R's normal approximation with the tie-corrected variance of S. (R warns "Cannot compute
    exact p-value with ties" there; ``exact`` then is False.)
    """
    from metaalliance.engine import distributions as stats

    yi, vi, *_ = _fit_info(fit)
    n = yi.size
    wi = 1.0 / vi
    theta = float((wi * yi).sum() / wi.sum())
    vb = 1.0 / wi.sum()
    vstar = vi - vb
    if np.any(vstar <= 0):
        raise ModelError("rank test: a study's variance is not larger than the pooled variance")
    ystar = (yi - theta) / np.sqrt(vstar)
    ties = min(np.unique(ystar).size, np.unique(vi).size) < n
    if min(np.unique(ystar).size, np.unique(vi).size) < 2:
        raise ModelError("rank test: Kendall's tau is undefined (all variances or all "
                         "deviates are equal)")
    tau = _kendall_tau_b(ystar, vi)
    if exact and not ties:
        # R: q = round((r + 1) n (n - 1) / 4), p = 2 min(P(T <= q), P(T >= q))
        q = int(np.round((tau + 1) * n * (n - 1) / 4))
        if q > n * (n - 1) / 4:
            p = 1.0 - kendall_exact_cdf(q - 1, n)
        else:
            p = kendall_exact_cdf(q, n)
        pvalue = min(2 * p, 1.0)
        used_exact = True
    else:
        xt, yt = _tie_counts(ystar), _tie_counts(vi)
        t0 = n * (n - 1) / 2
        t1 = (xt * (xt - 1)).sum() / 2
        t2 = (yt * (yt - 1)).sum() / 2
        s = tau * math.sqrt((t0 - t1) * (t0 - t2))
        v0 = n * (n - 1) * (2 * n + 5)
        vt = (xt * (xt - 1) * (2 * xt + 5)).sum()
        vu = (yt * (yt - 1) * (2 * yt + 5)).sum()
        v1 = (xt * (xt - 1)).sum() * (yt * (yt - 1)).sum()
        v2 = (xt * (xt - 1) * (xt - 2)).sum() * (yt * (yt - 1) * (yt - 2)).sum()
        var_s = (v0 - vt - vu) / 18 + v1 / (2 * n * (n - 1)) + v2 / (9 * n * (n - 1) * (n - 2))
        z = s / math.sqrt(var_s)
        pvalue = float(2 * min(stats.norm.cdf(z), stats.norm.sf(z)))
        used_exact = False
    return RankTestResult(tau=float(tau), pvalue=float(pvalue), exact=used_exact,
                          ties=bool(ties))


# --------------------------------------------------------------------------------------------
# trim and fill (metafor's trimfill())


@dataclass(frozen=True, eq=False)
class TrimFillResult:
    """Trim and fill (Duval & Tweedie 2000), as metafor's ``trimfill()``.

    ``k0`` estimated number of missing studies on ``side`` (with ``se_k0``; ``p_k0`` the
    test of k0 = 0 for R0), ``filled_yi`` / ``filled_vi`` the imputed studies, ``fit`` the
    model refitted to the observed plus filled studies (the original fit when k0 = 0).
    As metafor, the refit uses the fit's method with the z test.
    """

    k0: int
    se_k0: float
    p_k0: Optional[float]
    side: str
    estimator: str
    filled_yi: np.ndarray
    filled_vi: np.ndarray
    filled_labels: tuple
    fit: Any
    iterations: int

    @property
    def estimate(self) -> float:
        return float(self.fit.estimate)

    @property
    def tau2(self) -> float:
        return float(self.fit.tau2)

    def to_dict(self) -> dict:
        f = self.fit
        return {"k0": int(self.k0), "side": self.side, "estimator": self.estimator,
                "se_k0": self.se_k0, "p_k0": self.p_k0,
                "estimate": float(f.estimate), "se": float(f.se),
                "ci_lower": float(f.ci_lower), "ci_upper": float(f.ci_upper),
                "pvalue": float(f.pvalue), "tau2": float(f.tau2), "i2": float(f.i2),
                "k": int(f.k),
                "filled": [{"label": lab, "yi": float(y), "vi": float(v)} for lab, y, v in
                           zip(self.filled_labels, self.filled_yi, self.filled_vi)]}


def _random_effects(yi, vi, method, test, level, labels=None, measure="generic",
                    control=DEFAULT_CONTROL):
    """An intercept-only refit; its warnings (k = 1 ...) are silenced, as trimfill() runs its
    refits under suppressWarnings()."""
    import warnings

    from metaalliance.engine import models
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return models.random_effects(yi, vi, method=method, test=test, level=level,
                                     labels=labels, measure=measure, control=control)


def _rank_first(a):
    """R's rank(a, ties.method = "first"): 1-based ranks, ties in order of appearance."""
    order = np.argsort(a, kind="stable")
    ranks = np.empty(a.size, dtype=float)
    ranks[order] = np.arange(1, a.size + 1)
    return ranks


def trim_and_fill(fit, estimator: str = "L0", side: Optional[str] = None,
                  maxiter: int = TRIMFILL_MAXITER, control=None) -> TrimFillResult:
    """metafor's ``trimfill(fit, estimator = estimator, side = side)``.

    Side (when not given): the side where studies are missing, as metafor decides it: the
    fit's model (its tau^2 estimator) with the standard error as moderator; a negative slope
    means studies are missing on the right, otherwise on the left. ``control``: how every
    refit iterates (None: the fit's own; metafor: ``trimfill(res, control = ...)``).
    """
    check_option("estimator", estimator, TRIMFILL_ESTIMATORS)
    control = _control(fit, control)
    yi0, vi0, method, test, level, labels = _fit_info(fit)
    measure = getattr(fit, "measure", "generic")
    k = yi0.size
    if side is None:
        if k < 3 or np.ptp(vi0) == 0:
            why = (f"needs k >= 3 (k = {k})" if k < 3 else
                   "needs studies of different precision (all standard errors are equal)")
            raise ModelError(f"trim and fill: choosing the side as metafor does (the slope on "
                             f"the standard error) {why}; give side='left' or 'right'")
        X = np.column_stack([np.ones(k), np.sqrt(vi0)])
        reg = _meta_regression(yi0, vi0, X, ("intrcpt", "sei"), method, "z", level, control)
        side = "right" if reg.coefficients[1].estimate < 0 else "left"
    else:
        check_option("side", side, SIDES)
    sign = -1.0 if side == "right" else 1.0
    yi = sign * yi0
    ix = np.argsort(yi, kind="stable")
    yi, vi = yi[ix], vi0[ix]
    k0_prev, k0, it = -1, 0, 0
    beta = float("nan")
    se_k0 = float("nan")
    yc = yi
    while k0 != k0_prev:
        k0_prev = k0
        it += 1
        if it > maxiter:
            raise ModelError("trim and fill did not converge")
        kt = k - k0
        if kt < 1:
            raise ModelError("trim and fill trimmed every study")
        beta = float(_random_effects(yi[:kt], vi[:kt], method, "z", level,
                                     control=control).estimate)
        yc = yi - beta
        ranks = _rank_first(np.abs(yc))
        signed = np.sign(yc) * ranks
        if estimator == "R0":
            neg = signed[signed < 0]
            if neg.size == 0:
                raise ModelError("trim and fill (R0): no study lies below the estimate")
            k0_raw = (k - np.max(-neg)) - 1
            se_k0 = math.sqrt(2 * max(0.0, k0_raw) + 2)
        else:
            sr = signed[signed > 0].sum()
            k0_raw = (4 * sr - k * (k + 1)) / (2 * k - 1)
            var_sr = (k * (k + 1) * (2 * k + 1) + 10 * k0_raw**3 + 27 * k0_raw**2
                      + 17 * k0_raw - 18 * k * k0_raw**2 - 18 * k * k0_raw
                      + 6 * k**2 * k0_raw) / 24
            se_k0 = 4 * math.sqrt(var_sr) / (2 * k - 1) if var_sr > 0 else 0.0
        k0 = int(max(0, np.round(k0_raw)))   # R's round(): half to even, as numpy's
        se_k0 = max(0.0, se_k0)
    p_k0 = None
    if estimator == "R0":
        m = np.arange(-1, k0)
        from scipy.special import comb
        p_k0 = float(1 - np.sum(comb(m + 1, m + 1) * 0.5 ** (m + 2)))
    if k0 > 0:
        # mirror the k0 most extreme studies about the (trimmed) estimate
        mirrored = 2 * beta - yi[k - k0:]
        filled_yi = sign * mirrored
        filled_vi = vi[k - k0:].copy()
        filled_labels = tuple(f"Filled {i + 1}" for i in range(k0))
        refit = _random_effects(np.concatenate([yi0, filled_yi]),
                                np.concatenate([vi0, filled_vi]), method, "z", level,
                                labels=list(labels) + list(filled_labels), measure=measure,
                                control=control)
    else:
        filled_yi = np.zeros(0)
        filled_vi = np.zeros(0)
        filled_labels = ()
        refit = fit
    return TrimFillResult(k0=int(k0), se_k0=float(se_k0), p_k0=p_k0, side=side,
                          estimator=estimator, filled_yi=filled_yi, filled_vi=filled_vi,
                          filled_labels=filled_labels, fit=refit, iterations=it)


# --------------------------------------------------------------------------------------------
# PET-PEESE


@dataclass(frozen=True, eq=False)
class RegressionLine:
    """Weighted least squares y = b0 + b1 x (weights 1/v, multiplicative dispersion): R's
    ``lm(yi ~ x, weights = 1/vi)``; t-tests and CIs with df = k - 2."""

    predictor: str
    intercept: float
    intercept_se: float
    intercept_t: float
    intercept_pvalue: float
    intercept_ci_lower: float
    intercept_ci_upper: float
    slope: float
    slope_se: float
    slope_t: float
    slope_pvalue: float
    df: int

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _wls_line(yi, vi, x, predictor, level) -> RegressionLine:
    from metaalliance.engine import distributions as stats

    k = yi.size
    if k < 3:
        raise ModelError(f"PET-PEESE needs at least 3 studies (k = {k})")
    sw = 1.0 / np.sqrt(vi)
    X = np.column_stack([np.ones(k), x])
    Xw, yw = X * sw[:, None], yi * sw
    q, r = np.linalg.qr(Xw)
    if abs(r[1, 1]) <= 1e-12 * abs(r[0, 0]):
        raise ModelError(f"PET-PEESE: the {predictor} of all studies are equal")
    beta = np.linalg.solve(r, q.T @ yw)
    resid = yw - Xw @ beta
    df = k - 2
    rss = float(resid @ resid)
    if rss <= np.finfo(float).eps * float(yw @ yw):
        # lm() would give se = 0 and t = NaN (0/0) or +-Inf here: no test is possible
        raise ModelError(f"PET-PEESE: the effect sizes lie exactly on a line in {predictor} "
                         "(e.g. identical effects), so its t-tests are undefined")
    sigma2 = rss / df
    rinv = np.linalg.inv(r)
    cov = sigma2 * (rinv @ rinv.T)
    se = np.sqrt(np.diag(cov))
    t = beta / se
    p = 2 * stats.t.sf(np.abs(t), df)
    crit = stats.t.isf((1 - level / 100) / 2, df)
    return RegressionLine(predictor=predictor, intercept=float(beta[0]),
                          intercept_se=float(se[0]), intercept_t=float(t[0]),
                          intercept_pvalue=float(p[0]),
                          intercept_ci_lower=float(beta[0] - crit * se[0]),
                          intercept_ci_upper=float(beta[0] + crit * se[0]),
                          slope=float(beta[1]), slope_se=float(se[1]), slope_t=float(t[1]),
                          slope_pvalue=float(p[1]), df=int(df))


@dataclass(frozen=True, eq=False)
class PetPeeseResult:
    """PET and PEESE lines and the conditional PET-PEESE estimate (see the module docstring).

    ``pet_pvalue_one_sided`` is the one-sided p-value of the PET intercept in ``direction``;
    ``selected`` is "PEESE" when it is below ``alpha``, else "PET"; ``estimate`` (with CI) is
    the selected intercept.
    """

    pet: RegressionLine
    peese: RegressionLine
    direction: str
    pet_pvalue_one_sided: float
    alpha: float
    selected: str
    estimate: float
    ci_lower: float
    ci_upper: float

    rule = ("PEESE if the PET intercept is significant in a one-sided t-test at alpha in the "
            "direction of the pooled estimate, else PET (Stanley & Doucouliagos 2014)")

    def to_dict(self) -> dict:
        return {"selected": self.selected, "estimate": self.estimate,
                "ci_lower": self.ci_lower, "ci_upper": self.ci_upper,
                "pet_pvalue_one_sided": self.pet_pvalue_one_sided, "alpha": self.alpha,
                "direction": self.direction, "rule": self.rule,
                "pet": self.pet.to_dict(), "peese": self.peese.to_dict()}


def pet_peese(fit, alpha: float = ALPHA) -> PetPeeseResult:
    """PET (y on se) and PEESE (y on v), WLS with weights 1/v, and the conditional estimate."""
    from metaalliance.engine import distributions as stats

    yi, vi, method, test, level, _ = _fit_info(fit)
    if not 0 < alpha < 1:
        raise OptionError(f"alpha: must lie between 0 and 1, got {alpha!r}")
    pet = _wls_line(yi, vi, np.sqrt(vi), "sei", level)
    peese = _wls_line(yi, vi, vi, "vi", level)
    direction = "greater" if float(fit.estimate) >= 0 else "less"
    if direction == "greater":
        p1 = float(stats.t.sf(pet.intercept_t, pet.df))
    else:
        p1 = float(stats.t.cdf(pet.intercept_t, pet.df))
    chosen = peese if p1 < alpha else pet
    return PetPeeseResult(pet=pet, peese=peese, direction=direction, pet_pvalue_one_sided=p1,
                          alpha=alpha, selected="PEESE" if p1 < alpha else "PET",
                          estimate=chosen.intercept, ci_lower=chosen.intercept_ci_lower,
                          ci_upper=chosen.intercept_ci_upper)


# --------------------------------------------------------------------------------------------
# fail-safe N (metafor's fsn())


@dataclass(frozen=True, eq=False)
class FailSafeNResult:
    """Fail-safe numbers as metafor's ``fsn()``.

    Rosenthal (Stouffer's method; ``rosenthal_pvalue`` one-sided p of the combined test),
    Orwin (unweighted mean effect, target ``orwin_target``, by default half the mean as
    metafor's default), Rosenberg (weighted EE model; ``rosenberg_pvalue`` two-sided).
    """

    rosenthal: int
    rosenthal_pvalue: float
    orwin: Optional[int]
    orwin_mean: float
    orwin_target: float
    rosenberg: int
    rosenberg_pvalue: float
    rosenberg_mean: float
    alpha: float

    def to_dict(self) -> dict:
        return {"rosenthal": {"n": self.rosenthal, "pvalue": self.rosenthal_pvalue,
                              "alpha": self.alpha},
                "orwin": {"n": self.orwin, "mean": self.orwin_mean,
                          "target": self.orwin_target},
                "rosenberg": {"n": self.rosenberg, "pvalue": self.rosenberg_pvalue,
                              "mean": self.rosenberg_mean, "alpha": self.alpha}}


def _fsn_round(x: float) -> Optional[int]:
    if math.isinf(x):
        return None
    if abs(x - round(x)) >= FSN_INTEGER_TOL:
        return int(math.ceil(x))
    return int(np.round(x))


def fail_safe_n(fit, alpha: float = ALPHA, target: Optional[float] = None) -> FailSafeNResult:
    """Rosenthal's, Orwin's and Rosenberg's fail-safe N, as ``fsn(yi, vi, type = ...)``.

    Orwin's N is None (metafor: Inf) when ``target`` is 0.
    """
    from metaalliance.engine import distributions as stats

    yi, vi, *_ = _fit_info(fit)
    if not 0 < alpha < 1:
        raise OptionError(f"alpha: must lie between 0 and 1, got {alpha!r}")
    k = yi.size
    # Rosenthal (Stouffer)
    zi = yi / np.sqrt(vi)
    z_avg = abs(zi.sum() / math.sqrt(k))
    ros_p = float(stats.norm.sf(z_avg))
    ros = max(0.0, k * (z_avg / stats.norm.isf(alpha)) ** 2 - k)
    # Orwin (unweighted, as fsn()'s default weighted = FALSE)
    mean = float(yi.mean())
    tgt = mean / 2 if target is None else float(target)
    if tgt == 0:
        orw = math.inf
    else:
        if np.sign(tgt) != np.sign(mean):
            tgt = -tgt
        orw = max(0.0, k * (mean - tgt) / tgt)
    # Rosenberg
    wi = 1.0 / vi
    mean_w = float((wi * yi).sum() / wi.sum())
    zval = mean_w / math.sqrt(1.0 / wi.sum())
    wp = ((wi * yi).sum() / stats.norm.isf(alpha / 2)) ** 2 - wi.sum()
    rbg_p = float(2 * stats.norm.sf(abs(zval)))
    rbg = max(0.0, k * wp / wi.sum())
    return FailSafeNResult(rosenthal=_fsn_round(ros), rosenthal_pvalue=ros_p,
                           orwin=_fsn_round(orw), orwin_mean=mean, orwin_target=tgt,
                           rosenberg=_fsn_round(rbg), rosenberg_pvalue=rbg_p,
                           rosenberg_mean=mean_w, alpha=alpha)


# --------------------------------------------------------------------------------------------
# everything at once


@dataclass(frozen=True, eq=False)
class BiasResult:
    """All bias analyses of one fit (the ``metaalliance bias`` command)."""

    egger: Optional[EggerResult]
    rank: Optional[RankTestResult]
    trimfill: Optional[TrimFillResult]
    pet_peese: Optional[PetPeeseResult]
    failsafe_n: FailSafeNResult
    k: int
    method: str
    test: str
    notes: tuple = ()

    def to_dict(self) -> dict:
        """The ``bias --json`` form of ARCHITECTURE.md (extra keys keep the details)."""
        out = {"k": self.k, "method": self.method, "test": self.test}
        out["egger"] = None if self.egger is None else self.egger.to_dict()
        out["rank"] = None if self.rank is None else self.rank.to_dict()
        out["trimfill"] = None if self.trimfill is None else self.trimfill.to_dict()
        out["pet_peese"] = None if self.pet_peese is None else self.pet_peese.to_dict()
        out["failsafe_n"] = self.failsafe_n.to_dict()
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def run_all(fit, estimator: str = "L0", side: Optional[str] = None,
            alpha: float = ALPHA, control=None) -> BiasResult:
    """Egger, rank test, trim and fill, PET-PEESE and fail-safe N for one fit. An analysis
    that cannot be run on these data (Egger, PET-PEESE and metafor's choice of the
    trim-and-fill side need k >= 3) is None, with a note saying why. ``control``: how the
    refits iterate (None: the fit's own)."""
    control = _control(fit, control)
    notes = []
    yi, *_ = _fit_info(fit)

    def attempt(name, fn):
        try:
            return fn()
        except ModelError as exc:
            notes.append(str(exc))
            return None

    egger = attempt("egger", lambda: egger_test(fit, control=control))
    rank = attempt("rank", lambda: rank_test(fit))
    pp = attempt("pet_peese", lambda: pet_peese(fit, alpha=alpha))
    tf = attempt("trimfill", lambda: trim_and_fill(fit, estimator=estimator, side=side,
                                                   control=control))
    fsn = fail_safe_n(fit, alpha=alpha)
    return BiasResult(egger=egger, rank=rank, trimfill=tf, pet_peese=pp, failsafe_n=fsn,
                      k=int(yi.size), method=fit.method, test=fit.test, notes=tuple(notes))
