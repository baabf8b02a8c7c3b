"""Selection models for publication bias, as metafor's ``selmodel()``.

A selection model says that a study with one-sided p-value ``p_i`` is published with relative
probability ``w(p_i; delta)``; the published effect sizes then have the weighted density

    f(y_i) = w(p_i) phi(y_i; x_i'beta, v_i + tau^2) / A_i,
    A_i    = integral of w(p(y)) phi(y; x_i'beta, v_i + tau^2) dy,

and beta, tau^2 and delta are estimated by maximum likelihood (metafor's ``selmodel()`` on an
``rma(method = "ML")`` fit). ``p(y)`` is the one-sided p-value of ``y / sqrt(v_i)``
(``alternative = "greater"``: large positive effects have small p; "less" the mirror image;
"two.sided" the two-sided p-value).

==============  ==================================================  ============================
type            w(p) (``steps = (a,)`` for the smooth types:         delta (no selection)
                w = 1 for p <= a, the formula scaled to 1 at a)
==============  ==================================================  ============================
stepfun         delta_j on the j-th interval of ``steps``           delta_1 = 1 fixed (all 1)
                (Vevea & Hedges, 1995; 3PSM: steps = (.025,))
beta            p^(d1 - 1) (1 - p)^(d2 - 1) (Citkowicz & Vevea)     (1, 1)
halfnorm        exp(-d p^2)                                         0
negexp          exp(-d p)                                           0
logistic        2 exp(-d p) / (1 + exp(-d p))                       0
power           (1 - p)^d                                           0
==============  ==================================================  ============================

For the step function ``A_i`` is a sum of normal probabilities (closed form, vectorised over
studies); for the smooth types it is integrated numerically on a fixed composite Gauss-Legendre
rule in ``z = (y - mu) / sigma`` on [-12, 12], split where w has a kink (the step a, the clipping
of p at metafor's pval.min), 192 nodes per piece: relative error < 1e-9 against adaptive
quadrature at 1e-12 on the reference cases, more accurate than metafor's ``integrate()`` at
``rel.tol = eps^0.25`` (whose error shows up to ~1e-5 in metafor's log-likelihoods). The likelihood is
maximised with L-BFGS-B under metafor's bounds (tau^2 >= 0, delta in [delta_min, 100]) and
polished with Newton steps; standard errors come from the inverse of the numerical Hessian of
the negative log-likelihood in (beta, tau^2, delta) as metafor computes them (metafor:
``numDeriv::hessian``). The likelihood-ratio test compares with the ML random-effects model
(delta fixed at its no-selection value).

Where metafor fails we fail with its message (an interval of the step function with no observed
p-value: the ML estimate of its delta would be 0); where its Hessian cannot be inverted (an
estimate on its bound) the SEs are None with a warning, as metafor gives NA with a warning.

Computation only: no I/O. numpy/scipy.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from metaalliance.errors import DataError, MetaAllianceWarning, ModelError, OptionError
from metaalliance.engine.inference import level_alpha
from metaalliance.engine.optim import num_grad as _num_grad, num_hess as _num_hess, \
    maximise_box as _maximise, rel_steps as _steps, hess_from_grad as _hess_from_grad

__all__ = ["SELECTION_TYPES", "ALTERNATIVES", "SelectionResult", "selection_model",
           "weight_function"]

from metaalliance.options import ALTERNATIVES, SELECTION_TYPES  # noqa: E402  (declared there)

_DELTA_MAX = 100.0                    # metafor's delta.max for every type
_EPS25 = np.finfo(float).eps ** 0.25  # metafor's bound check (delta <= delta.min + eps^0.25)
_GL_PANELS, _GL_ORDER = 16, 12        # composite Gauss-Legendre rule per piece (smooth types)
_Z_MAX = 12.0                         # |z| beyond which the normal density is < 1e-31


# ============================================================================ weight functions


def _spec(type_: str):
    """(number of deltas, initial values, lower bounds, no-selection values, pval_min)."""
    if type_ == "beta":
        return 2, np.array([1.0, 1.0]), np.array([1e-5, 1e-5]), np.array([1.0, 1.0]), 1e-5
    if type_ == "power":
        return 1, np.array([1.0]), np.array([0.0]), np.array([0.0]), 1e-5
    return 1, np.array([1.0]), np.array([0.0]), np.array([0.0]), 0.0


def weight_function(p, delta, type_: str = "stepfun", steps=(0.025, 1.0)):
    """Relative probability of selection w(p) of a fitted model (metafor's ``wi.fun``).

    Examples
    --------
    >>> weight_function([0.01, 0.3], [1.0, 0.5], "stepfun", (0.025, 1.0)).tolist()
    [1.0, 0.5]
    >>> round(float(weight_function([0.5], [2.0], "negexp", (0.0,))[0]), 6)   # exp(-2 * 0.5)
    0.367879
    """
    p = np.asarray(p, dtype=float)
    d = np.asarray(delta, dtype=float)
    if type_ == "stepfun":
        idx = np.searchsorted(np.asarray(steps, dtype=float), p, side="left")
        return d[np.minimum(idx, d.size - 1)]
    if type_ == "beta":
        return p ** (d[0] - 1.0) * (1.0 - p) ** (d[1] - 1.0)
    a = float(steps[0])
    g = {"halfnorm": lambda x: np.exp(-d[0] * x * x),
         "negexp": lambda x: np.exp(-d[0] * x),
         "logistic": lambda x: 2.0 * np.exp(-d[0] * x) / (1.0 + np.exp(-d[0] * x)),
         "power": lambda x: (1.0 - x) ** d[0]}[type_]
    return np.where(p <= a, 1.0, g(p) / g(np.float64(a)))


def _pvalues(y, s, alternative):
    from scipy.special import ndtr

    z = y / s
    if alternative == "two.sided":
        return 2.0 * ndtr(-np.abs(z))
    return ndtr(-z) if alternative == "greater" else ndtr(z)


# ============================================================================ likelihood


class _Problem:
    """Data and constants of one fit; ``nll(theta)`` is metafor's negative log-likelihood."""

    def __init__(self, y, v, X, type_, steps, alternative):
        from scipy.special import ndtri

        self.y, self.v, self.X = y, v, X
        self.s = np.sqrt(v)
        self.type, self.alternative = type_, alternative
        self.p = X.shape[1]
        self.steps = steps
        if type_ == "stepfun":
            self.m = len(steps)
            self.fixed = np.array([1.0] + [np.nan] * (self.m - 1))
            self.init = np.ones(self.m)
            self.lower = np.full(self.m, 0.0)
            self.h0 = np.ones(self.m)
            self.pval_min = 0.0
        else:
            self.m, self.init, self.lower, self.h0, self.pval_min = _spec(type_)
            self.fixed = np.full(self.m, np.nan)
        self.free = np.isnan(self.fixed)
        pv = _pvalues(y, self.s, alternative)
        self.pvals = np.clip(pv, self.pval_min, 1.0 - self.pval_min)
        if type_ == "stepfun":
            self.pgrp = np.searchsorted(np.asarray(steps), self.pvals, side="left")
            # cut points: y-values where p(y) = steps[j] (j < last), per study
            st = np.asarray(steps[:-1], dtype=float)
            if alternative == "two.sided":
                self.cuts = self.s[:, None] * ndtri(1.0 - st[None, :] / 2.0)
            elif alternative == "greater":
                self.cuts = self.s[:, None] * ndtri(1.0 - st[None, :])
            else:
                self.cuts = self.s[:, None] * ndtri(st[None, :])
        else:
            # break points of the integrand in y (kinks of w: steps[0]; the clipping of p at
            # pval_min and 1 - pval_min); between them a composite Gauss-Legendre rule in z
            kinks = [q for q in (float(steps[0]), self.pval_min, 1.0 - self.pval_min)
                     if 0.0 < q < 1.0]
            ys = []
            for q in kinks:
                if alternative == "two.sided":
                    c = float(ndtri(1.0 - q / 2.0))
                    ys += [c, -c]
                else:
                    ys.append(float(ndtri(1.0 - q)) if alternative == "greater"
                              else float(ndtri(q)))
            self.kink_y = np.array(sorted(set(ys)))       # in units of s_i
            x, w = np.polynomial.legendre.leggauss(_GL_ORDER)
            sub = np.linspace(0.0, 1.0, _GL_PANELS + 1)
            half = (sub[1:] - sub[:-1]) / 2.0
            mid = (sub[1:] + sub[:-1]) / 2.0
            self.t_nodes = (mid[:, None] + half[:, None] * x[None, :]).ravel()   # on [0, 1]
            self.t_w = (half[:, None] * w[None, :]).ravel()

    def deltas(self, free_vals):
        d = self.fixed.copy()
        d[self.free] = free_vals
        return d

    def split(self, theta):
        p = self.p
        return theta[:p], theta[p], self.deltas(theta[p + 1:])

    def _cdf_p(self, mu, sig):
        """P(p(Y) <= steps[j]) for Y ~ N(mu, sig^2), one column per inner step."""
        from scipy.special import ndtr

        c = self.cuts
        if self.alternative == "greater":
            return ndtr((mu[:, None] - c) / sig[:, None])
        if self.alternative == "less":
            return ndtr((c - mu[:, None]) / sig[:, None])
        return ndtr((mu[:, None] - c) / sig[:, None]) + ndtr((-c - mu[:, None]) / sig[:, None])

    def _terms(self):
        """(sign, cut) pairs: F = sum over terms of Phi(sign * (mu - cut) / sigma)."""
        c = self.cuts
        if self.alternative == "greater":
            return ((1.0, c),)
        if self.alternative == "less":
            return ((-1.0, c),)
        return ((1.0, c), (-1.0, -c))

    def grad_nll(self, theta):
        """Analytic gradient of the step-function negative log-likelihood in
        (beta, tau2, free deltas)."""
        from scipy.special import ndtr

        b, tau2, delta = self.split(theta)
        mu = self.X @ b
        s2 = self.v + tau2
        if np.any(s2 <= 0):
            return np.full(theta.size, np.nan)
        sig = np.sqrt(s2)
        k = mu.size
        F = np.zeros((k, self.cuts.shape[1]))
        dFm = np.zeros_like(F)
        dFs = np.zeros_like(F)
        for sg, c in self._terms():
            a = sg * (mu[:, None] - c) / sig[:, None]
            ph = np.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
            F += ndtr(a)
            dFm += ph * sg / sig[:, None]
            dFs += -ph * a / sig[:, None]
        z0 = np.zeros((k, 1))
        Ff = np.concatenate([z0, F, z0 + 1.0], axis=1)
        dM = np.concatenate([z0, dFm, z0], axis=1)
        dS = np.concatenate([z0, dFs, z0], axis=1)
        P = np.diff(Ff, axis=1)
        A = P @ delta
        dA_mu = np.diff(dM, axis=1) @ delta
        dA_sig = np.diff(dS, axis=1) @ delta
        r = self.y - mu
        g_mu = r / s2 - dA_mu / A
        g_b = self.X.T @ g_mu
        g_t = float(np.sum(-0.5 / s2 + 0.5 * r * r / (s2 * s2) - dA_sig / (2.0 * sig * A)))
        counts = np.bincount(self.pgrp, minlength=delta.size)
        g_d = counts / delta - (P / A[:, None]).sum(axis=0)
        return -np.r_[g_b, g_t, g_d[self.free]]

    def A(self, mu, tau2, delta):
        sig = np.sqrt(np.maximum(self.v + tau2, 1e-300))
        if self.type == "stepfun":
            F = self._cdf_p(mu, sig)
            F = np.concatenate([np.zeros((mu.size, 1)), F, np.ones((mu.size, 1))], axis=1)
            return (np.diff(F, axis=1) * delta[None, :]).sum(axis=1)
        # z = (y - mu) / sigma on [-_Z_MAX, _Z_MAX], split at the kinks, each piece with the
        # composite rule scaled to its length
        zk = (self.s[:, None] * self.kink_y[None, :] - mu[:, None]) / sig[:, None]
        edges = np.concatenate([np.full((mu.size, 1), -_Z_MAX), np.clip(zk, -_Z_MAX, _Z_MAX),
                                np.full((mu.size, 1), _Z_MAX)], axis=1)
        edges.sort(axis=1)
        total = np.zeros(mu.size)
        for j in range(edges.shape[1] - 1):
            a, b = edges[:, j], edges[:, j + 1]
            z = a[:, None] + (b - a)[:, None] * self.t_nodes[None, :]
            yv = mu[:, None] + sig[:, None] * z
            pv = _pvalues(yv, self.s[:, None], self.alternative)
            pv = np.clip(pv, self.pval_min, 1.0 - self.pval_min)
            f = weight_function(pv, delta, self.type, self.steps) * np.exp(-0.5 * z * z)
            total += (b - a) * (f @ self.t_w)
        return total / math.sqrt(2.0 * math.pi)

    def loglik(self, beta, tau2, delta):
        mu = self.X @ beta
        tv = self.v + tau2
        if np.any(tv <= 0):
            return -np.inf
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.type == "stepfun":
                logw = np.log(delta[self.pgrp])
            else:
                logw = np.log(weight_function(self.pvals, delta, self.type, self.steps))
            A = self.A(mu, tau2, delta)
            ll = np.sum(logw - 0.5 * (math.log(2 * math.pi) + np.log(tv)
                                      + (self.y - mu) ** 2 / tv) - np.log(A))
        return float(ll) if np.isfinite(ll) else -np.inf

    def nll(self, theta):
        b, t2, d = self.split(theta)
        ll = self.loglik(b, t2, d)
        return -ll if np.isfinite(ll) else 1e300


# ============================================================================ result


def _clean(x) -> Optional[float]:
    return None if x is None or not np.isfinite(x) else float(x)


@dataclass(frozen=True)
class SelectionResult:
    """A fitted selection model (metafor's ``selmodel()`` result). Frozen; full precision.

    ``estimate`` .. ``pvalue`` are those of the first coefficient (the intercept: the pooled
    estimate adjusted for selection, on the analysis scale); ``coefficients`` holds all of them
    when there are moderators. ``delta_se`` is None for a fixed delta (delta_1 = 1 of the step
    function) and where the Hessian could not be inverted.
    """

    type: str
    k: int
    estimate: float
    se: Optional[float]
    ci_lower: Optional[float]
    ci_upper: Optional[float]
    pvalue: Optional[float]
    tau2: float
    delta: tuple
    delta_se: tuple
    lrt: float
    lrt_df: int
    lrt_p: float
    alternative: str = "greater"
    steps: tuple = ()
    level: float = 95.0
    loglik: float = float("nan")
    loglik0: float = float("nan")
    names: tuple = ("intrcpt",)
    beta: tuple = ()
    beta_se: tuple = ()
    p_counts: tuple = ()
    warnings: tuple = ()

    def to_dict(self) -> dict:
        """The ``selection --json`` form (no NaN: missing SEs are null)."""
        d = {"type": self.type, "k": self.k, "estimate": self.estimate, "se": self.se,
             "ci_lower": self.ci_lower, "ci_upper": self.ci_upper, "p": self.pvalue,
             "tau2": self.tau2, "delta": list(self.delta), "delta_se": list(self.delta_se),
             "lrt": self.lrt, "lrt_df": self.lrt_df, "lrt_p": self.lrt_p}
        if len(self.beta) > 1:
            from metaalliance.engine.distributions import norm

            crit = float(norm.isf((100.0 - self.level) / 200.0))
            coefs = []
            for n, b, s in zip(self.names, self.beta, self.beta_se):
                ok = s is not None
                coefs.append({"name": n, "estimate": b, "se": s,
                              "ci_lower": b - crit * s if ok else None,
                              "ci_upper": b + crit * s if ok else None,
                              "pvalue": float(2 * norm.sf(abs(b / s))) if ok else None})
            d["coefficients"] = coefs
        return d

    def weights(self, p):
        """The fitted selection function at p-values ``p`` (for plots)."""
        return weight_function(p, self.delta, self.type, self.steps)

    def summary(self) -> str:
        lines = [f"Selection model ({self.type}, alternative = {self.alternative}), k = {self.k}",
                 f"  estimate {self.estimate:.4f} (SE {_fmt(self.se)}), "
                 f"{self.level:g}% CI [{_fmt(self.ci_lower)}, {_fmt(self.ci_upper)}], "
                 f"p = {_fmt(self.pvalue)}",
                 f"  tau^2 {self.tau2:.4f}; delta " + ", ".join(f"{d:.4f}" for d in self.delta),
                 f"  LRT of selection: {self.lrt:.4f} (df = {self.lrt_df}), p = {self.lrt_p:.4f}"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _fmt(x) -> str:
    return "NA" if x is None else f"{x:.4f}"


# ============================================================================ API


def _check_steps(steps, type_):
    try:
        st = sorted(set(float(s) for s in (steps or ())))
    except (TypeError, ValueError):
        raise OptionError(f"selection: steps must be numbers between 0 and 1 (got {steps!r})") \
            from None
    if any(not (0.0 <= s <= 1.0) or math.isnan(s) for s in st):
        raise OptionError(f"selection: steps must lie between 0 and 1 (got {steps!r})")
    if type_ == "stepfun":
        if not st or st == [1.0]:
            raise OptionError("selection: type 'stepfun' needs steps (e.g. 0.025 or 0.025,0.5)")
        if st[-1] != 1.0:
            st.append(1.0)
        return tuple(st)
    if type_ == "beta":
        if st:
            raise OptionError("selection: type 'beta' takes no steps")
        return (0.0,)
    if len(st) > 1:
        raise OptionError(f"selection: type {type_!r} takes a single step (got {steps!r})")
    return (st[0],) if st else (0.0,)


#: the default steps: the 3PSM's cut point for stepfun; "no step" (metafor's 0) for the others
DEFAULT_STEPS = (0.025,)


def selection_model(yi, vi, type: str = "stepfun", steps=DEFAULT_STEPS,
                    alternative: str = "greater",
                    X=None, level=95, names=None) -> SelectionResult:
    """Fit a selection model by maximum likelihood, as ``selmodel(rma(yi, vi, method = "ML"))``.

    Parameters
    ----------
    yi, vi : effect sizes and sampling variances (all vi > 0).
    type : one of ``SELECTION_TYPES``.
    steps : the step function's cut points (1 is appended); for the smooth types an optional
        single value a (w = 1 for p <= a); none for "beta". The default is ``(0.025,)`` for
        stepfun (the three-parameter selection model, 3PSM) and no step for the other types
        (metafor's steps = 0).
    alternative : "greater" (default, metafor's), "less" or "two.sided".
    X : optional moderator matrix with its intercept column first (k x p).
    level : confidence level (95 or 0.95).

    Examples
    --------
    >>> r = selection_model([0.35, 0.10, 0.42, 0.05, 0.28, 0.61, 0.15, 0.22, 0.48, 0.02],
    ...                     [0.010, 0.020, 0.015, 0.030, 0.012, 0.040, 0.025, 0.018, 0.020,
    ...                      0.035])
    >>> r.type, r.k, r.delta[0], r.lrt_df, r.p_counts    # 3PSM; 5 p-values below .025
    ('stepfun', 10, 1.0, 1, (5, 5))
    """
    if type not in SELECTION_TYPES:
        raise OptionError(f"selection: type must be one of {', '.join(SELECTION_TYPES)} "
                          f"(got {type!r})")
    if alternative not in ALTERNATIVES:
        raise OptionError(f"selection: alternative must be one of {', '.join(ALTERNATIVES)} "
                          f"(got {alternative!r})")
    if type != "stepfun" and steps is DEFAULT_STEPS:
        steps = ()
    st = _check_steps(steps, type)
    lv, alpha = level_alpha(level)
    y = np.asarray(yi, dtype=float).ravel()
    v = np.asarray(vi, dtype=float).ravel()
    if y.size != v.size:
        raise DataError(f"selection: yi and vi must have the same length (got {y.size} and "
                        f"{v.size})")
    if not np.all(np.isfinite(y)):
        raise DataError("selection: yi must be finite numbers")
    if not np.all(np.isfinite(v) & (v > 0)):
        raise DataError("selection: vi must be finite and > 0 (metafor: cannot fit a selection "
                        "model when sampling variances are non-positive)")
    if X is None:
        Xm = np.ones((y.size, 1))
        nm = ("intrcpt",)
    else:
        Xm = np.asarray(X, dtype=float)
        if Xm.ndim != 2 or Xm.shape[0] != y.size:
            raise DataError(f"selection: X must have one row per study (got shape {Xm.shape})")
        nm = tuple(names) if names is not None else \
            ("intrcpt",) + tuple(f"X{j}" for j in range(1, Xm.shape[1]))
        if np.linalg.matrix_rank(Xm) < Xm.shape[1]:
            raise ModelError("selection: the moderator matrix is not of full rank")
    prob = _Problem(y, v, Xm, type, st, alternative)
    p, m = prob.p, prob.m
    nfree = int(prob.free.sum())
    if y.size < p + 1 + nfree:
        raise ModelError(f"selection: number of studies (k={y.size}) is too small to fit the "
                         f"selection model")
    counts = ()
    if type == "stepfun" or st[0] > 0:
        grp = np.searchsorted(np.asarray(st), prob.pvals, side="left")
        counts = tuple(int((grp == j).sum()) for j in range(len(st)))
        if type == "stepfun" and any(c == 0 for c, f in zip(counts, prob.free) if f):
            raise ModelError("selection: one or more intervals of the step function contain no "
                             "observed p-value (metafor stops here too); choose other steps")
        if type != "stepfun" and any(c == 0 for c in counts):
            raise ModelError("selection: one of the intervals contains no observed p-value "
                             "(metafor stops here too); choose another step")

    # --- the model without selection (delta at H0): ML random-effects fit, log-likelihood ll0

    x0, ll0 = _ml_fit(y, v, Xm)

    # --- the selection model
    lo = np.r_[np.full(p, -np.inf), 0.0, prob.lower[prob.free]]
    lo[p + 1:] = np.maximum(lo[p + 1:], 1e-10 if type == "stepfun" else lo[p + 1:])
    hi = np.r_[np.full(p, np.inf), np.inf, np.full(nfree, _DELTA_MAX)]
    # stage 1 as metafor: unconstrained quasi-Newton on (beta, log(tau2 + .001) start,
    # logit-scaled delta); stage 2: bounded polish in the original parameters
    dlo = lo[p + 1:]

    def to_theta(z):
        d = dlo + (_DELTA_MAX - dlo) / (1.0 + np.exp(-z[p + 1:]))
        return np.r_[z[:p], math.exp(min(z[p], 700.0)), d]

    def nll_z(z):
        return prob.nll(to_theta(z))

    d0 = prob.init[prob.free]
    z0 = np.r_[x0[:p], math.log(x0[p] + 0.001),
               np.log((d0 - dlo) / (_DELTA_MAX - d0))]
    from scipy.optimize import minimize

    gfun = prob.grad_nll if type == "stepfun" else None

    def jac_z(z):
        if gfun is None:
            return _num_grad(nll_z, z, _steps(z, 1e-6))
        th = to_theta(z)
        g = gfun(th)
        dd = th[p + 1:] - dlo
        return np.r_[g[:p], g[p] * th[p], g[p + 1:] * dd * (1.0 - dd / (_DELTA_MAX - dlo))]

    st1 = minimize(nll_z, z0, jac=jac_z, method="BFGS",
                   options={"gtol": 1e-8, "maxiter": 2000})
    best = None
    for start in (to_theta(st1.x),) if gfun is not None else (to_theta(st1.x), np.r_[x0, d0]):
        xs, fs = _maximise(prob.nll, np.clip(start, lo, hi), lo, hi, grad=gfun)
        if best is None or fs < best[1]:
            best = (xs, fs)
    theta, fmin = best
    ll = -fmin
    beta, tau2, delta = prob.split(theta)
    if tau2 < 10 * np.finfo(float).eps:
        tau2 = 0.0
        theta[p] = 0.0
    notes = []
    dfree = delta[prob.free]
    dmin = prob.lower[prob.free]
    if np.any(dfree <= dmin + _EPS25) or np.any(dfree >= _DELTA_MAX - 100 * _EPS25):
        notes.append("estimate of one or more delta parameters is at its bound")

    # --- standard errors: inverse numerical Hessian of -ll in (beta, tau2, free deltas)
    def nll_free(th):   # unbounded (as numDeriv evaluates metafor's function)
        b, t2, d = prob.split(th)
        val = prob.loglik(b, t2, d)
        return -val if np.isfinite(val) else np.nan

    if gfun is not None:
        H = _hess_from_grad(gfun, theta, _steps(theta, 1e-5))
    else:
        H = _num_hess(nll_free, theta, _steps(theta, 1e-4))
    cov = None
    if np.all(np.isfinite(H)):
        try:
            L = np.linalg.cholesky(H)
            Li = np.linalg.inv(L)
            cov = Li.T @ Li
        except np.linalg.LinAlgError:
            cov = None
    if cov is None:
        notes.append("the Hessian could not be inverted: standard errors are not available")
        se_b = [None] * p
        se_d = [None] * m
    else:
        sd = np.sqrt(np.diag(cov))
        se_b = [float(s) for s in sd[:p]]
        se_d = [None] * m
        for j, idx in enumerate(np.flatnonzero(prob.free)):
            se_d[idx] = float(sd[p + 1 + j])
    for n_ in notes:
        warnings.warn(f"selection: {n_}", MetaAllianceWarning, stacklevel=2)

    from metaalliance.engine.distributions import chi2, norm

    crit = float(norm.isf(alpha / 2))
    b0, s0 = float(beta[0]), se_b[0]
    lrt = max(0.0, 2.0 * (ll - ll0))
    return SelectionResult(
        type=type, k=int(y.size), estimate=b0, se=s0,
        ci_lower=None if s0 is None else b0 - crit * s0,
        ci_upper=None if s0 is None else b0 + crit * s0,
        pvalue=None if s0 is None else float(2 * norm.sf(abs(b0 / s0))),
        tau2=float(tau2), delta=tuple(float(d) for d in delta), delta_se=tuple(se_d),
        lrt=float(lrt), lrt_df=nfree, lrt_p=float(chi2.sf(lrt, nfree)),
        alternative=alternative, steps=st, level=lv, loglik=float(ll), loglik0=float(ll0),
        names=nm, beta=tuple(float(b) for b in beta), beta_se=tuple(se_b),
        p_counts=counts, warnings=tuple(notes))


def _normal_ll(y, v, X, beta, tau2):
    tv = v + tau2
    r = y - X @ beta
    return float(-0.5 * np.sum(math.log(2 * math.pi) + np.log(tv) + r * r / tv))


def _ml_fit(y, v, X):
    """ML random-effects (meta-regression) fit: (beta, tau2) and its log-likelihood.

    tau^2 maximises the profile log-likelihood (beta by weighted least squares for each tau^2),
    found by a bounded scalar search polished to 1e-14 (the rma(method = "ML") optimum).
    """
    from scipy.optimize import minimize_scalar

    def prof(t2):
        w = 1.0 / (v + t2)
        sw = np.sqrt(w)
        b = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]
        return b, _normal_ll(y, v, X, b, t2)

    b0 = prof(0.0)[0]
    r = y - X @ b0
    upper = max(10.0 * float(np.var(r) + np.max(v)), 1e-6)
    res = minimize_scalar(lambda t: -prof(t)[1], bounds=(0.0, upper), method="bounded",
                          options={"xatol": 1e-14 * max(upper, 1.0)})
    t2 = float(res.x)
    cand = [(t2, prof(t2)), (0.0, prof(0.0))]
    t2, (b, ll) = max(cand, key=lambda c: c[1][1])
    return np.r_[b, t2], ll
