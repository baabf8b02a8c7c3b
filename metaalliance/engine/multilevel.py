"""Dependent findings: the three-level model (findings within clusters), as metafor's rma.mv.

Many studies report several alliance-outcome findings (raters, outcome measures, time points).
They are not independent. Of the three usual answers, this module holds the three-level model;
cluster-robust inference (metafor's ``robust()``, with clubSandwich's CR2) is
``cluster_robust.robust`` and within-cluster aggregation (metafor's ``aggregate()``) is
``aggregation.aggregate``; the inputs of all three are checked by ``clusters._validate``.

=====================================================  ==========================================
metaalliance                                           metafor
=====================================================  ==========================================
``three_level(yi, vi, cluster, method, test)``         ``rma.mv(yi, vi, random = ~ 1 |
                                                       cluster/finding, method, test)``
``three_level(..., X=X)`` (X with its intercept)       ``rma.mv(yi, vi, mods = X, intercept =
                                                       FALSE, random = ~ 1 | cluster/finding)``
=====================================================  ==========================================

The three-level model is ``y_ij = mu + u_i + w_ij + e_ij`` with ``u_i ~ N(0, sigma2[0])``
between clusters (studies), ``w_ij ~ N(0, sigma2[1])`` between findings within a cluster and
``e_ij ~ N(0, vi_ij)``. Its marginal covariance is block diagonal, one block per cluster,
``V_i = diag(v_i + sigma2[1]) + sigma2[0] 11'``, so every quantity (inverse, determinant,
derivatives of the likelihood) is computed per block with the Sherman-Morrison formula: O(k)
memory and time. The (restricted) likelihood is maximised by Newton-Raphson on the two
variance components with the exact observed information (Fisher scoring when it is not
positive definite), step halving, projection on sigma2 >= 0 and three starting points; the
iteration stops when the relative change is below 1e-10, far tighter than metafor's nlminb.

Computation only: no I/O, numpy in the hot path; scipy (distributions) and pandas (to_frame)
are imported inside the functions that need them.

Examples
--------
>>> fit = three_level([0.1, 0.3, 0.2, 0.5, 0.4, 0.35], [0.01, 0.02, 0.015, 0.01, 0.02, 0.03],
...                   ["a", "a", "b", "b", "c", "c"])
>>> fit.k, fit.n_clusters
(6, 3)
>>> round(fit.estimate, 6), round(fit.sigma2[1], 6)    # metafor: 0.3030831, 0, 0.0134929
(0.303083, 0.013493)
>>> fit.sigma2[0]
0.0
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from metaalliance.engine.clusters import _codes, _data_hash, _design, _validate

from metaalliance.errors import DataError, MetaAllianceWarning, OptionError
from metaalliance.engine.inference import level_alpha as _level_alpha
from metaalliance.options import check_option
from metaalliance.engine.results import Coefficient, versions as _versions

__all__ = [
    "THREE_LEVEL_METHODS", "THREE_LEVEL_TESTS", "MEASURES", "Coefficient", "ThreeLevelResult",
    "three_level",
]

#: estimators of the variance components (metafor's rma.mv offers these two)
THREE_LEVEL_METHODS = ("REML", "ML")
#: tests of the fixed effects in rma.mv: normal ("z") or t with k - p df ("t")
THREE_LEVEL_TESTS = ("z", "t")
#: "ZCOR" (Fisher z of r: to_frame(scale="r") and back-transformed values) or "generic"
MEASURES = ("ZCOR", "generic")
SCALES = ("r", "z")

_LOG_2PI = math.log(2.0 * math.pi)
_MAX_ITER = 200          # Newton iterations per starting point
_STEP_RTOL = 1e-10       # stop when every |change| <= 1e-10 (sigma2 + 1e-6 * mean(vi))


# ============================================================================ block algebra


class _Blocks:
    """Data sorted by cluster; per-cluster sums by ``np.add.reduceat`` over contiguous rows."""

    def __init__(self, y, v, X, codes):
        order = np.argsort(codes, kind="stable")
        self.order = order
        self.y = y[order]
        self.v = v[order]
        self.X = X[order]
        c = codes[order]
        self.starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        self.n_blocks = len(self.starts)
        self.sizes = np.diff(np.r_[self.starts, len(c)])
        self.blk = np.repeat(np.arange(self.n_blocks), self.sizes)
        self.k, self.p = self.X.shape
        self.logdet_xtx = np.linalg.slogdet(self.X.T @ self.X)[1]

    def csum(self, a):
        return np.add.reduceat(a, self.starts, axis=0)

    def unsort(self, a):
        out = np.empty_like(a)
        out[self.order] = a
        return out


class _Eval(NamedTuple):
    ll: float
    beta: np.ndarray
    vb: np.ndarray
    grad: np.ndarray
    fisher: np.ndarray
    obs_info: np.ndarray


def _evaluate(b: _Blocks, theta, reml: bool, derivs: bool = True) -> _Eval:
    """Log-likelihood (metafor's, with all constants) and its derivatives in (sigma2_1, sigma2_2).

    Per cluster c: a = 1/(v + s2), A_c = sum a, W_c = diag(a) - g_c a a' with
    g_c = s1 / (1 + s1 A_c), log|V_c| = sum log(v + s2) + log(1 + s1 A_c).
    Score: -1/2 tr(P G_j) + 1/2 y'P G_j P y; Fisher information 1/2 tr(P G_j P G_l) (W in
    place of P for ML); observed information y'P G_j P G_l P y - 1/2 tr(P G_j P G_l).
    """
    s1, s2 = float(theta[0]), float(theta[1])
    k, p, blk = b.k, b.p, b.blk
    a = 1.0 / (b.v + s2)
    A = b.csum(a)
    den = 1.0 + s1 * A
    g = s1 / den
    ga = g[blk] * a

    def W(Z):
        aZ = a[:, None] * Z
        return aZ - ga[:, None] * b.csum(aZ)[blk]

    B = W(b.X)
    H = b.X.T @ B
    Hinv = np.linalg.inv(H)
    Hinv = 0.5 * (Hinv + Hinv.T)
    beta = Hinv @ (B.T @ b.y)
    r = b.y - b.X @ beta
    Py = W(r[:, None])[:, 0]
    rss = float(r @ Py)
    logdet_v = float(np.sum(np.log(b.v + s2)) + np.sum(np.log(den)))
    if reml:
        logdet_h = np.linalg.slogdet(H)[1]
        ll = -0.5 * ((k - p) * _LOG_2PI - b.logdet_xtx + logdet_v + logdet_h + rss)
    else:
        ll = -0.5 * (k * _LOG_2PI + logdet_v + rss)
    if not derivs:
        return _Eval(ll, beta, Hinv, None, None, None)

    q = A / den                                  # 1'W_c 1
    a2 = b.csum(a * a)
    a3 = b.csum(a * a * a)
    u = b.csum(B)                                # 1'W_c X_c, (C, p)
    ps = b.csum(Py)                              # 1'P y per cluster
    L1 = u.T @ u                                 # B'G1 B
    L2 = B.T @ B                                 # B'B
    t11 = np.sum(q * q)                          # tr(W G1 W G1)
    t12 = np.sum(a2 / den ** 2)                  # tr(W G1 W)
    t22 = np.sum(a2 - 2.0 * g * a3 + g * g * a2 * a2)   # tr(W W)
    tr_wg1 = np.sum(q)
    tr_w = np.sum(a) - np.sum(g * a2)
    if reml:
        tr_g1 = tr_wg1 - np.sum(Hinv * L1)
        tr_g2 = tr_w - np.sum(Hinv * L2)
        K11 = (u * q[:, None]).T @ u             # B'G1 W G1 B
        tw = b.csum((a / den[blk])[:, None] * B)  # (W_c 1)'B_c
        K12 = u.T @ tw                           # B'G1 W B
        K22 = B.T @ W(B)                         # B'W B
        HL1 = Hinv @ L1
        HL2 = Hinv @ L2
        t11 = t11 - 2.0 * np.sum(Hinv * K11.T) + np.sum(HL1 * HL1.T)
        t12 = t12 - 2.0 * np.sum(Hinv * K12.T) + np.sum(HL1 * HL2.T)
        t22 = t22 - 2.0 * np.sum(Hinv * K22.T) + np.sum(HL2 * HL2.T)
    else:
        tr_g1, tr_g2 = tr_wg1, tr_w
    grad = 0.5 * np.array([np.sum(ps * ps) - tr_g1, Py @ Py - tr_g2])
    T = np.array([[t11, t12], [t12, t22]])
    # y'P G_j P G_l P y = z_j' P z_l with z_1 = G1 P y, z_2 = P y
    Z = np.column_stack([ps[blk], Py])
    PZ = W(Z) - B @ (Hinv @ (B.T @ Z))
    quad = Z.T @ PZ
    quad = 0.5 * (quad + quad.T)
    return _Eval(ll, beta, Hinv, grad, 0.5 * T, quad - 0.5 * T)


def _newton(b: _Blocks, reml: bool, free, start, scale):
    """Projected Newton-Raphson with step halving; returns (theta, _Eval, converged, iters)."""
    theta = np.where(free, np.maximum(start, 0.0), 0.0)
    ev = _evaluate(b, theta, reml)
    for it in range(1, _MAX_ITER + 1):
        g = ev.grad
        at_bound = free & (theta <= 0.0) & (g <= 0.0)
        idx = free & ~at_bound
        if not idx.any():
            return theta, ev, True, it
        gf = g[idx]
        d = None
        for info in (ev.obs_info, ev.fisher):
            m = info[np.ix_(idx, idx)]
            try:
                np.linalg.cholesky(m)
                d = np.linalg.solve(m, gf)      # can fail when m is PD only by rounding
            except np.linalg.LinAlgError:
                d = None
                continue
            if np.all(np.isfinite(d)):
                break
            d = None
        if d is None:                             # no positive definite information: ascent
            d = gf * scale ** 2
        step = 1.0
        for _ in range(60):
            cand = theta.copy()
            cand[idx] = np.maximum(theta[idx] + step * d, 0.0)
            ev_c = _evaluate(b, cand, reml)
            if np.isfinite(ev_c.ll) and ev_c.ll >= ev.ll - 1e-13 * max(1.0, abs(ev.ll)):
                break
            step *= 0.5
        else:
            # no step improves the likelihood: optimal up to rounding if the gradient is ~0
            pg = np.abs(g[idx]) * (theta[idx] + scale)
            return theta, ev, bool(np.all(pg <= 1e-6 * max(1.0, abs(ev.ll)))), it
        change = np.abs(cand - theta)
        theta, ev = cand, ev_c
        if np.all(change <= _STEP_RTOL * (theta + scale)):
            return theta, ev, True, it
    return theta, ev, False, _MAX_ITER


def _kkt_ok(ev: _Eval, theta, free, scale) -> bool:
    g = ev.grad
    ok = True
    for j in range(2):
        if not free[j]:
            continue
        if theta[j] <= 0.0:
            ok &= g[j] * scale <= 1e-6 * max(1.0, abs(ev.ll))
        else:
            ok &= abs(g[j]) * (theta[j] + scale) <= 1e-6 * max(1.0, abs(ev.ll))
    return bool(ok)


def _fit_components(b: _Blocks, reml: bool, free, who: str):
    """Maximise the (restricted) likelihood over the free variance components.

    Starting values as metafor's rma.mv: total = max(0.002, var(y - X b_FE) - 1/mean(1/v)),
    split equally; plus the two 90/10 splits. The best converged solution wins. Fallback when
    none converges: L-BFGS-B (scipy) from the best point; if that fails too, the best point is
    kept with a MetaAllianceWarning and ``converged = False`` (all results stay finite, because
    V is positive definite for every sigma2 >= 0).
    """
    w = 1.0 / b.v
    bfe = np.linalg.solve(b.X.T @ (w[:, None] * b.X), b.X.T @ (w * b.y))
    res = b.y - b.X @ bfe
    total = max(0.002, float(np.var(res, ddof=1)) - 1.0 / float(np.mean(w)))
    scale = 1e-6 * float(np.mean(b.v))
    nfree = int(np.sum(free))
    splits = [(0.5, 0.5), (0.9, 0.1), (0.1, 0.9)] if nfree == 2 else [(1.0, 1.0)]
    best = None
    for f1, f2 in splits:
        start = np.array([f1 * total, f2 * total])
        theta, ev, conv, it = _newton(b, reml, free, start, scale)
        cand = (conv, ev.ll, theta, ev, it)
        if best is None or (cand[0], cand[1]) > (best[0], best[1]):
            best = cand
    conv, _, theta, ev, it = best
    if conv:
        return theta, ev, True, "newton", it
    # fallback: bounded quasi-Newton on the same objective
    from scipy import optimize

    fixed = ~free

    def fun(x):
        th = np.where(fixed, 0.0, x)
        e = _evaluate(b, th, reml)
        return -e.ll, -np.where(fixed, 0.0, e.grad)

    out = optimize.minimize(fun, theta, jac=True, method="L-BFGS-B",
                            bounds=[(0.0, None)] * 2,
                            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000})
    th2 = np.where(fixed, 0.0, np.maximum(out.x, 0.0))
    ev2 = _evaluate(b, th2, reml)
    if ev2.ll >= ev.ll:
        theta, ev = th2, ev2
    if _kkt_ok(ev, theta, free, scale):
        return theta, ev, True, "L-BFGS-B", it
    warnings.warn(f"{who}: the {'REML' if reml else 'ML'} optimisation did not converge; "
                  f"using the best point found (sigma2 = {theta[0]:.6g}, {theta[1]:.6g}, "
                  f"log-likelihood {ev.ll:.6g})", MetaAllianceWarning, stacklevel=3)
    return theta, ev, False, "best point (not converged)", it


# ================================================================================ results


def _readonly(a) -> np.ndarray:
    a = np.array(a, dtype=float, copy=True)
    a.setflags(write=False)
    return a


def _fmt(x, digits=4) -> str:
    return f"{x:.{digits}f}"


def _fmt_p(p) -> str:
    return "<.0001" if p < 1e-4 else f"{p:.4f}"


@dataclass(frozen=True, eq=False)
class ThreeLevelResult:
    """A fitted three-level model (findings within clusters), as metafor's ``rma.mv``.

    ``estimate``, ``se``, ``stat``, ``pvalue``, ``ci_*`` and ``pi_*`` refer to the first
    coefficient (the pooled effect of the intercept-only model); ``coefficients`` holds all.
    ``sigma2 = (between clusters, within clusters)``. ``i2`` is the multilevel I^2 of the
    metafor FAQ (percent), ``i2_levels`` its split over the two levels. ``loglik``, ``aic``,
    ``bic``, ``aicc`` are metafor's ``fitstats`` for the fitted method.
    """

    k: int
    n_clusters: int
    method: str
    test: str
    level: float
    measure: str
    estimate: float
    se: float
    stat: float
    pvalue: float
    ci_lower: float
    ci_upper: float
    pi_lower: float
    pi_upper: float
    df: float | None
    sigma2: tuple[float, float]
    loglik: float
    aic: float
    bic: float
    aicc: float
    q: float
    q_df: int
    q_pvalue: float
    i2: float
    i2_levels: tuple[float, float]
    coefficients: tuple[Coefficient, ...]
    qm: float | None
    qm_df: tuple | None
    qm_pvalue: float | None
    vcov: np.ndarray = field(repr=False)
    yi: np.ndarray = field(repr=False)
    vi: np.ndarray = field(repr=False)
    cluster: tuple = field(repr=False)
    labels: tuple = field(repr=False)
    X: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)
    weights_rowsum: np.ndarray = field(repr=False)
    cluster_sizes: dict = field(repr=False)
    converged: bool
    optimizer: str
    iterations: int
    provenance: dict = field(repr=False)

    @property
    def p(self) -> int:
        return len(self.coefficients)

    @property
    def stat_name(self) -> str:
        return self.test

    def back_transformed(self) -> dict[str, float]:
        """tanh of estimate, CI and PI (display scale r; only meaningful for measure ZCOR)."""
        return {key: math.tanh(getattr(self, key))
                for key in ("estimate", "ci_lower", "ci_upper", "pi_lower", "pi_upper")}

    def __str__(self) -> str:
        return self.summary()

    # ----------------------------------------------------------------------------- output
    def to_dict(self) -> dict:
        """The ``pool --cluster COL --json`` dict of ARCHITECTURE.md (full precision), plus
        method, test, prediction interval, I^2 and, for ZCOR, the back-transformed r values."""
        d = {
            "k": self.k, "n_clusters": self.n_clusters, "estimate": self.estimate,
            "se": self.se, "ci_lower": self.ci_lower, "ci_upper": self.ci_upper,
            "sigma2": list(self.sigma2), "loglik": self.loglik, "q": self.q,
            "measure": self.measure, "method": self.method, "test": self.test,
            "pvalue": self.pvalue, "pi_lower": self.pi_lower, "pi_upper": self.pi_upper,
            "q_df": self.q_df, "q_pvalue": self.q_pvalue, "i2": self.i2,
            "i2_levels": list(self.i2_levels), "converged": self.converged,
        }
        if self.df is not None:
            d["df"] = self.df
        if self.p > 1:
            d["coefficients"] = [
                {"name": c.name, "estimate": c.estimate, "se": c.se, "ci_lower": c.ci_lower,
                 "ci_upper": c.ci_upper, "pvalue": c.pvalue} for c in self.coefficients]
            d["qm"] = self.qm
            d["qm_df"] = list(self.qm_df)
            d["qm_pvalue"] = self.qm_pvalue
        if self.measure == "ZCOR":
            d["back_transformed"] = self.back_transformed()
        return d

    def to_frame(self, scale: str = "z"):
        """Per-finding table: label, cluster, effect and its normal CI (as metafor's forest; on
        z: yi, vi, se, ci; on r: tanh of them), metafor's weights (``weights(res)``, the
        diagonal of V^-1, percent) and row-sum weights (``type = "rowsum"``, percent)."""
        import pandas as pd
        from metaalliance.engine import distributions as stats

        check_option("scale", scale, SCALES)
        if scale == "r" and self.measure != "ZCOR":
            raise OptionError(f"scale: 'r' needs measure ZCOR (this fit has measure "
                              f"{self.measure!r}); use scale='z'")
        _, alpha = _level_alpha(self.level)
        crit = stats.norm.isf(alpha / 2)
        se = np.sqrt(self.vi)
        lo, hi = self.yi - crit * se, self.yi + crit * se
        head = {"label": list(self.labels), "cluster": list(self.cluster)}
        tail = {"weight": self.weights, "weight_rowsum": self.weights_rowsum}
        if scale == "z":
            return pd.DataFrame({**head, "yi": self.yi, "vi": self.vi, "se": se,
                                 "ci_lower": lo, "ci_upper": hi, **tail})
        return pd.DataFrame({**head, "r": np.tanh(self.yi), "ci_lower": np.tanh(lo),
                             "ci_upper": np.tanh(hi), **tail})

    def summary(self) -> str:
        """A metafor-like printout (rounded for reading; the attributes keep full precision)."""
        lv = f"{self.level:g}%"
        lines = [
            f"Three-level meta-analysis (k = {self.k} findings in {self.n_clusters} clusters; "
            f"method: {self.method}; test: {self.test})",
            "",
            f"logLik = {self.loglik:.4f}   AIC = {self.aic:.4f}   BIC = {self.bic:.4f}   "
            f"AICc = {self.aicc:.4f}",
            "",
            "Variance components:",
            f"  sigma2 between clusters = {self.sigma2[0]:.4f}  (sqrt {math.sqrt(self.sigma2[0]):.4f})",
            f"  sigma2 within clusters  = {self.sigma2[1]:.4f}  (sqrt {math.sqrt(self.sigma2[1]):.4f})",
            f"  I^2 total = {self.i2:.2f}%  (between {self.i2_levels[0]:.2f}%, "
            f"within {self.i2_levels[1]:.2f}%)",
            "",
            f"Test for heterogeneity: Q(df = {self.q_df}) = {self.q:.4f}, p = {_fmt_p(self.q_pvalue)}",
            "",
        ]
        if self.p > 1:
            dfs = f"F(df1 = {self.qm_df[0]}, df2 = {self.qm_df[1]})" if self.test == "t" \
                else f"QM(df = {self.qm_df[0]})"
            lines += [f"Test of moderators: {dfs} = {self.qm:.4f}, p = {_fmt_p(self.qm_pvalue)}", ""]
        stat = "tval" if self.test == "t" else "zval"
        lines.append(f"{'':14s}{'estimate':>10s}{'se':>9s}{stat:>9s}{'pval':>9s}"
                     f"{'ci.lb':>9s}{'ci.ub':>9s}")
        for c in self.coefficients:
            lines.append(f"{c.name[:14]:14s}{c.estimate:10.4f}{c.se:9.4f}{c.stat:9.4f}"
                         f"{_fmt_p(c.pvalue):>9s}{c.ci_lower:9.4f}{c.ci_upper:9.4f}")
        lines.append(f"{lv} prediction interval: [{self.pi_lower:.4f}, {self.pi_upper:.4f}]")
        if self.measure == "ZCOR":
            lines.append(f"Back-transformed (r): {math.tanh(self.estimate):.4f} "
                         f"[{math.tanh(self.ci_lower):.4f}, {math.tanh(self.ci_upper):.4f}], "
                         f"PI [{math.tanh(self.pi_lower):.4f}, {math.tanh(self.pi_upper):.4f}]")
        if not self.converged:
            lines.append("WARNING: the optimisation did not converge (see warnings).")
        return "\n".join(lines)


# ============================================================================ three_level


def three_level(yi, vi, cluster, method: str = "REML", test: str = "z", level=95,
                labels=None, X=None, coef_names=None, measure: str = "ZCOR") -> ThreeLevelResult:
    """Three-level random-effects model: findings within clusters (studies).

    Equals metafor's ``rma.mv(yi, vi, random = ~ 1 | cluster/finding, method, test)`` with
    ``finding`` a within-cluster id (every row its own finding).

    Parameters
    ----------
    yi, vi : array-like
        Effect sizes (Fisher z for measure "ZCOR") and their sampling variances (> 0).
    cluster : array-like
        One cluster label (e.g. the study's citekey) per finding. Clusters of one are fine.
    method : "REML" (default) or "ML".
    test : "z" (default) or "t" (t with k - p df, metafor's ``test = "t"``).
    level : confidence level in percent (or as a proportion), default 95.
    labels : optional per-finding labels for ``to_frame()``.
    X, coef_names : optional design matrix (k x p, including the intercept column) and its
        column names: the mixed-effects (meta-regression) three-level model.
    measure : "ZCOR" (back-transform to r for display) or "generic".

    Special cases, as metafor: with one cluster, sigma2 between clusters is fixed at 0; when
    every cluster has a single finding only the sum of the two components is identified and
    it is reported as the between-cluster component (sigma2 within = 0); both warn.
    """
    who = "three_level"
    check_option("method", method, THREE_LEVEL_METHODS)
    check_option("test", test, THREE_LEVEL_TESTS)
    check_option("measure", measure, MEASURES)
    lv, alpha = _level_alpha(level)
    yi, vi, labels_c, codes, uniq = _validate(yi, vi, cluster, who)
    k = len(yi)
    Xd, names, intercept = _design(X, k, coef_names, who)
    if coef_names is None and X is not None:
        names = ("intrcpt",) + names[1:] if intercept else names
    if labels is None:
        labels = tuple(str(i + 1) for i in range(k))
    else:
        labels = tuple(str(x) for x in labels)
        if len(labels) != k:
            raise DataError(f"{who}: {len(labels)} labels for {k} findings")
    b = _Blocks(yi, vi, Xd, codes)
    n_clusters = b.n_blocks
    free = np.array([True, True])
    if n_clusters == 1:
        free[0] = False
        warnings.warn(f"{who}: all findings are in one cluster; sigma2 between clusters is "
                      "fixed at 0 (as metafor does for a single-level factor)",
                      MetaAllianceWarning, stacklevel=2)
    elif n_clusters == k:
        free[1] = False
        warnings.warn(f"{who}: every cluster has one finding, so only sigma2 between + within "
                      "is identified; it is reported as sigma2 between clusters "
                      "(sigma2 within = 0)", MetaAllianceWarning, stacklevel=2)
    reml = method == "REML"
    theta, ev, converged, optimizer, iters = _fit_components(b, reml, free, who)
    return _assemble(b, theta, ev, reml, method, test, lv, alpha, Xd, names, intercept,
                     yi, vi, labels_c, uniq, labels, measure, converged, optimizer, iters,
                     parms=Xd.shape[1] + (2 if n_clusters > 1 else 1))


def _assemble(b, theta, ev, reml, method, test, lv, alpha, Xd, names, intercept, yi, vi,
              labels_c, uniq, labels, measure, converged, optimizer, iters, parms):
    from metaalliance.engine import distributions as stats

    k, p = b.k, b.p
    s1, s2 = float(theta[0]), float(theta[1])
    beta, vb = ev.beta, ev.vb
    se = np.sqrt(np.diag(vb))
    stat = beta / se
    df = None
    if test == "t":
        df = float(k - p)
        pval = 2.0 * stats.t.sf(np.abs(stat), df)
        crit = float(stats.t.isf(alpha / 2, df))
    else:
        pval = 2.0 * stats.norm.sf(np.abs(stat))
        crit = float(stats.norm.isf(alpha / 2))
    coefs = tuple(Coefficient(names[j], float(beta[j]), float(se[j]), float(stat[j]),
                              float(pval[j]), float(beta[j] - crit * se[j]),
                              float(beta[j] + crit * se[j])) for j in range(p))
    # prediction interval at x = (1, 0, ..., 0), as predict.rma.mv
    pi_half = crit * math.sqrt(float(vb[0, 0]) + s1 + s2)
    # QE and the FAQ's multilevel I^2, both with the fixed-effect weights 1/vi
    w = 1.0 / vi
    XtWX = Xd.T @ (w[:, None] * Xd)
    XtWXi = np.linalg.inv(XtWX)
    bfe = XtWXi @ (Xd.T @ (w * yi))
    qe = float(np.sum(w * (yi - Xd @ bfe) ** 2))
    q_df = k - p
    q_p = float(stats.chi2.sf(qe, q_df))
    tr_p = float(np.sum(w) - np.sum(XtWXi * (Xd.T @ ((w * w)[:, None] * Xd))))
    typical = (k - p) / tr_p
    i2 = 100.0 * (s1 + s2) / (s1 + s2 + typical)
    i2_levels = (100.0 * s1 / (s1 + s2 + typical), 100.0 * s2 / (s1 + s2 + typical))
    # moderators: Wald test of all coefficients but the intercept
    qm = qm_df = qm_p = None
    if p > 1:
        btt = np.arange(1, p) if intercept else np.arange(p)
        bb = beta[btt]
        qm = float(bb @ np.linalg.solve(vb[np.ix_(btt, btt)], bb))
        m = len(btt)
        if test == "t":
            qm = qm / m
            qm_df = (m, k - p)
            qm_p = float(stats.f.sf(qm, m, k - p))
        else:
            qm_df = (m,)
            qm_p = float(stats.chi2.sf(qm, m))
    # fit statistics as metafor's fitstats (REML: k - p observations)
    n_eff = k - p if reml else k
    aic = -2.0 * ev.ll + 2.0 * parms
    bic = -2.0 * ev.ll + parms * math.log(n_eff)
    mx = max(n_eff, parms + 2)
    aicc = -2.0 * ev.ll + 2.0 * parms * mx / (mx - parms - 1)
    # weights: diag(V^-1) (metafor's weights(res)) and row sums of V^-1, both in percent
    a = 1.0 / (b.v + s2)
    A = b.csum(a)
    den = 1.0 + s1 * A
    wdiag = a - (s1 / den)[b.blk] * a * a
    wrow = a / den[b.blk]
    wdiag = b.unsort(100.0 * wdiag / wdiag.sum())
    wrow = b.unsort(100.0 * wrow / wrow.sum())
    sizes = {uniq[c]: int(n) for c, n in enumerate(np.bincount(_codes(labels_c)[0]))}
    provenance = {
        "function": "metaalliance.engine.multilevel.three_level",
        "metafor_call": f'rma.mv(yi, vi, random = ~ 1 | cluster/finding, method = "{method}", '
                        f'test = "{test}"' + (", mods = X, intercept = FALSE)" if Xd.shape[1] > 1
                                               or not intercept else ")"),
        "method": method, "test": test, "k": k, "n_clusters": b.n_blocks, "level": lv,
        "data_hash": _data_hash(yi, vi, labels_c), "optimizer": optimizer,
        "versions": _versions(),
    }
    c0 = coefs[0]
    return ThreeLevelResult(
        k=k, n_clusters=b.n_blocks, method=method, test=test, level=lv, measure=measure,
        estimate=c0.estimate, se=c0.se, stat=c0.stat, pvalue=c0.pvalue,
        ci_lower=c0.ci_lower, ci_upper=c0.ci_upper,
        pi_lower=c0.estimate - pi_half, pi_upper=c0.estimate + pi_half, df=df,
        sigma2=(s1, s2), loglik=float(ev.ll), aic=aic, bic=bic, aicc=aicc,
        q=qe, q_df=q_df, q_pvalue=q_p, i2=i2, i2_levels=i2_levels, coefficients=coefs,
        qm=qm, qm_df=qm_df, qm_pvalue=qm_p, vcov=_readonly(vb), yi=_readonly(yi),
        vi=_readonly(vi), cluster=tuple(labels_c), labels=tuple(labels), X=_readonly(Xd),
        weights=_readonly(wdiag), weights_rowsum=_readonly(wrow), cluster_sizes=sizes,
        converged=bool(converged), optimizer=optimizer, iterations=int(iters),
        provenance=provenance,
    )
