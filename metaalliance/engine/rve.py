"""Robust variance estimation (RVE) for dependent effect sizes, as R's robumeta ``robu()``.

Hedges, Tipton & Johnson (2010) weight each study by an approximately efficient working model
and make inference robust to its misspecification with a sandwich estimator over studies;
Tipton (2015) adds the small-sample correction (CR2-type adjustment matrices and Satterthwaite
degrees of freedom) that robumeta applies with ``small = TRUE``.

=================================  ================================================================
metaalliance                       robumeta
=================================  ================================================================
``robu(yi, vi, cluster)``          ``robu(yi ~ 1, studynum = cluster, var.eff.size = vi,
                                   modelweights = "CORR", rho = 0.8, small = TRUE)``
``robu(..., X=X, names=...)``      ``robu(yi ~ x1 + x2, ...)`` (X with its intercept column)
``robu(..., modelweights="HIER")`` ``modelweights = "HIER"`` (tau^2 and omega^2 by moments)
``robu_sensitivity(...)``          ``sensitivity(robu(...))``: the CORR fit at rho = 0, .2, ..., 1
=================================  ================================================================

CORR: weights 1 / (k_j (mean(v_j) + tau^2)), tau^2 by the method of moments of HTJ (2010) with
the assumed within-study correlation rho. HIER: weights 1 / (v_ij + tau^2 + omega^2).
As robumeta, confidence intervals use ``qt(0.975, df)`` (95%); ``level`` changes them.

Computation only: no I/O. Dense (I - H) of size k x k: fine for k in the thousands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from metaalliance.engine.results import robust_dict_tail

from metaalliance.errors import DataError, ModelError
from metaalliance.engine.inference import level_alpha
from metaalliance.engine.clusters import _design, _validate
from metaalliance.engine.results import Coefficient

__all__ = ["MODELWEIGHTS", "DEFAULT_RVE_RHO", "RobuResult", "robu", "robu_sensitivity"]

from metaalliance.options import MODELWEIGHTS  # noqa: E402  (robumeta's CORR, HIER)
#: robumeta's default assumed within-study correlation
DEFAULT_RVE_RHO = 0.8
_EIG_TOL = 1e-10          # robumeta: eigenvalues < 10^-10 get a 0 inverse square root


@dataclass(frozen=True, eq=False)
class RobuResult:
    """An RVE fit. ``estimate`` .. ``ci_upper`` are the first coefficient's; ``coefficients``
    holds all with their ``dfs``. ``tau2`` (and ``omega2`` for HIER) as robumeta's mod_info."""

    modelweights: str
    rho: float | None
    small: bool
    k: int
    n_clusters: int
    level: float
    estimate: float
    se: float
    df: float
    pvalue: float
    ci_lower: float
    ci_upper: float
    tau2: float
    omega2: float | None
    i2: float | None
    coefficients: tuple
    dfs: tuple
    measure: str = "generic"

    def to_dict(self) -> dict:
        d = {"k": self.k, "n_clusters": self.n_clusters, "model": "rve",
             "modelweights": self.modelweights, "rho": self.rho, "small": self.small,
             "estimate": self.estimate, "se": self.se, "df": self.df, "p": self.pvalue,
             "ci_lower": self.ci_lower, "ci_upper": self.ci_upper, "tau2": self.tau2}
        if self.omega2 is not None:
            d["omega2"] = self.omega2
        if self.i2 is not None:
            d["i2"] = self.i2
        return robust_dict_tail(self, d)

    def summary(self) -> str:
        label = {"CORR": "Correlated Effects", "HIER": "Hierarchical Effects"}[self.modelweights]
        lines = [f"RVE: {label} Model" + (" with Small-Sample Corrections" if self.small else "")
                 + f" (k = {self.k} findings in {self.n_clusters} clusters"
                 + (f", rho = {self.rho:g})" if self.rho is not None else ")"),
                 f"tau^2 = {self.tau2:.4f}" + (f", omega^2 = {self.omega2:.4f}"
                                               if self.omega2 is not None else ""),
                 f"{'':14s}{'estimate':>10s}{'se':>9s}{'t':>9s}{'df':>8s}{'p':>9s}"
                 f"{'ci.lb':>9s}{'ci.ub':>9s}"]
        for c, df in zip(self.coefficients, self.dfs):
            lines.append(f"{c.name[:14]:14s}{c.estimate:10.4f}{c.se:9.4f}{c.stat:9.4f}"
                         f"{df:8.2f}{c.pvalue:9.4f}{c.ci_lower:9.4f}{c.ci_upper:9.4f}")
        if self.small:
            lines.append("Note: if df < 4, do not trust the results (robumeta's advice)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class _Data:
    def __init__(self, y, v, X, codes):
        order = np.argsort(codes, kind="stable")   # robumeta sorts by study
        self.order = order
        self.y, self.v, self.X = y[order], v[order], X[order]
        c = codes[order]
        self.starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        self.ends = np.r_[self.starts[1:], len(c)]
        self.N = len(self.starts)
        self.kj = np.diff(np.r_[self.starts, len(c)])
        self.blk = np.repeat(np.arange(self.N), self.kj)
        self.M, self.p = self.X.shape

    def csum(self, a):
        return np.add.reduceat(a, self.starts, axis=0)


def _moments(d: _Data, modelweights, rho):
    """tau^2 (and omega^2) by robumeta's method of moments; returns (r.weights, info)."""
    y, v, X, blk = d.y, d.v, d.X, d.blk
    kj = d.kj[blk].astype(float)
    avg_v = (d.csum(v) / d.kj)[blk]
    w = 1.0 / v if modelweights == "HIER" else 1.0 / (kj * avg_v)
    XW = X * w[:, None]
    sumXWX = X.T @ XW
    Vi = np.linalg.inv(sumXWX)
    b = Vi @ (XW.T @ y)
    e = y - X @ b
    sXW = d.csum(XW)                       # per study: 1'W X (p)
    sumXWJWX = sXW.T @ sXW
    Qe = float(np.sum(w * e * e))
    if modelweights == "CORR":
        # Matrx_WKXX = sum X'(W/k)X ; Matrx_wk_XJX_XX = sum (w/k)(X'JX - X'X)
        wk = w / kj
        WKXX = X.T @ (X * wk[:, None])
        sX = d.csum(X)
        wk_j = (d.csum(wk) / d.kj)          # constant within study
        XJX = (sX * wk_j[:, None]).T @ sX
        XX = X.T @ (X * wk[:, None])
        termB_mat = XJX - XX
        sumW = float(np.sum(w))
        denom = sumW - np.sum(Vi * sumXWJWX.T)
        termA = float(np.sum(Vi * WKXX.T))
        termB = float(np.sum(Vi * termB_mat.T))
        term1 = (Qe - d.N + termA) / denom
        term2 = termB / denom
        tau2 = max(term1 + rho * term2, 0.0)
        df = d.N - termA - rho * termB
        i2 = max((Qe - df) / Qe * 100.0, 0.0)
        rw = 1.0 / (kj * (avg_v + tau2))
        return rw, {"tau2": tau2, "omega2": None, "i2": i2, "term1": term1, "term2": term2}
    # HIER
    sumV = float(np.sum(v))
    sumW = float(np.sum(w))
    e_j = d.csum(e)
    Qa = float(np.sum(e_j ** 2))
    sX = d.csum(X)                                 # 1'X per study
    kk = d.kj.astype(float)
    tr_sumJJ = float(np.sum(kk ** 2))
    sumXJX = sX.T @ sX
    sumXWJJX = sXW.T @ (sX * kk[:, None])          # X'W J J X = (1'WX)' k (1'X)
    sumXJJWX = sumXWJJX.T
    sumXWWX = X.T @ (X * (w * w)[:, None])
    sumXJWX = sX.T @ sXW
    sumXWJX = sumXJWX.T
    A1 = tr_sumJJ - np.sum(Vi * sumXJJWX.T) - np.sum(Vi * sumXWJJX.T) \
        + np.sum((Vi @ sumXJX @ Vi) * sumXWJWX.T)
    B1 = d.M - np.sum(Vi * sumXWJX.T) - np.sum(Vi * sumXJWX.T) \
        + np.sum((Vi @ sumXJX @ Vi) * sumXWWX.T)
    C1 = sumV - np.sum(Vi * sumXJX.T)
    A2 = sumW - np.sum(Vi * sumXWJWX.T)
    B2 = sumW - np.sum(Vi * sumXWWX.T)
    C2 = d.M - d.p
    omega1 = ((Qa - C1) * A2 - (Qe - C2) * A1) / (B1 * A2 - B2 * A1)
    omega2 = max(omega1, 0.0)
    tau1 = (Qe - C2) / A2 - omega2 * (B2 / A2)
    tau2 = max(tau1, 0.0)
    rw = 1.0 / (v + tau2 + omega2)
    return rw, {"tau2": tau2, "omega2": omega2, "i2": None}


def _inv_sqrt_sym(m):
    vals, vecs = np.linalg.eigh(0.5 * (m + m.T))
    ivs = np.zeros_like(vals)
    ok = vals >= _EIG_TOL
    ivs[ok] = 1.0 / np.sqrt(vals[ok])
    return (vecs * ivs) @ vecs.T


def _robust(d: _Data, rw, modelweights, small):
    """robumeta's estimate, robust covariance and df for given weights r.weights."""
    X, y = d.X, d.y
    N, M, p = d.N, d.M, d.p
    XW = X * rw[:, None]
    Q = np.linalg.inv(X.T @ XW)
    b = Q @ (XW.T @ y)
    e = y - X @ b
    if not small:
        meat = np.zeros((p, p))
        u = d.csum(XW * e[:, None])               # X_j' W_j e_j
        meat = u.T @ u
        V = Q @ meat @ Q * (N / (N - p))
        return b, V, np.full(p, float(N - p))
    ImH = np.eye(M) - (X @ Q) @ XW.T              # I - X Q X' W
    meat = np.zeros((p, p))
    gi = np.zeros((p, M, N))
    for j, (s, t) in enumerate(zip(d.starts, d.ends)):
        Xj, wj, ej = X[s:t], rw[s:t], e[s:t]
        ImHjj = ImH[s:t, s:t]
        if modelweights == "HIER":
            E = 1.0 / wj                               # working variance diag(1/r.weights)
            inside = np.sqrt(E)[:, None] * ImHjj * (E ** 1.5)[None, :]
            A = np.sqrt(E)[:, None] * _inv_sqrt_sym(inside) * np.sqrt(E)[None, :]
        else:
            A = _inv_sqrt_sym(ImHjj)
        AWX = A @ (Xj * wj[:, None])                   # A W X_j (k_j x p)
        u = AWX.T @ ej                                 # X'W A e
        meat += np.outer(u, u)
        gtmp = ImH[s:t, :].T @ AWX @ Q                 # M x p
        gi[:, :, j] = gtmp.T
    V = Q @ meat @ Q
    dfs = np.empty(p)
    scale = 1.0 / np.sqrt(rw)
    for i in range(p):
        Bh = gi[i] * scale[:, None]                    # M x N
        G = Bh.T @ Bh                                  # N x N: same nonzero spectrum as Bh Bh'
        dfs[i] = np.trace(G) ** 2 / np.sum(G * G)
    return b, V, dfs


def _prepare(yi, vi, cluster, X, names, who):
    y, v, labels, codes, uniq = _validate(yi, vi, cluster, who)
    Xd, nm, intercept = _design(X, len(y), names, who)
    if names is None:
        nm = ("intrcpt",) + tuple(nm[1:]) if intercept else nm
    d = _Data(y, v, Xd, codes)
    if d.N <= d.p:
        raise ModelError(f"{who}: the number of clusters ({d.N}) must be larger than the number "
                         f"of coefficients ({d.p})")
    return d, nm


def _result(d, nm, b, V, dfs, info, modelweights, rho, small, level, measure):
    from metaalliance.engine import distributions as stats

    lv, alpha = level_alpha(level)
    se = np.sqrt(np.maximum(np.diag(V), 0.0))
    if not np.all(se > 0):
        raise ModelError("robu: the robust variance is 0 (all residuals are 0)")
    t = b / se
    pval = 2.0 * stats.t.sf(np.abs(t), dfs)
    crit = stats.t.isf(alpha / 2, dfs)
    coefs = tuple(Coefficient(nm[j], float(b[j]), float(se[j]), float(t[j]), float(pval[j]),
                              float(b[j] - crit[j] * se[j]), float(b[j] + crit[j] * se[j]))
                  for j in range(d.p))
    c0 = coefs[0]
    return RobuResult(modelweights=modelweights, rho=rho if modelweights == "CORR" else None,
                      small=bool(small), k=d.M, n_clusters=d.N, level=lv,
                      estimate=c0.estimate, se=c0.se, df=float(dfs[0]), pvalue=c0.pvalue,
                      ci_lower=c0.ci_lower, ci_upper=c0.ci_upper, tau2=float(info["tau2"]),
                      omega2=None if info["omega2"] is None else float(info["omega2"]),
                      i2=None if info["i2"] is None else float(info["i2"]),
                      coefficients=coefs, dfs=tuple(float(x) for x in dfs), measure=measure)


def _check(modelweights, rho):
    if modelweights not in MODELWEIGHTS:
        raise DataError(f"robu: modelweights must be one of {', '.join(MODELWEIGHTS)} "
                        f"(got {modelweights!r})")
    try:
        rho = float(rho)
    except (TypeError, ValueError):
        raise DataError(f"robu: rho must be a number between 0 and 1 (got {rho!r})") from None
    if not (0.0 <= rho <= 1.0):
        raise DataError(f"robu: rho must be between 0 and 1 (got {rho:g})")
    return rho


def robu(yi, vi, cluster, X=None, names=None, modelweights: str = "CORR",
         rho=DEFAULT_RVE_RHO, small: bool = True, level=95,
         measure: str = "generic") -> RobuResult:
    """Robust variance estimation, as ``robumeta::robu()``.

    Parameters
    ----------
    yi, vi : effect sizes and sampling variances; cluster : study label per row.
    X, names : optional design matrix (intercept column first) and its column names.
    modelweights : "CORR" (correlated effects, default) or "HIER" (hierarchical effects).
    rho : assumed within-study correlation for CORR (0..1; robumeta's default 0.8).
    small : Tipton's (2015) small-sample corrections (default True, as robumeta).

    Examples
    --------
    >>> r = robu([0.1, 0.3, 0.2, 0.5, 0.4, 0.35], [0.01, 0.02, 0.015, 0.01, 0.02, 0.03],
    ...          ["a", "a", "b", "b", "c", "c"])
    >>> r.k, r.n_clusters, r.modelweights
    (6, 3, 'CORR')
    """
    rho = _check(modelweights, rho)
    d, nm = _prepare(yi, vi, cluster, X, names, "robu")
    rw, info = _moments(d, modelweights, rho)
    b, V, dfs = _robust(d, rw, modelweights, small)
    return _result(d, nm, b, V, dfs, info, modelweights, rho, small, level, measure)


def robu_sensitivity(yi, vi, cluster, X=None, names=None, rhos=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
                     small: bool = True, level=95, measure: str = "generic") -> tuple:
    """The CORR model over a grid of rho, as robumeta's ``sensitivity()`` (a tuple of
    RobuResult, one per rho; tau^2 = term1 + rho * term2 truncated at 0)."""
    d, nm = _prepare(yi, vi, cluster, X, names, "robu")
    out = []
    for r in rhos:
        r = _check("CORR", r)
        rw, info = _moments(d, "CORR", r)
        b, V, dfs = _robust(d, rw, "CORR", small)
        out.append(_result(d, nm, b, V, dfs, info, "CORR", r, small, level, measure))
    return tuple(out)
